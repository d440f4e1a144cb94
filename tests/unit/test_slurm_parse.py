"""vcluster.slurm.parse against the output of every supported Slurm release (tests/unit/data/slurm).

Each release has a directory (README.md there says which are real captures
and which are written from SchedMD's schemas). The scenario is the same in
all of them (``python -m tests.harness.capture_slurm``): nodes vn1
(allocated), vn2 (its job suspended), vn3 (drained), vn4 (down, not
responding), vn5 (mixed), vn6 (draining), vn7 (future, made by scontrol
create), vn8-vn9 (one two-node job), and from 23.02 on two powered-down
cloud nodes cl1-cl2; jobs in meta.json.
"""

import json
import pathlib

import pytest

from vcluster.errors import SlurmError
from vcluster.slurm import parse, versions

DATA = pathlib.Path(__file__).parent / "data" / "slurm"
RELEASES = list(versions.RELEASES)
CAPTURED = ("22.05", "24.11")


def read(release, name):
    return (DATA / release / name).read_text(encoding="utf-8")


def meta(release):
    return json.loads(read(release, "meta.json"))


COMMON_NODE_STATES = {
    "vn1": ["ALLOCATED"],
    "vn3": ["IDLE", "DRAIN"],
    "vn4": ["DOWN", "NOT_RESPONDING"],
    "vn5": ["MIXED"],
    "vn6": ["ALLOCATED", "DRAIN"],
    "vn8": ["ALLOCATED"],
    "vn9": ["ALLOCATED"],
}


def expected_node_states(release):
    """22.05 shows the node of a suspended job IDLE, 24.11 MIXED (the job keeps its memory)."""
    if release == "22.05":
        return {**COMMON_NODE_STATES, "vn2": ["IDLE"]}
    cloud = ["IDLE", "CLOUD", "POWERED_DOWN"]
    return {**COMMON_NODE_STATES, "vn2": ["MIXED"], "cl1": cloud, "cl2": cloud}


def by_name(items):
    return {i.name: i for i in items}


@pytest.fixture(params=RELEASES)
def release(request):
    return request.param


def test_every_release_has_fixtures_with_its_version(release):
    info = meta(release)
    assert versions.release(info["version"]).series == release
    assert versions.release(read(release, "scontrol_version.txt")).series == release
    assert info["source"] == ("captured" if release in CAPTURED else "written-from-schema")
    assert versions.RELEASES[release].tested == ("captured" if release in CAPTURED else "schema")


def test_json_names_its_release(release):
    for name in ("squeue.json", "sinfo.json", "squeue_empty.json", "sinfo_empty.json"):
        data = json.loads(read(release, name))
        found = versions.detect_json(data)
        assert found is versions.RELEASES[release], name
        plugin = data["meta"].get("plugin") or data["meta"].get("plugins")
        named = plugin.get("data_parser") or plugin.get("type")  # 22.05: type openapi/v0.0.38
        assert named.endswith(found.data_parser), (name, named)


# -- scontrol show -o node ------------------------------------------------------

@pytest.fixture
def nodes(release):
    return by_name(parse.nodes_from_scontrol(read(release, "scontrol_show_node.txt"), release))


def test_scontrol_nodes_states(release, nodes):
    assert {n: v.state for n, v in nodes.items()} == expected_node_states(release)


def test_scontrol_hides_future_nodes_without_F(nodes):
    assert "vn7" not in nodes


def test_scontrol_node_fields(release, nodes):
    vn5 = nodes["vn5"]
    assert (vn5.cpus, vn5.cpus_alloc, vn5.memory, vn5.memory_alloc) == (2, 1, 1000, 100)
    assert vn5.features == ["virtual", "htc"] == vn5.active_features
    assert vn5.partitions == ["batch", "htc"]
    assert vn5.addr.count(".") == 3 and vn5.hostname == "vn5"
    assert vn5.dynamic is True and vn5.version == meta(release)["version"].split()[-1]
    assert vn5.gres == "" and vn5.reason == ""


def test_scontrol_cloud_nodes(release, nodes):
    if release == "22.05":
        pytest.skip("the 22.05 capture has no cloud nodes")
    cl1 = nodes["cl1"]
    assert not cl1.dynamic and cl1.version == "" and cl1.addr == "cl1"
    assert cl1.is_in("POWERED_DOWN") and not cl1.is_in("IDLE")


