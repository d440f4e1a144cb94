"""PrologSlurmctld holds a job on powering-up nodes until they registered.

The script is rendered by the real state tree (``slurm.events`` through
``salt-call --local``) and run as slurmctld would run it. ``scontrol`` is a
stand-in here that replays node states from a file and counts its calls:
each branch (powered down, powering up, up, DOWN, no answer, deadline) needs
a given state at a given moment, which a real slurmctld gives only at random
times. The real path (slurmctld completing the job's configuration when the
prolog ends) is checked end to end in tests/integration/test_cloud_mode.py.

Jobs that wait share one poller: after its own first look, a waiting job
reads its nodes' states from the answer one of them fetched for all, so N
jobs waiting for one node make one ``scontrol show node`` a second, not N.
"""

import copy
import json
import os
import subprocess
import textwrap
import time

import pytest

from tests.functional.test_cloud_render import CLOUD, _site
from tests.functional.test_states_render import sandbox, tmp_root  # noqa: F401

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="salt-call --local sandboxes need root")]


def _file_args(sls, sid):
    return {k: v for a in sls[sid]["file"] if isinstance(a, dict) for k, v in a.items()}


@pytest.fixture(scope="module")
def render(sandbox, tmp_root):  # noqa: F811
    """``render(cloud, preemption=None)`` -> (prolog text, its context as slsutil passes it)."""
    counter = iter(range(100))
    made = {}

    def make(cloud, preemption=None):
        key = json.dumps([cloud, preemption], sort_keys=True)
        if key not in made:
            made[key] = _render(cloud, preemption)
        return made[key]

    def _render(cloud, preemption):
        extra = {"vcluster_cloud": cloud} if cloud else {}
        site = _site(**extra)
        if preemption:
            site.setdefault("vcluster", {})["preemption"] = preemption
        box = sandbox("controller", site=site)
        args = _file_args(box.call("state.show_sls", "slurm.controller"), "slurm-events-prolog-managed")
        ctx = args["context"]
        dest = tmp_root / f"prolog-{next(counter)}.sh"
        kwargs = [f"{k}={json.dumps(v)}" for k, v in ctx.items()]
        box.call("cp.get_template", "salt://slurm/files/slurmctld-event.sh.jinja", str(dest), "tplroot=slurm", *kwargs)
        assert dest.exists(), box.last_output
        dest.chmod(0o755)
        return dest, ctx

    return make


@pytest.fixture
def local(render, tmp_path):
    """``local(cloud, preemption=None)``: the rendered prolog with its spool and power directory under tmp_path."""

    def make(cloud, preemption=None):
        prolog, ctx = render(cloud, preemption)
        text = prolog.read_text().replace(ctx["power_dir"], str(tmp_path / "power"))
        text = text.replace(ctx["spool"], str(tmp_path / "events"))
        (tmp_path / "power").mkdir(exist_ok=True)
        dest = tmp_path / "prolog.sh"
        dest.write_text(text)
        dest.chmod(0o755)
        return dest, ctx

    return make


