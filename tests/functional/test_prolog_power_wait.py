"""PrologSlurmctld holds a job on powering-up nodes until they registered.

The script is rendered by the real state tree (``slurm.events`` through
``salt-call --local``) and run as slurmctld would run it. ``scontrol`` is a
stand-in here that replays node states from a file and counts its calls:
each branch (powered down, powering up, up, DOWN, no answer, deadline) needs
a given state at a given moment, which a real slurmctld gives only at random
times. The real path (slurmctld completing the job's configuration when the
prolog ends) is checked end to end in tests/integration/test_cloud_mode.py.
"""

import copy
import json
import os
import pathlib
import subprocess
import textwrap

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
def fake_scontrol(tmp_path):
    """A PATH with an ``scontrol`` that answers one line of ``states`` per call (the last one repeats)."""

    def make(states, fail=False):
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        (tmp_path / "states").write_text("\n".join(states) + "\n")
        (tmp_path / "calls").write_text("")
        script = bindir / "scontrol"
        script.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            echo "$*" >> {tmp_path}/calls
            {"exit 1" if fail else ""}
            n=$(wc -l < {tmp_path}/calls)
            total=$(wc -l < {tmp_path}/states)
            [ "$n" -le "$total" ] || n=$total
            state=$(sed -n "${{n}}p" {tmp_path}/states)
            echo "NodeName=vn1 Arch=x86_64 CoresPerSocket=1 State=$state ThreadsPerCore=1"
            """))
        script.chmod(0o755)
        return bindir

    def calls():
        return (tmp_path / "calls").read_text().splitlines()

    make.calls = calls
    return make


def run(prolog, bindir, partition="htc", nodes="vn1"):
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_JOB_PARTITION": partition,
           "SLURM_JOB_NODELIST": nodes}
    return subprocess.run(["/bin/sh", str(prolog)], env=env, capture_output=True, text=True, timeout=60)


def test_context_names_cloud_partitions_and_longest_resume_timeout(render):
    cloud = copy.deepcopy(CLOUD)
    cloud["profiles"]["burst"]["resume_timeout"] = 900
    _, ctx = render(cloud)
    assert sorted(ctx["power_partitions"]) == ["cloud", "htc"]
    assert ctx["power_wait"] == 900


def test_without_cloud_profiles_the_prolog_never_asks_slurm(render, fake_scontrol):
    prolog, ctx = render(None)
    assert ctx["power_partitions"] == []
    assert "scontrol" not in prolog.read_text()


def test_waits_from_powered_down_through_powering_up_until_registered(render, fake_scontrol):
    prolog, _ = render(CLOUD)
    bindir = fake_scontrol(["ALLOCATED+CLOUD+POWERED_DOWN", "ALLOCATED+CLOUD+NOT_RESPONDING+POWERING_UP",
                            "ALLOCATED+CLOUD+NOT_RESPONDING+POWERING_UP", "ALLOCATED+CLOUD"])
    ret = run(prolog, bindir)
    assert ret.returncode == 0, ret.stderr
    assert len(fake_scontrol.calls()) == 4
    assert fake_scontrol.calls()[0] == "show node -o vn1"


@pytest.mark.parametrize("state", ["DOWN+CLOUD+POWERED_DOWN", "ALLOCATED+CLOUD+FAIL",
                                   "IDLE+CLOUD+POWER_DOWN", "ALLOCATED+CLOUD"])
def test_stops_at_once_on_a_failed_resume_or_a_node_up(render, fake_scontrol, state):
    prolog, _ = render(CLOUD)
    ret = run(prolog, fake_scontrol([state]))
    assert ret.returncode == 0 and len(fake_scontrol.calls()) == 1


def test_no_answer_from_slurmctld_does_not_hold_the_job(render, fake_scontrol):
    prolog, _ = render(CLOUD)
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP"], fail=True))
    assert ret.returncode == 0 and len(fake_scontrol.calls()) == 1


def test_other_partitions_are_not_held(render, fake_scontrol):
    prolog, _ = render(CLOUD)
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP"]), partition="batch")
    assert ret.returncode == 0 and fake_scontrol.calls() == []


def test_gives_up_at_resume_timeout(render, fake_scontrol):
    cloud = copy.deepcopy(CLOUD)
    cloud["power_save"]["resume_timeout"] = 2
    prolog, ctx = render(cloud)
    assert ctx["power_wait"] == 2
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP"]))
    assert ret.returncode == 0 and 1 <= len(fake_scontrol.calls()) <= 3


def test_a_profile_without_partition_holds_every_partition(render, fake_scontrol):
    cloud = copy.deepcopy(CLOUD)
    cloud["profiles"]["burst"]["partition"] = None
    prolog, _ = render(cloud)
    ret = run(prolog, fake_scontrol(["ALLOCATED+CLOUD+POWERING_UP", "ALLOCATED+CLOUD"]), partition="batch")
    assert ret.returncode == 0 and len(fake_scontrol.calls()) == 2


def test_preemption_event_is_still_written_first(render, fake_scontrol, tmp_path):
    prolog, ctx = render(CLOUD, preemption={"enabled": True, "partitions": ["htc"]})
    spool = pathlib.Path(ctx["spool"])
    text = prolog.read_text().replace(str(spool), str(tmp_path / "events"))
    local = tmp_path / "prolog.sh"
    local.write_text(text)
    ret = run(local, fake_scontrol(["ALLOCATED+CLOUD"]))
    assert ret.returncode == 0
    assert (tmp_path / "events").read_text() == "vcluster-slurm-event v1 start job=42 partition=htc nodes=vn1\n"