def test_scontrol_node_reason_without_stamp(nodes):
    assert (nodes["vn3"].reason, nodes["vn3"].reason_user) == ("vcluster retire", "root")
    assert nodes["vn4"].reason == "hypervisor lost"
    assert nodes["vn6"].reason == "maintenance window"


def test_scontrol_future_node(release):
    future = by_name(parse.nodes_from_scontrol(read(release, "scontrol_show_node_future.txt"), release))
    vn7 = future["vn7"]
    assert vn7.state == ["FUTURE"] and vn7.dynamic
    assert (vn7.cpus, vn7.memory, vn7.features) == (1, 400, ["virtual", "pre"])
    assert vn7.version == ""  # never registered
    assert set(future) == set(expected_node_states(release)) | {"vn7"}


@pytest.mark.parametrize("release", CAPTURED)
def test_scontrol_one_node(release):
    (vn3,) = parse.nodes_from_scontrol(read(release, "scontrol_show_node_vn3.txt"))
    assert vn3.name == "vn3" and vn3.state == ["IDLE", "DRAIN"]


@pytest.mark.parametrize("release", CAPTURED)
def test_scontrol_no_dynamic_nodes_yet(release):
    names = [n.name for n in parse.nodes_from_scontrol(read(release, "scontrol_show_node_empty.txt"))]
    assert names == ([] if release == "22.05" else ["cl1", "cl2"])


def test_node_to_dict(nodes):
    d = nodes["vn3"].to_dict()
    assert d["name"] == "vn3" and d["state"] == ["IDLE", "DRAIN"] and d["reason"] == "vcluster retire"
    json.dumps(d)


def test_node_is_in(nodes):
    assert nodes["vn3"].is_in("DRAINED") and not nodes["vn3"].is_in("IDLE")
    assert nodes["vn6"].is_in(["DRAINING"])


# -- sinfo --json ----------------------------------------------------------------

def test_sinfo_json_agrees_with_scontrol(release, nodes):
    sinfo = by_name(parse.nodes_from_sinfo_json(read(release, "sinfo.json"), release))
    assert {n: v.state for n, v in sinfo.items()} == expected_node_states(release)
    for name, node in sinfo.items():
        other = nodes[name]
        assert (node.partitions, node.dynamic) == (other.partitions, other.dynamic), name
        if release == "22.05" or node.features:  # a node's own record (or a one-node group)
            assert (node.features, node.reason, node.cpus, node.memory) == (
                other.features, other.reason, other.cpus, other.memory), name
        if release == "22.05":
            assert node.addr == other.addr
        else:
            assert node.addr == ""  # sinfo prints no addresses here


def test_sinfo_groups_merge_partitions(release):
    if versions.RELEASES[release].sinfo_key != "sinfo":
        pytest.skip("22.05 prints one record per node")
    data = json.loads(read(release, "sinfo.json"))
    assert "nodes" not in data and sum("vn1" in g["nodes"]["nodes"] for g in data["sinfo"]) == 2
    sinfo = by_name(parse.nodes_from_sinfo_json(read(release, "sinfo.json"), release))
    assert sinfo["vn1"].partitions == ["batch", "htc"] and sinfo["vn8"].partitions == ["batch", "big"]
    # vn1 (htc) shares a group with vn8-vn9 (mpi) whose features are vn1's:
    # a group's values are only taken for a one-node group
    group = next(g for g in data["sinfo"] if g["nodes"]["nodes"] == ["vn1", "vn8", "vn9"])
    assert group["features"]["total"] == "virtual,htc"
    assert (sinfo["vn8"].features, sinfo["vn8"].cpus, sinfo["vn8"].reason) == ([], 0, "")
    assert (sinfo["vn6"].cpus, sinfo["vn6"].cpus_alloc, sinfo["vn6"].memory_alloc) == (1, 1, 100)
    assert (sinfo["vn6"].features, sinfo["vn6"].reason) == (["virtual"], "maintenance window")


