"""vcluster.slurm.client.Slurm with a recorded command runner.

Every test runs against the real outputs of Slurm 22.05 and of 24.11
(tests/unit/data/slurm/<release>/), including what ``scontrol --version``
printed there. The runner stands in for the commands because the unit tests
run without a controller; tests/functional/test_slurm_version.py drives a
real one.
"""

import json
import pathlib
import re

import pytest

from vcluster.errors import SlurmError
from vcluster.slurm import hostlist, jobctl, parse, versions
from vcluster.slurm.client import Slurm

DATA = pathlib.Path(__file__).parent / "data" / "slurm"
CAPTURED = ("22.05", "24.11")
RELEASE = {"name": CAPTURED[0]}
VERSION = ("scontrol", "--version")


@pytest.fixture(autouse=True, params=CAPTURED)
def release(request):
    """Runs each test once per captured release."""
    RELEASE["name"] = request.param
    return request.param


def read(name, release=None):
    return (DATA / (release or RELEASE["name"]) / name).read_text(encoding="utf-8")


class Runner:
    """Answers commands from a {tuple(argv): (rc, out, err)} table and records calls.

    ``scontrol --version`` is answered with the release's recorded output
    unless the table says otherwise, and counted in ``version_calls``
    rather than in ``calls``.
    """

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.answers.setdefault(VERSION, (0, read("scontrol_version.txt"), ""))
        self.calls = []
        self.version_calls = 0

    def __call__(self, argv, env, timeout, stdin=None):
        if tuple(argv) == VERSION:
            self.version_calls += 1
        else:
            self.calls.append((argv, env.get("SLURM_CONF"), stdin))
        key = tuple(argv)
        if key not in self.answers:
            raise AssertionError(f"unexpected command {argv}")
        answer = self.answers[key]
        return answer.pop(0) if isinstance(answer, list) else answer


def recorded(key):
    e = json.loads(read("errors.json"))[key]
    return e["rc"], e["stdout"], e["stderr"]


SHOW_NODES = ("scontrol", "-F", "show", "-o", "node")


def test_nodes_and_conf_env():
    runner = Runner({SHOW_NODES: (0, read("scontrol_show_node_future.txt"), "")})
    slurm = Slurm(conf="/tmp/x/slurm.conf", runner=runner)
    assert len(slurm.nodes()) == (9 if RELEASE["name"] == "22.05" else 11)  # + cl1, cl2
    assert runner.calls[0][1] == "/tmp/x/slurm.conf"


def test_node_unknown_is_none():
    runner = Runner({SHOW_NODES + ("nosuch",): recorded("show_node_unknown")})
    assert Slurm(runner=runner).node("nosuch") is None


def test_node_known():
    runner = Runner({SHOW_NODES + ("vn3",): (0, read("scontrol_show_node_vn3.txt"), "")})
    assert Slurm(runner=runner).node("vn3").reason == "vcluster retire"


def test_node_rejects_bad_name_before_running_anything():
    runner = Runner()
    with pytest.raises(SlurmError, match="node name 'vn 1' is invalid"):
        Slurm(runner=runner).node("vn 1")
    assert runner.calls == []


def _squeue_on(nodes, jobs):
    """``squeue --nodelist`` as Slurm.jobs_on runs it, answering the recorded jobs on ``nodes``.

    squeue itself picks the jobs by node; its text lines are made here from
    the recorded JSON listing's jobs (real text output is compared with the
    JSON one in tests/functional/test_slurm_jobs_on.py).
    """
    wanted = set(hostlist.expand(nodes))

    def line(j):
        array = bool(j.array_tasks)
        return "\x1f".join(str(v) for v in (
            j.id, j.state, j.partition, hostlist.collect(j.nodes), j.array_job_id if array else j.id,
            j.array_tasks if array else "N/A", j.cpus, j.node_count, j.user, j.priority, j.reason or "None",
            j.comment or "(null)", j.name))

    out = "".join(line(j) + "\n" for j in jobs if wanted & set(j.nodes))
    argv = ("squeue", "--noheader", "--all", "--states=all", f"--nodelist={hostlist.collect(sorted(wanted))}",
            f"--format={parse.SQUEUE_TEXT_FORMAT}")
    return argv, (0, out, "")


