"""vcluster.slurm.parse against real Slurm 22.05.8 output (tests/unit/data/slurm).

The captures come from ``python -m tests.harness.capture_slurm``: nodes vn1
(allocated), vn2 (idle, its job suspended), vn3 (drained), vn4 (down, not
responding), vn5 (mixed), vn6 (draining), vn7 (future, made by scontrol
create), vn8-vn9 (one two-node job); jobs in meta.json.
"""

import json
import pathlib

import pytest

from vcluster.errors import SlurmError
from vcluster.slurm import parse

DATA = pathlib.Path(__file__).parent / "data" / "slurm"


def read(name):
    return (DATA / name).read_text(encoding="utf-8")


META = json.loads(read("meta.json"))
JOBS = META["jobs"]

EXPECTED_NODE_STATES = {
    "vn1": ["ALLOCATED"],
    "vn2": ["IDLE"],
    "vn3": ["IDLE", "DRAIN"],
    "vn4": ["DOWN", "NOT_RESPONDING"],
    "vn5": ["MIXED"],
    "vn6": ["ALLOCATED", "DRAIN"],
    "vn8": ["ALLOCATED"],
    "vn9": ["ALLOCATED"],
}


def by_name(items):
    return {i.name: i for i in items}


def test_captures_are_slurm_22_05():
    assert META["version"] == "slurm-wlm 22.05.8"


# -- scontrol show -o node ------------------------------------------------------

@pytest.fixture(scope="module")
def nodes():
    return by_name(parse.nodes_from_scontrol(read("scontrol_show_node.txt")))


def test_scontrol_nodes_states(nodes):
    assert {n: v.state for n, v in nodes.items()} == EXPECTED_NODE_STATES


def test_scontrol_hides_future_nodes_without_F(nodes):
    assert "vn7" not in nodes


def test_scontrol_node_fields(nodes):
    vn5 = nodes["vn5"]
    assert (vn5.cpus, vn5.cpus_alloc, vn5.memory, vn5.memory_alloc) == (2, 1, 1000, 100)
    assert vn5.features == ["virtual", "htc"] == vn5.active_features
    assert vn5.partitions == ["batch", "htc"]
    assert vn5.addr.count(".") == 3 and vn5.hostname == "vn5"
    assert vn5.dynamic is True and vn5.version == "22.05.8"
    assert vn5.gres == "" and vn5.reason == ""


def test_scontrol_node_reason_without_stamp(nodes):
    assert (nodes["vn3"].reason, nodes["vn3"].reason_user) == ("vcluster retire", "root")
    assert nodes["vn4"].reason == "hypervisor lost"
    assert nodes["vn6"].reason == "maintenance window"


def test_scontrol_future_node():
    future = by_name(parse.nodes_from_scontrol(read("scontrol_show_node_future.txt")))
    vn7 = future["vn7"]
    assert vn7.state == ["FUTURE"] and vn7.dynamic
    assert (vn7.cpus, vn7.memory, vn7.features) == (1, 400, ["virtual", "pre"])
    assert vn7.version == ""  # never registered
    assert set(future) == set(EXPECTED_NODE_STATES) | {"vn7"}


def test_scontrol_one_node():
    (vn3,) = parse.nodes_from_scontrol(read("scontrol_show_node_vn3.txt"))
    assert vn3.name == "vn3" and vn3.state == ["IDLE", "DRAIN"]


def test_scontrol_no_nodes():
    assert parse.nodes_from_scontrol(read("scontrol_show_node_empty.txt")) == []


def test_node_to_dict(nodes):
    d = nodes["vn3"].to_dict()
    assert d["name"] == "vn3" and d["state"] == ["IDLE", "DRAIN"] and d["reason"] == "vcluster retire"
    json.dumps(d)


def test_node_is_in(nodes):
    assert nodes["vn3"].is_in("DRAINED") and not nodes["vn3"].is_in("IDLE")
    assert nodes["vn6"].is_in(["DRAINING"])


# -- sinfo --json ----------------------------------------------------------------

def test_sinfo_json_agrees_with_scontrol(nodes):
    sinfo = by_name(parse.nodes_from_sinfo_json(read("sinfo.json")))
    assert {n: v.state for n, v in sinfo.items()} == EXPECTED_NODE_STATES
    for name, node in sinfo.items():
        other = nodes[name]
        assert (node.addr, node.cpus, node.memory, node.features, node.partitions, node.reason) == (
            other.addr, other.cpus, other.memory, other.features, other.partitions, other.reason)
        assert node.dynamic


def test_sinfo_json_empty():
    assert parse.nodes_from_sinfo_json(read("sinfo_empty.json")) == []


# -- jobs ---------------------------------------------------------------------------

EXPECTED_JOBS = {
    "running": ("RUNNING", ["vn1"]),
    "mixed": ("RUNNING", ["vn5"]),
    "draining": ("RUNNING", ["vn6"]),
    "multi": ("RUNNING", ["vn8", "vn9"]),
    "suspended": ("SUSPENDED", ["vn2"]),
    "completed": ("COMPLETED", ["vn3"]),
    "failed": ("FAILED", ["vn3"]),
    "pending": ("PENDING", []),
    "held": ("PENDING", []),
    "array": ("PENDING", []),
}


