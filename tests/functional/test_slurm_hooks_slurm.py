"""vcluster's hooks on a real slurmctld 22.05: events still arrive, scheduling is not delayed.

The PrologSlurmctld and the jobcomp/script program are rendered by the real
state tree (preemption of partition ``batch`` on) and run by a throwaway
slurmctld of the harness (tests/harness/slurm.py) with one 1-CPU dynamic
node. Their spool is followed with the events engine's own reader
(vcluster.spool: Follower + inotify Watch).

Why not EpilogSlurmctld, shown on the same slurmctld: when a job's
EpilogSlurmctld is still running as its node reports the epilog done, the
job stays COMPLETING, and the end of the script frees it in
prep_epilog_slurmctld_callback (src/slurmctld/prep_slurmctld.c) without
calling the scheduler; the next job waits for the next periodic pass. With
``sched/builtin`` and ``sched_interval=600`` there is no other pass within
these tests, so a second job queued behind the first one starts at once
with vcluster's hooks, and not within 20 s with an EpilogSlurmctld.
"""

import json
import os
import pathlib
import subprocess
import time

import pytest

from tests.functional.test_states_render import sandbox, tmp_root  # noqa: F401
from tests.harness import slurm as harness
from vcluster.spool import Follower, Watch

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the Slurm harness and salt-call sandboxes need root")]

SCHED = ["SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=600"]


class HookHarness(harness.SlurmHarness):
    """The harness, with slurmctld started under its own name.

    The harness runs a renamed copy of slurmctld (so the host's init
    scripts never mistake it for theirs); Slurm decides "am I slurmctld"
    by argv[0] (run_in_daemon), and with another name the prep/script
    plugin never runs PrologSlurmctld or EpilogSlurmctld. The process keeps
    the copy's name, so the harness still finds and stops it.
    """

    def _start_slurmctld(self, timeout):
        subprocess.run(["slurmctld", "-f", self.conf], executable=self._daemon("slurmctld"), env=self.env,
                       check=True, capture_output=True, timeout=60)
        harness.wait_for(lambda: "is UP" in self.run("scontrol", "ping", check=False).stdout, timeout,
                         "slurmctld to answer scontrol ping", interval=0.2)


@pytest.fixture(scope="module")
def scripts(sandbox, tmp_root):  # noqa: F811
    """The rendered PrologSlurmctld and jobcomp program, spooling to a file of their own."""
    if harness.unavailable():
        pytest.skip(harness.unavailable())
    site = {"vcluster": {"preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"]}}}
    box = sandbox("controller", site=site)
    sls = box.call("state.show_sls", "slurm.controller")
    out = {}
    spool = tmp_root / "hook-events"
    for sid, kind in (("slurm-events-prolog-managed", "prolog"), ("slurm-events-jobcomp-managed", "jobcomp")):
        args = {k: v for a in sls[sid]["file"] if isinstance(a, dict) for k, v in a.items()}
        ctx = args["context"]
        dest = tmp_root / f"hook-{kind}"
        kwargs = [f"{k}={json.dumps(v)}" for k, v in ctx.items()]
        box.call("cp.get_template", "salt://slurm/files/slurmctld-event.sh.jinja", str(dest), "tplroot=slurm", *kwargs)
        dest.write_text(dest.read_text().replace(ctx["spool"], str(spool)))
        dest.chmod(0o755)
        out[kind] = dest
    out["spool"] = spool
    return out


def _follow(spool, want, timeout=60):
    """Lines of ``spool`` until ``want`` of them arrived (the engine's reader, woken by inotify)."""
    follower, watch, lines = Follower(str(spool)), Watch(str(spool.parent)), []
    try:
        def more():
            lines.extend(line for line in follower.read() if line.startswith("vcluster-slurm-event"))
            return len(lines) >= want
        deadline = time.monotonic() + timeout
        yield more
        while not more() and time.monotonic() < deadline:
            watch.wait(max(0.1, deadline - time.monotonic()))
        yield lines
    finally:
        watch.close()


def _two_jobs_in_a_row(h, partition="batch"):
    """Job a holds the only CPU for 8 s, job b waits behind it; their ids.

    b's submission asks for a scheduling pass, which slurmctld runs within
    batch_sched_delay (3 s), while a still runs: after that, only a's end
    can start b before the periodic pass.
    """
    a = h.sbatch(wrap="sleep 8", partition=partition, nodelist="bn1", mem=50)
    h.wait_job(a, ("RUNNING",), timeout=60)
    b = h.sbatch(wrap="sleep 1", partition=partition, nodelist="bn1", mem=50)
    return a, b


def test_events_arrive_and_the_next_job_starts_at_once(scripts):
    spool = pathlib.Path(scripts["spool"])
    spool.write_text("")
    partitions = {"batch": "Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                  "other": "Nodes=ALL MaxTime=INFINITE State=UP"}
    extra = [*SCHED, f"PrologSlurmctld={scripts['prolog']}", "JobCompType=jobcomp/script",
             f"JobCompLoc={scripts['jobcomp']}"]
    harness.SlurmHarness.purge_stale()
    with HookHarness(partitions=partitions, extra_conf=extra) as h:
        h.add_node("bn1", cpus=1, memory=500)
        reader = _follow(spool, 4)
        next(reader)
        quiet = h.sbatch(wrap="true", partition="other", nodelist="bn1", mem=50)
        h.wait_job(quiet, ("COMPLETED",), timeout=60)
        a, b = _two_jobs_in_a_row(h)
        # no periodic pass for 600 s: b starts because a's end called the scheduler
        assert h.wait_job(b, ("COMPLETED",), timeout=120) == "COMPLETED"
        assert h.job_state(a) == "COMPLETED"
        lines = next(reader)
    events = {(ln.split()[2], ln.split()[3]) for ln in lines}
    assert events == {("start", f"job={a}"), ("end", f"job={a}"), ("start", f"job={b}"), ("end", f"job={b}")}, lines
    assert all(ln.endswith(" partition=batch nodes=bn1") for ln in lines), lines
    assert lines.index(next(ln for ln in lines if f" end job={a} " in ln)) < lines.index(
        next(ln for ln in lines if f" start job={b} " in ln))
    assert not any(f"job={quiet} " in ln for ln in spool.read_text().splitlines())


def test_an_epilog_slurmctld_would_hold_the_next_job(scripts, tmp_path):
    """The control: the same two jobs with an EpilogSlurmctld of one second. b stays PENDING on an idle node.

    Whether a given EpilogSlurmctld ends before the node's epilog report is
    a race (vcluster's former one forked three commands and lost it nearly
    always); one that takes a second always does.
    """
    epilog = tmp_path / "epilog"
    epilog.write_text("#!/bin/sh\nsleep 1\nexit 0\n")
    epilog.chmod(0o755)
    extra = [*SCHED, f"EpilogSlurmctld={epilog}"]
    harness.SlurmHarness.purge_stale()
    with HookHarness(extra_conf=extra) as h:
        h.add_node("bn1", cpus=1, memory=500)
        a, b = _two_jobs_in_a_row(h)
        h.wait_job(a, ("COMPLETED",), timeout=60)
        harness.wait_for(lambda: "IDLE" in h.node_state("bn1"), 30, "bn1 idle after job a")
        time.sleep(20)  # observing Slurm: nothing vcluster does runs here
        assert h.job_state(b) == "PENDING" and "IDLE" in h.node_state("bn1")
        h.cancel_all()