@pytest.fixture
def fake_scontrol(tmp_path):
    """A PATH with an ``scontrol`` that answers one line of ``states`` per call (the last one repeats).

    ``show node -o LIST`` prints one record per name of LIST (comma list,
    as the shared poller passes it) and logs ``<caller job> show node
    LIST``; ``show hostnames LIST`` expands a comma list locally, as the
    real one does without asking slurmctld, and is not logged. When the
    file ``up`` exists every node answers ``ALLOCATED+CLOUD``.
    """

    def make(states, fail=False):
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        (tmp_path / "states").write_text("\n".join(states) + "\n")
        (tmp_path / "calls").write_text("")
        script = bindir / "scontrol"
        script.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            if [ "$1 $2" = "show hostnames" ]; then echo "$3" | tr ',' '\\n'; exit 0; fi
            echo "${{SLURM_JOB_ID:-?}} $*" >> {tmp_path}/calls
            {"exit 1" if fail else ""}
            n=$(wc -l < {tmp_path}/calls)
            total=$(wc -l < {tmp_path}/states)
            [ "$n" -le "$total" ] || n=$total
            state=$(sed -n "${{n}}p" {tmp_path}/states)
            [ -e {tmp_path}/up ] && state=ALLOCATED+CLOUD
            for name in $(echo "$4" | tr ',' ' '); do
              echo "NodeName=$name Arch=x86_64 CoresPerSocket=1 State=$state ThreadsPerCore=1"
            done
            """))
        script.chmod(0o755)
        return bindir

    def calls():
        return [line.split(" ", 1)[1] for line in (tmp_path / "calls").read_text().splitlines()]

    def callers():
        return [line.split(" ", 1)[0] for line in (tmp_path / "calls").read_text().splitlines()]

    make.calls = calls
    make.callers = callers
    return make


def _env(bindir, partition, nodes, job):
    return {"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": str(job), "SLURM_JOB_PARTITION": partition,
            "SLURM_JOB_NODELIST": nodes}


def run(prolog, bindir, partition="htc", nodes="vn1", job=42):
    return subprocess.run(["/bin/sh", str(prolog)], env=_env(bindir, partition, nodes, job), capture_output=True,
                          text=True, timeout=60)


def test_context_names_cloud_partitions_and_longest_resume_timeout(render):
    cloud = copy.deepcopy(CLOUD)
    cloud["profiles"]["burst"]["resume_timeout"] = 900
    _, ctx = render(cloud)
    assert sorted(ctx["power_partitions"]) == ["cloud", "htc"]
    assert ctx["power_wait"] == 900


def test_without_cloud_profiles_the_prolog_never_asks_slurm(render, fake_scontrol):
    prolog, ctx = render(None, preemption={"enabled": True, "partitions": ["batch"]})
    assert ctx["power_partitions"] == []
    assert "scontrol" not in prolog.read_text()


def test_waits_from_powered_down_through_powering_up_until_registered(local, fake_scontrol):
    prolog, _ = local(CLOUD)
    bindir = fake_scontrol(["ALLOCATED+CLOUD+POWERED_DOWN", "ALLOCATED+CLOUD+NOT_RESPONDING+POWERING_UP",
                            "ALLOCATED+CLOUD+NOT_RESPONDING+POWERING_UP", "ALLOCATED+CLOUD"])
    ret = run(prolog, bindir)
    assert ret.returncode == 0, ret.stderr
    assert len(fake_scontrol.calls()) == 4
    assert fake_scontrol.calls()[0] == "show node -o vn1"


@pytest.mark.parametrize("state", ["DOWN+CLOUD+POWERED_DOWN", "ALLOCATED+CLOUD+FAIL",
                                   "IDLE+CLOUD+POWER_DOWN", "ALLOCATED+CLOUD"])
def test_stops_at_once_on_a_failed_resume_or_a_node_up(local, fake_scontrol, state):
    prolog, _ = local(CLOUD)
    ret = run(prolog, fake_scontrol([state]))
    assert ret.returncode == 0 and len(fake_scontrol.calls()) == 1


@pytest.mark.parametrize("states", [["ALLOCATED+CLOUD+POWERING_UP"],
                                    ["ALLOCATED+CLOUD+POWERING_UP", "ALLOCATED+CLOUD+POWERING_UP"]])
def test_no_answer_from_slurmctld_does_not_hold_the_job(local, fake_scontrol, states, tmp_path):
    """slurmctld silent at the first look, or later to the shared poller: the job goes on."""
    prolog, _ = local(CLOUD)
    bindir = fake_scontrol(states)
    if len(states) > 1:  # first look answered, then silent
        (bindir / "scontrol").write_text((bindir / "scontrol").read_text().replace(
            "echo \"${SLURM_JOB_ID:-?} $*\"", "n0=$(wc -l < %s/calls); [ $n0 -ge 1 ] && { echo \"$SLURM_JOB_ID failed $*\" >> %s/calls; exit 1; }\n"
            "echo \"${SLURM_JOB_ID:-?} $*\"" % (tmp_path, tmp_path)))
    else:
        bindir = fake_scontrol(states, fail=True)
    ret = run(prolog, bindir)
    assert ret.returncode == 0 and len(fake_scontrol.calls()) == len(states), fake_scontrol.calls()
    assert list((tmp_path / "power").glob("want.*")) == []


def test_other_partitions_are_not_held(local, fake_scontrol):
    prolog, _ = local(CLOUD)
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP"]), partition="batch")
    assert ret.returncode == 0 and fake_scontrol.calls() == []


def test_a_job_vcluster_does_not_watch_starts_no_process(local, tmp_path):
    """No command on PATH at all: the prolog of a batch job still ends cleanly, so it ran none."""
    prolog, _ = local(CLOUD, preemption={"enabled": True, "partitions": ["htc"]})
    empty = tmp_path / "empty"
    empty.mkdir()
    ret = subprocess.run(["/bin/sh", str(prolog)], env=_env(empty, "batch", "host1", 7), capture_output=True,
                         text=True, timeout=60)
    assert ret.returncode == 0 and ret.stderr == "", ret.stderr
    assert not (tmp_path / "events").exists()
    # and the preemption line of a watched job needs none either (printf is a builtin)
    ret = subprocess.run(["/bin/sh", str(prolog)], env=_env(empty, "htc", "vn[1-2]", 8), capture_output=True,
                         text=True, timeout=60)
    assert ret.returncode == 0
    assert (tmp_path / "events").read_text() == "vcluster-slurm-event v1 start job=8 partition=htc nodes=vn[1-2]\n"


def test_gives_up_at_resume_timeout(local, fake_scontrol):
    cloud = copy.deepcopy(CLOUD)
    cloud["power_save"]["resume_timeout"] = 2
    prolog, ctx = local(cloud)
    assert ctx["power_wait"] == 2
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP"]))
    assert ret.returncode == 0 and 1 <= len(fake_scontrol.calls()) <= 3


def test_a_profile_without_partition_holds_every_partition(local, fake_scontrol):
    cloud = copy.deepcopy(CLOUD)
    cloud["profiles"]["burst"]["partition"] = None
    prolog, _ = local(cloud)
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP", "ALLOCATED+CLOUD"]), partition="batch")
    assert ret.returncode == 0 and len(fake_scontrol.calls()) == 2


def test_preemption_event_is_still_written_first(local, fake_scontrol, tmp_path):
    prolog, _ = local(CLOUD, preemption={"enabled": True, "partitions": ["htc"]})
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD"]))
    assert ret.returncode == 0
    assert (tmp_path / "events").read_text() == "vcluster-slurm-event v1 start job=42 partition=htc nodes=vn1\n"


def test_waiting_jobs_share_one_poller(local, fake_scontrol, tmp_path):
    """Five jobs wait for nodes powering up: after each one's first look, one of them asks for all.

    While they all wait, every ``scontrol show node`` after the five first
    looks comes from a single job (the lock holder) and names the nodes of
    every waiting job; no job ends before the nodes are up, all end once
    they are (the lock passes to another job when its holder ends).
    """
    prolog, _ = local(CLOUD)
    bindir = fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP"])
    jobs = {100 + i: ("vn1" if i < 3 else f"vn{i}") for i in range(5)}
    procs = {job: subprocess.Popen(["/bin/sh", str(prolog)], env=_env(bindir, "htc", nodes, job),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for job, nodes in jobs.items()}
    try:
        # wait (bounded) until the shared poller asked about all of them a few times
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shared = [c for c in fake_scontrol.calls()[len(jobs):] if "," in c]
            if len(shared) >= 3:
                break
            time.sleep(0.2)
        assert all(p.poll() is None for p in procs.values()), "a job stopped waiting while its nodes power up"
        (tmp_path / "up").write_text("")
        waiting = len(fake_scontrol.calls())  # calls made while all five waited
        for proc in procs.values():
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    calls, callers = fake_scontrol.calls(), fake_scontrol.callers()
    first = calls[:len(jobs)]
    assert sorted(callers[:len(jobs)]) == sorted(str(j) for j in jobs)
    assert sorted(first) == sorted(f"show node -o {n}" for n in jobs.values())
    later = list(zip(callers[len(jobs):waiting], calls[len(jobs):waiting], strict=True))
    assert len(later) >= 3
    assert len({caller for caller, _ in later}) == 1, later  # one poller (others take over as jobs end)
    for _, call in later[:3]:
        assert sorted(call.split(" ")[-1].split(",")) == sorted(jobs.values()), call
    assert list((tmp_path / "power").glob("want.*")) == []