def test_jobs_filters():
    listing = parse.jobs_from_squeue_json(read("squeue.json"))
    runner = Runner(dict([(("squeue", "--all", "--json"), (0, read("squeue.json"), "")),
                          *(_squeue_on(n, listing) for n in ("vn[8-9],vn1", "vn2", "vn3"))]))
    slurm = Slurm(runner=runner)
    assert sorted(j.name for j in slurm.jobs(nodes="vn[8-9],vn1")) == ["run-htc", "run-multi"]
    assert [j.name for j in slurm.jobs(nodes=["vn2"], states="suspended")] == ["suspended"]
    assert slurm.job_count(nodes="vn3") == 0  # only finished jobs there
    assert slurm.job_count() == 8
    # with nodes, squeue lists only theirs: never the JSON of every job
    assert [c[0][:2] for c in runner.calls].count(["squeue", "--all"]) == 1


def test_job_unknown_is_none():
    runner = Runner({("scontrol", "show", "-o", "job", "999999"): recorded("show_job_unknown")})
    assert Slurm(runner=runner).job(999999) is None


def test_bad_job_id():
    with pytest.raises(SlurmError, match="job id '1;rm' is invalid"):
        Slurm(runner=Runner()).suspend_job("1;rm")


def test_delete_unknown_keeps_slurms_words():
    runner = Runner({("scontrol", "delete", "nodename=nosuch"): recorded("delete_node_unknown")})
    with pytest.raises(SlurmError) as exc:
        Slurm(runner=runner).delete_node("nosuch")
    assert "Invalid node name specified" in str(exc.value)
    assert str(exc.value).startswith("scontrol delete nodename=nosuch failed: ")


def test_delete_busy():
    runner = Runner({("scontrol", "delete", "nodename=vn1"): recorded("delete_node_busy")})
    with pytest.raises(SlurmError, match="Requested nodes are busy"):
        Slurm(runner=runner).delete_node("vn1")


def test_update_needs_reason_for_drain():
    with pytest.raises(SlurmError, match="setting node vn1 to DRAIN needs a reason"):
        Slurm(runner=Runner()).update_node("vn1", "drain")


def test_update_rejects_unknown_state():
    with pytest.raises(SlurmError, match="node state 'BOGUS' is invalid"):
        Slurm(runner=Runner()).update_node("vn1", "bogus")


def test_update_drain_passes_reason_as_one_argument():
    runner = Runner({
        ("scontrol", "update", "nodename=vn3", "state=DRAIN", "reason=vcluster retire"): (0, "", ""),
        SHOW_NODES + ("vn3",): (0, read("scontrol_show_node_vn3.txt"), ""),
    })
    node = Slurm(runner=runner).update_node("vn3", "drain", reason="vcluster retire")
    assert node.state == ["IDLE", "DRAIN"]


def test_update_slurm_refusal():
    runner = Runner({("scontrol", "update", "nodename=vn2", "state=RESUME"): recorded("resume_idle_node")})
    with pytest.raises(SlurmError, match="Invalid node state specified"):
        Slurm(runner=runner).update_node("vn2", "resume")


def test_create_refuses_existing():
    runner = Runner({SHOW_NODES + ("vn3",): (0, read("scontrol_show_node_vn3.txt"), "")})
    with pytest.raises(SlurmError, match=r"node vn3 already exists in Slurm \(IDLE\+DRAIN\)"):
        Slurm(runner=runner).create_node("vn3", {"cpus": 1, "memory": 100})