def test_sinfo_json_empty(release):
    """No dynamic node yet: 22.05 lists nothing, later releases the cloud nodes (and empty partitions)."""
    names = {n.name for n in parse.nodes_from_sinfo_json(read(release, "sinfo_empty.json"), release)}
    assert names == (set() if release == "22.05" else {"cl1", "cl2"})


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

#: jobs squeue --json lists: every one before 24.05, no finished ones from 24.05 (its filters apply)
def listed(release, source):
    if source == "squeue.json" and versions.RELEASES[release].squeue_json_filters:
        return {k: v for k, v in EXPECTED_JOBS.items() if k not in ("completed", "failed")}
    return EXPECTED_JOBS


@pytest.mark.parametrize("source, parser", [
    ("squeue.json", parse.jobs_from_squeue_json),
    ("scontrol_show_job.txt", parse.jobs_from_scontrol),
])
def test_jobs(release, source, parser):
    ids = meta(release)["jobs"]
    jobs = {j.id: j for j in parser(read(release, source), release)}
    expected = listed(release, source)
    assert set(jobs) == {ids[k] for k in expected}
    for key, (state, on) in expected.items():
        job = jobs[ids[key]]
        assert (job.state, job.nodes, job.user) == (state, on, "root"), key
    assert jobs[ids["held"]].reason == "JobHeldUser" and jobs[ids["held"]].priority == 0
    assert jobs[ids["held"]].comment == "vcluster-own:htc" and jobs[ids["held"]].node_count == 1
    assert jobs[ids["pending"]].reason == "Resources"
    if "failed" in expected:
        assert jobs[ids["failed"]].reason == "NonZeroExitCode"
    assert jobs[ids["running"]].reason == ""
    assert jobs[ids["running"]].name == "run-htc" and jobs[ids["running"]].partition == "batch"
    assert jobs[ids["running"]].priority > 0
    assert jobs[ids["multi"]].cpus == 2 and jobs[ids["multi"]].node_count == 2
    array = jobs[ids["array"]]
    assert (array.array_job_id, array.array_tasks, array.partition) == (ids["array"], "1-3", "htc")


def test_squeue_and_scontrol_agree(release):
    a = {j.id: j.to_dict() for j in parse.jobs_from_squeue_json(read(release, "squeue.json"), release)}
    b = {j.id: j.to_dict() for j in parse.jobs_from_scontrol(read(release, "scontrol_show_job.txt"), release)}
    assert a == {k: v for k, v in b.items() if k in a}


def test_squeue_states_filter(release):
    """``squeue --json --states=PENDING`` filters from 24.05 only."""
    jobs = parse.jobs_from_squeue_json(read(release, "squeue_pending.json"), release) if release != "22.05" else []
    if release == "22.05":
        pytest.skip("the 22.05 capture has no filtered listing (22.05 ignores the filters)")
    states = {j.state for j in jobs}
    if versions.RELEASES[release].squeue_json_filters:
        assert states == {"PENDING"}
    else:
        assert {"PENDING", "RUNNING", "COMPLETED"} <= states


def test_job_state_shape_follows_the_release(release):
    """From 23.11 job_state is a list; a release's parser refuses the other shape."""
    data = json.loads(read(release, "squeue.json"))
    first = data["jobs"][0]["job_state"]
    assert isinstance(first, list) == versions.RELEASES[release].job_state_list
    assert isinstance(data["jobs"][0]["priority"], dict) == versions.RELEASES[release].number_objects
    other = "24.11" if not versions.RELEASES[release].job_state_list else "23.02"
    with pytest.raises(SlurmError, match=f"printed Slurm {release} output, but the controller's Slurm is {other}"):
        parse.jobs_from_squeue_json(read(release, "squeue.json"), other)
    data.pop("meta")  # without its meta the shape check alone must refuse it
    with pytest.raises(SlurmError, match=f"but Slurm {other} prints"):
        parse.jobs_from_squeue_json(json.dumps(data), other)


@pytest.mark.parametrize("release", CAPTURED)
def test_one_job(release):
    (job,) = parse.jobs_from_scontrol(read(release, "scontrol_show_job_running.txt"))
    assert job.id == meta(release)["jobs"]["running"] and job.state == "RUNNING"


def test_no_jobs(release):
    if release in CAPTURED:
        assert parse.jobs_from_scontrol(read(release, "scontrol_show_job_empty.txt")) == []
    assert parse.jobs_from_squeue_json(read(release, "squeue_empty.json"), release) == []