@pytest.mark.parametrize("source, parser", [
    ("squeue.json", parse.jobs_from_squeue_json),
    ("scontrol_show_job.txt", parse.jobs_from_scontrol),
])
def test_jobs(source, parser):
    jobs = {j.id: j for j in parser(read(source))}
    assert len(jobs) == len(JOBS)
    for key, (state, on) in EXPECTED_JOBS.items():
        job = jobs[JOBS[key]]
        assert (job.state, job.nodes, job.user) == (state, on, "root"), key
    assert jobs[JOBS["held"]].reason == "JobHeldUser" and jobs[JOBS["held"]].priority == 0
    assert jobs[JOBS["pending"]].reason == "Resources"
    assert jobs[JOBS["failed"]].reason == "NonZeroExitCode"
    assert jobs[JOBS["running"]].reason == ""
    assert jobs[JOBS["running"]].name == "run-htc" and jobs[JOBS["running"]].partition == "batch"
    assert jobs[JOBS["running"]].priority > 0
    assert jobs[JOBS["multi"]].cpus == 2
    array = jobs[JOBS["array"]]
    assert (array.array_job_id, array.array_tasks, array.partition) == (JOBS["array"], "1-3", "htc")


def test_squeue_and_scontrol_agree():
    a = [j.to_dict() for j in parse.jobs_from_squeue_json(read("squeue.json"))]
    b = [j.to_dict() for j in parse.jobs_from_scontrol(read("scontrol_show_job.txt"))]
    assert sorted(a, key=lambda j: j["id"]) == sorted(b, key=lambda j: j["id"])


def test_one_job():
    (job,) = parse.jobs_from_scontrol(read("scontrol_show_job_running.txt"))
    assert job.id == JOBS["running"] and job.state == "RUNNING"


def test_no_jobs():
    assert parse.jobs_from_scontrol(read("scontrol_show_job_empty.txt")) == []
    assert parse.jobs_from_squeue_json(read("squeue_empty.json")) == []


# -- partitions ---------------------------------------------------------------------

def test_partitions():
    parts = by_name(parse.partitions_from_scontrol(read("scontrol_show_partition.txt")))
    assert set(parts) == {"batch", "htc", "big"}
    assert parts["batch"].default and parts["batch"].state == "UP"
    assert parts["batch"].nodes == [f"vn{i}" for i in range(1, 10)]
    assert parts["htc"].nodesets == ["htcset"] and parts["htc"].nodes == ["vn1", "vn2", "vn5"]
    assert parts["htc"].max_time == "1-00:00:00" and not parts["htc"].default
    assert parts["big"].state == "DOWN" and parts["big"].max_time == "01:00:00"
    assert (parts["big"].total_cpus, parts["big"].total_nodes) == (2, 2)


# -- records and garbage ----------------------------------------------------------------

def test_record_values_keep_spaces():
    rec = parse.parse_record("NodeName=a OS=Linux 6.1 #1 SMP  RealMemory=5 Reason=a b [root@2024-01-01T00:00:00]")
    assert rec == {"NodeName": "a", "OS": "Linux 6.1 #1 SMP", "RealMemory": "5",
                   "Reason": "a b [root@2024-01-01T00:00:00]"}


def test_record_odd_keys():
    rec = parse.parse_record("JobId=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=1M Power=")
    assert rec["CPUs/Task"] == "1" and rec["ReqB:S:C:T"] == "0:0:*:*"
    assert rec["TRES"] == "cpu=1,mem=1M" and rec["Power"] == ""


@pytest.mark.parametrize("text, message", [
    ("garbage here", "not Key=Value records"),
    ("JobId=1 JobState=RUNNING", "expected a NodeName= record"),
    ("NodeName=x CPUTot=1", "node x has no State"),
    ("NodeName=x State=IDLE CPUTot=many", "x CPUTot should be a number, got 'many'"),
    ("slurm_load_node error: Unable to contact slurm controller", "not Key=Value records"),
])
def test_scontrol_garbage(text, message):
    with pytest.raises(SlurmError, match=message):
        parse.nodes_from_scontrol(text)


def test_job_garbage():
    with pytest.raises(SlurmError, match="job 3 has no JobState"):
        parse.jobs_from_scontrol("JobId=3 JobName=x")


@pytest.mark.parametrize("text, message", [
    ("", "did not print JSON"),
    ("<html>", "did not print JSON"),
    ("[]", "has no 'jobs' list"),
    ('{"jobs": {}}', "has no 'jobs' list"),
    ('{"jobs": [], "errors": [{"error": "Unable to contact slurm controller"}]}',
     "reported an error: Unable to contact slurm controller"),
    ('{"jobs": [{"name": "x"}]}', "entry without 'job_id'"),
    ('{"jobs": [{"job_id": "x", "job_state": "RUNNING"}]}', "job_id should be a number"),
])
def test_squeue_garbage(text, message):
    with pytest.raises(SlurmError, match=message):
        parse.jobs_from_squeue_json(text)


def test_sinfo_garbage():
    with pytest.raises(SlurmError, match="entry without 'state'"):
        parse.nodes_from_sinfo_json('{"nodes": [{"name": "vn1"}]}')