def test_create_runs_scontrol_create():
    future = [line for line in read("scontrol_show_node_future.txt").splitlines() if "NodeName=vn7 " in line]
    runner = Runner({
        SHOW_NODES + ("vn7",): [recorded("show_node_unknown"), (0, future[0] + "\n", "")],
        ("scontrol", "create", "NodeName=vn7", "NodeAddr=10.0.0.7", "CPUs=1", "RealMemory=400",
         "Feature=virtual,pre", "State=FUTURE"): (0, "", ""),
    })
    node = Slurm(runner=runner).create_node("vn7", {"cpus": 1, "memory": 400, "features": ["virtual", "pre"]},
                                            addr="10.0.0.7")
    assert node.state == ["FUTURE"]


def test_create_bad_state_message():
    runner = Runner({
        SHOW_NODES + ("vnx",): recorded("show_node_unknown"),
        ("scontrol", "create", "NodeName=vnx", "cpus=1", "state=cloud"): recorded("create_node_bad_state"),
    })
    # our own validation accepts CLOUD; the recorded refusal shows how Slurm's words come through
    with pytest.raises(SlurmError, match="Only State=FUTURE and State=CLOUD allowed"):
        Slurm(runner=runner).create_node("vnx", conf="cpus=1 state=cloud")


def _node_line(name):
    return [line for line in read("scontrol_show_node.txt").splitlines() if line.startswith(f"NodeName={name} ")][0] + "\n"


def _job_line(job_id):
    return [line for line in read("scontrol_show_job.txt").splitlines() if line.startswith(f"JobId={job_id} ")][0] + "\n"


def test_hold_node_drains_then_suspends():
    runner = Runner({
        SHOW_NODES + ("vn1",): (0, _node_line("vn1"), ""),
        ("scontrol", "update", "nodename=vn1", "state=DRAIN", "reason=vcluster suspend"): (0, "", ""),
        ("scontrol", "suspend", "41"): (0, "", ""),
        ("scontrol", "suspend", "42"): (0, "", ""),
    })
    assert Slurm(runner=runner).hold_node("vn1", [41, "42"]) == {"drained": True, "suspended": ["41", "42"]}
    assert [c[0][1] for c in runner.calls] == ["-F", "update", "suspend", "suspend"]


def test_hold_node_keeps_an_admins_drain():
    runner = Runner({
        SHOW_NODES + ("vn6",): (0, _node_line("vn6"), ""),  # drained: "maintenance window"
        ("scontrol", "suspend", "7"): (0, "", ""),
    })
    assert Slurm(runner=runner).hold_node("vn6", ["7"]) == {"drained": False, "suspended": ["7"]}


def test_hold_node_undoes_itself_when_a_suspend_fails():
    runner = Runner({
        SHOW_NODES + ("vn1",): (0, _node_line("vn1"), ""),
        ("scontrol", "update", "nodename=vn1", "state=DRAIN", "reason=vcluster suspend"): (0, "", ""),
        ("scontrol", "suspend", "41"): (0, "", ""),
        ("scontrol", "suspend", "999999"): recorded("suspend_pending_job"),
        ("scontrol", "resume", "41"): (0, "", ""),
        ("scontrol", "update", "nodename=vn1", "state=RESUME"): (0, "", ""),
    })
    with pytest.raises(SlurmError, match="scontrol suspend 999999 failed: Unexpected message received"):
        Slurm(runner=runner).hold_node("vn1", [41, 999999])
    assert [c[0][1:3] for c in runner.calls[-2:]] == [["resume", "41"], ["update", "nodename=vn1"]]


def test_hold_node_checks_before_any_change():
    runner = Runner({SHOW_NODES + ("nosuch",): recorded("show_node_unknown")})
    with pytest.raises(SlurmError, match="node nosuch is not known to Slurm"):
        Slurm(runner=runner).hold_node("nosuch", [1])
    with pytest.raises(SlurmError, match="job id 'x;y' is invalid"):
        Slurm(runner=runner).hold_node("vn1", ["x;y"])
    assert len(runner.calls) == 1