@pytest.mark.parametrize("words, state", [
    (["RUNNING"], "RUNNING"),
    (["CANCELLED", "COMPLETING"], "COMPLETING"),
    (["PENDING", "REQUEUED"], "REQUEUED"),
    (["RUNNING", "CONFIGURING", "POWER_UP_NODE"], "CONFIGURING"),
    (["PENDING", "REQUEUE_HOLD"], "REQUEUE_HOLD"),
    ("suspended", "SUSPENDED"),
])
def test_job_state_list_to_word(words, state):
    doc = {"jobs": [{"job_id": 1, "job_state": words}]}
    release = "24.11" if isinstance(words, list) else "22.05"
    (job,) = parse.jobs_from_squeue_json(json.dumps(doc), release)
    assert job.state == state


# -- partitions ---------------------------------------------------------------------

def test_partitions(release):
    parts = by_name(parse.partitions_from_scontrol(read(release, "scontrol_show_partition.txt"), release))
    assert set(parts) == {"batch", "htc", "big"}
    assert parts["batch"].default and parts["batch"].state == "UP"
    cloud = [] if release == "22.05" else ["cl1", "cl2"]
    assert parts["batch"].nodes == cloud + [f"vn{i}" for i in range(1, 10)]
    assert parts["htc"].nodesets == ["htcset"] and parts["htc"].nodes == ["vn1", "vn2", "vn5"]
    assert parts["htc"].max_time == "1-00:00:00" and not parts["htc"].default
    assert parts["big"].state == "DOWN" and parts["big"].max_time == "01:00:00"
    assert (parts["big"].total_cpus, parts["big"].total_nodes) == (2, 2)


# -- numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (5, 5), ("5", 5), (None, 0), ("N/A", 0), ("1-1", 1),
    ({"set": True, "infinite": False, "number": 7}, 7),
    ({"set": False, "infinite": False, "number": 0}, 0),
    ({"set": False, "infinite": True, "number": 0}, 0),
])
def test_numbers_of_every_shape(value, expected):
    assert parse._int(value, "x") == expected  # noqa: SLF001


@pytest.mark.parametrize("value", [{"number": 3}, {"set": True}, True, "many"])
def test_numbers_garbage(value):
    with pytest.raises(SlurmError, match="x should be a number"):
        parse._int(value, "x")  # noqa: SLF001


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
    ("[]", "JSON is not an object"),
    ('{"jobs": {}}', "has no 'jobs' list"),
    ('{"jobs": [], "errors": [{"error": "Unable to contact slurm controller"}]}',
     "reported an error: Unable to contact slurm controller"),
    ('{"jobs": [{"name": "x"}]}', "entry without 'job_id'"),
    ('{"jobs": [{"job_id": "x", "job_state": "RUNNING"}]}', "job_id should be a number"),
    ('{"jobs": [{"job_id": 1, "job_state": []}]}', "empty job_state"),
    ('{"jobs": [], "meta": {"slurm": {"release": "21.08.8"}}}', "Slurm 21.08.8 is not supported"),
    ('{"jobs": [], "meta": {"slurm": {"release": "banana"}}}', "cannot read a Slurm version"),
])
def test_squeue_garbage(text, message):
    with pytest.raises(SlurmError, match=message):
        parse.jobs_from_squeue_json(text)


@pytest.mark.parametrize("text, message", [
    ('{"nodes": [{"name": "vn1"}]}', "entry without 'state'"),
    ('{"sinfo": [{"nodes": {"nodes": ["vn1"]}}]}', "entry without 'node'"),
    ('{"sinfo": [{"nodes": {"nodes": ["vn1"]}, "node": {"state": ["IDLE"]}, "cpus": 1}]}',
     "'cpus' that is not an object"),
])
def test_sinfo_garbage(text, message):
    with pytest.raises(SlurmError, match=message):
        parse.nodes_from_sinfo_json(text)


def test_sinfo_key_follows_the_release():
    with pytest.raises(SlurmError, match="sinfo --json JSON has no 'sinfo' list"):
        parse.nodes_from_sinfo_json(read("22.05", "sinfo.json").replace('"Slurm"', '"x"'), "24.11")