def test_release_node_resumes_suspended_jobs_and_its_own_drain():
    runner = Runner({
        ("scontrol", "show", "-o", "job", "5"): (0, _job_line(5), ""),  # SUSPENDED
        ("scontrol", "show", "-o", "job", "1"): (0, _job_line(1), ""),  # RUNNING: left alone
        ("scontrol", "show", "-o", "job", "999999"): recorded("show_job_unknown"),
        ("scontrol", "resume", "5"): (0, "", ""),
        SHOW_NODES + ("vn3",): (0, read("scontrol_show_node_vn3.txt"), ""),
        ("scontrol", "update", "nodename=vn3", "state=RESUME"): (0, "", ""),
    })
    slurm = Slurm(runner=runner)
    assert slurm.release_node("vn3", [5, 1, 999999], reason="vcluster retire") == {"resumed": ["5"], "undrained": True}
    # another reason's drain stays
    runner.calls.clear()
    assert slurm.release_node("vn3", [], reason="vcluster suspend") == {"resumed": [], "undrained": False}
    assert [c[0][1] for c in runner.calls] == ["-F"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_node_state_polls_until_match():
    down = "NodeName=vn1 State=DOWN+DYNAMIC_NORM CPUTot=1\n"
    idle = "NodeName=vn1 State=IDLE+DYNAMIC_NORM CPUTot=1\n"
    runner = Runner({SHOW_NODES + ("vn1",): [(0, down, ""), (0, down, ""), (0, idle, "")]})
    clock = Clock()
    slurm = Slurm(runner=runner, clock=clock, sleep=clock.sleep)
    assert slurm.wait_node_state("vn1", "idle", timeout=10, interval=1) == ["IDLE"]
    assert clock.now == 2


def test_wait_node_state_deadline_names_last_state():
    down = "NodeName=vn1 State=IDLE+DRAIN CPUTot=1\n"
    runner = Runner({SHOW_NODES + ("vn1",): (0, down, "")})
    clock = Clock()
    slurm = Slurm(runner=runner, clock=clock, sleep=clock.sleep)
    with pytest.raises(SlurmError, match=r"node vn1 is not IDLE\|MIXED after 3 s: it is IDLE\+DRAIN"):
        slurm.wait_node_state("vn1", ["IDLE", "MIXED"], timeout=3, interval=1)


def test_wait_absent():
    runner = Runner({SHOW_NODES + ("vn1",): recorded("show_node_unknown")})
    assert Slurm(runner=runner).wait_node_state("vn1", "ABSENT", timeout=1) == []


def test_submit_maps_options():
    runner = Runner({("sbatch", "--parsable", "--hold", "--job-name=x", "--nodelist=vn1", "--wrap", "true"):
                     (0, "42\n", "")})
    assert Slurm(runner=runner).submit(wrap="true", job_name="x", nodelist="vn1", hold=True, mem=None) == 42


def test_submit_script_on_stdin():
    runner = Runner({("sbatch", "--parsable"): (0, "43;cluster\n", "")})
    assert Slurm(runner=runner).submit(script="#!/bin/sh\ntrue\n") == 43
    assert runner.calls[0][2].startswith("#!/bin/sh")


# -- a node's new address, a job's own reservation ------------------------------------------


def test_update_node_addr_is_one_update():
    argv = ("scontrol", "update", "nodename=vn1", "nodeaddr=10.77.0.121")
    runner = Runner({argv: (0, "", "")})
    assert Slurm(runner=runner).update_node_addr("vn1", "10.77.0.121") is True
    assert [c[0] for c in runner.calls] == [list(argv)]


@pytest.mark.parametrize(("name", "address", "message"), [
    ("vn1", "10.0.0.1 state=down", "node address '10.0.0.1 state=down' is invalid: use an IP address or a host name"),
    ("vn1", "", "node address '' is invalid"),
    ("vn1", None, "node address None is invalid"),
    ("vn1", "-bad.example", "node address '-bad.example' is invalid"),
    ("vn 1", "10.0.0.1", "node name 'vn 1' is invalid"),
])
def test_update_node_addr_refuses_bad_values_before_running_anything(name, address, message):
    runner = Runner()
    with pytest.raises(SlurmError, match=f"^{message}"):
        Slurm(runner=runner).update_node_addr(name, address)
    assert runner.calls == []


RESERVE = [
    ("scontrol", "create", "reservation", "ReservationName=vcjob42", "Nodes=vn7,vn8", "StartTime=now",
     "Duration=infinite", "Users=alice", "Flags=IGNORE_JOBS"),
    ("scontrol", "update", "JobId=42", "ReservationName=vcjob42", "ReqNodeList=vn7,vn8"),
    ("scontrol", "release", "42"),
]


@pytest.mark.parametrize("nodes", [["vn7", "vn8"], "vn7,vn8", "vn[7-8]"])
def test_reserve_for_job_runs_the_three_commands_in_order(nodes):
    runner = Runner({argv: (0, "", "") for argv in RESERVE})
    assert Slurm(runner=runner).reserve_for_job(42, nodes, "alice") == {"reservation": "vcjob42",
                                                                      "nodes": ["vn7", "vn8"]}
    assert [tuple(c[0]) for c in runner.calls] == RESERVE


def test_reserve_for_job_stops_at_the_first_refusal_with_slurms_words():
    # Slurm's words, as the functional harness's 22.05 slurmctld says them (tests/functional/test_slurm_module.py)
    runner = Runner({RESERVE[0]: (1, "", "Error creating the reservation: Invalid user id\n")})
    with pytest.raises(SlurmError, match="^scontrol create reservation failed: Error creating the reservation: "
                                         "Invalid user id$"):
        Slurm(runner=runner).reserve_for_job("42", ["vn7", "vn8"], "alice")
    assert [tuple(c[0]) for c in runner.calls] == RESERVE[:1]


@pytest.mark.parametrize(("args", "message"), [
    (("42x", ["vn7"], "alice"), "job id '42x' is invalid: use a number such as 42 or 42_3"),
    (("42", [], "alice"), "nodes [] is invalid: give at least one node name (a list or a hostlist)"),
    (("42", None, "alice"), "nodes None is invalid: give at least one node name"),
    (("42", ["vn 7"], "alice"), "node name 'vn 7' is invalid"),
    (("42", ["vn7"], "alice Flags=MAINT"), "user 'alice Flags=MAINT' is invalid: use a user name of letters"),
    (("42", ["vn7"], None), "user None is invalid"),
])
def test_reserve_for_job_refuses_bad_values_before_running_anything(args, message):
    runner = Runner()
    with pytest.raises(SlurmError, match="^" + re.escape(message)):
        Slurm(runner=runner).reserve_for_job(*args)
    assert runner.calls == []


def test_delete_reservation():
    argv = ("scontrol", "delete", "ReservationName=vcjob42")
    runner = Runner({argv: (1, "", "delete_reservation ReservationName=vcjob42: Requested reservation is invalid\n")})
    with pytest.raises(SlurmError, match="^scontrol delete ReservationName=vcjob42 failed: delete_reservation "
                                         "ReservationName=vcjob42: Requested reservation is invalid$"):
        Slurm(runner=runner).delete_reservation(jobctl.job_reservation(42))
    runner.answers[argv] = (0, "", "")
    assert Slurm(runner=runner).delete_reservation("vcjob42") is True
    with pytest.raises(SlurmError, match="^reservation name 'a b' is invalid: use up to 64 letters"):
        Slurm(runner=Runner()).delete_reservation("a b")


def test_missing_binary():
    with pytest.raises(SlurmError, match="scontrol-does-not-exist is not installed"):
        from vcluster.slurm.client import subprocess_runner
        subprocess_runner(["scontrol-does-not-exist"], {}, 5)


# -- the Slurm version: read once, refused when unsupported, behaviour by version --------


def test_version_is_read_once_per_client(release):
    runner = Runner({SHOW_NODES: (0, read("scontrol_show_node_future.txt"), ""),
                     ("squeue", "--all", "--json"): (0, read("squeue.json"), "")})
    slurm = Slurm(runner=runner)
    slurm.nodes()
    slurm.jobs()
    slurm.nodes()
    assert runner.version_calls == 1
    assert slurm.release is versions.RELEASES[release]
    assert slurm.version() == read("meta.json").split('"version": "')[1].split('"')[0].split()[-1]


def test_known_release_is_not_read_again(release):
    runner = Runner({("squeue", "--all", "--json"): (0, read("squeue.json"), "")})
    assert Slurm(runner=runner, release=release).job_count() == 8
    assert runner.version_calls == 0


def test_the_parser_follows_the_version(release):
    """24.11 output read as 22.05 (or the reverse) is refused, not misread."""
    other = "24.11" if release == "22.05" else "22.05"
    runner = Runner({("squeue", "--all", "--json"): (0, read("squeue.json", other), "")})
    with pytest.raises(SlurmError, match=f"printed Slurm {other} output, but the controller's Slurm is {release}"):
        Slurm(runner=runner).jobs()


@pytest.mark.parametrize("text, sentence", [
    ("slurm 21.08.8\n", "Slurm 21.08.8 is not supported: vcluster supports 22.05, 23.02, 23.11, 24.05, "
                        "24.11, 25.05 and 25.11 (see docs/slurm-versions.md)"),
    ("slurm 26.05.0\n", "Slurm 26.05.0 is not supported: "),
    ("garbage\n", "cannot read a Slurm version from 'garbage'"),
])
def test_unsupported_version_is_refused_at_the_first_call(text, sentence):
    runner = Runner({VERSION: (0, text, ""), ("squeue", "--all", "--json"): (0, read("squeue.json"), "")})
    slurm = Slurm(runner=runner)
    with pytest.raises(SlurmError) as exc:
        slurm.job_count()
    assert str(exc.value).startswith(sentence) and "\n" not in str(exc.value)
    assert runner.calls == []  # nothing ran but scontrol --version
    with pytest.raises(SlurmError):
        slurm.submit(wrap="true")
    assert runner.calls == []


def test_version_command_failure_is_reported():
    runner = Runner({VERSION: (1, "", "scontrol: fatal: Could not establish a configuration source\n")})
    with pytest.raises(SlurmError, match="scontrol --version failed: Could not establish a configuration source"):
        Slurm(runner=runner).nodes()


@pytest.mark.parametrize("version, state, reason, argv", [
    ("22.05.8", "POWER_DOWN_FORCE", None, ("scontrol", "update", "nodename=cl1", "state=POWER_DOWN_FORCE")),
    ("23.11.10", "POWER_UP", None, ("scontrol", "update", "nodename=cl1", "state=POWER_UP")),
    ("24.05.8", "POWER_UP", None, ("scontrol", "power", "up", "cl1")),
    ("24.11.5", "POWER_DOWN_FORCE", None, ("scontrol", "power", "down", "force", "cl1")),
    ("24.11.5", "POWER_DOWN_ASAP", "x", ("scontrol", "update", "nodename=cl1", "state=POWER_DOWN_ASAP",
                                         "reason=x")),
    ("25.05.8", "POWER_DOWN", "x", ("scontrol", "power", "down", "cl1", "Reason=x")),
    ("24.11.5", "DRAIN", "x", ("scontrol", "update", "nodename=cl1", "state=DRAIN", "reason=x")),
])
def test_power_commands_by_version(version, state, reason, argv):
    runner = Runner({VERSION: (0, f"slurm {version}\n", ""), argv: (0, "", "")})
    Slurm(runner=runner)._update_node("cl1", state, reason)  # noqa: SLF001
    assert [tuple(c[0]) for c in runner.calls] == [argv]


def test_existing_node_create_differs_by_version(release):
    """22.05 exits 0 on an existing node, 24.11 exits 1: the client checks first either way."""
    rc = json.loads(read("errors.json"))["create_node_exists"]["rc"]
    assert rc == (0 if release == "22.05" else 1)
