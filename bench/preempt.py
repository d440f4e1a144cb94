#!/usr/bin/env python3
"""Preemption latency: vcluster's event-driven VM freeze against Slurm's own SUSPEND,GANG.

Prints one JSON object. Both sides run the same two jobs, measured the same
way (one poll loop every 0.1 s watching both the high-priority job and the
victim):

- ``vcluster``: on the real local stack (salt-master, reactor, controller
  minion, slurmctld, LXD). A low-priority counter job runs on a virtual node
  (profile ``htc``); a high-priority job (partition ``batch``) starts on the
  host, which is the bare-metal Slurm node and the LXD server. Measured:
  seconds from the high job seen RUNNING to the virtual node seen ``Frozen``
  (PrologSlurmctld -> spool line -> events engine -> reactor ->
  ``vcluster.on_slurm_event`` -> scontrol suspend + LXD freeze), and from the
  high job seen ended to the node ``Running`` again with its job RUNNING.
  The stack is the pytest integration stack: this script runs
  ``tests/integration/test_suspend_resume.py::test_preemption_latency_sample``
  and reads the timings it writes.
- ``baseline_slurm``: a throwaway slurmctld (tests/harness) with
  ``PreemptType=preempt/partition_prio`` and ``PreemptMode=SUSPEND,GANG``;
  the low job in a PriorityTier=1 partition, the high job in a PriorityTier=10
  partition, on the same 1-CPU node. Measured: high RUNNING -> low
  SUSPENDED, and high ended -> low RUNNING.

Goal: vcluster adds at most 2 s to each of the baseline's two latencies.

Usage (root; the stack's host-wide lock serialises it with tests)::

    VCLUSTER_TEST_LXD_NETWORK=vc4br VCLUSTER_TEST_LXD_CIDR=10.84.0.1/24 \\
        /opt/vcluster/venv/bin/python bench/preempt.py [--repeat 3] [--skip-stack]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.slurm import SlurmHarness, unavailable  # noqa: E402

GOAL_ADDED_SECONDS = 2.0
POLL = 0.1


def _stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "samples": len(values)}


def watch(high_state, victim_frozen, timeout=120):
    """Poll both; return (seconds high RUNNING -> victim frozen, high ended -> victim thawed)."""
    t_run = t_frozen = t_end = t_thawed = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        state = high_state()
        frozen = victim_frozen()
        if t_run is None and state in ("RUNNING", "COMPLETING", "COMPLETED"):
            t_run = now
        if t_run is not None and t_frozen is None and frozen:
            t_frozen = now
        if t_run is not None and t_end is None and state in ("COMPLETING", "COMPLETED", ""):
            t_end = now
        if t_end is not None and t_frozen is not None and not frozen:
            t_thawed = now
            break
        time.sleep(POLL)
    freeze = (t_frozen - t_run) if (t_frozen and t_run) else None
    thaw = (t_thawed - t_end) if (t_thawed and t_end) else None
    return freeze, thaw


def baseline(repeat):
    reason = unavailable()
    if reason:
        return {"error": reason}
    SlurmHarness.purge_stale()
    partitions = {
        "low": "Nodes=ALL PriorityTier=1 Default=YES MaxTime=INFINITE State=UP",
        "high": "Nodes=ALL PriorityTier=10 MaxTime=INFINITE State=UP",
    }
    extra = ["PreemptType=preempt/partition_prio", "PreemptMode=SUSPEND,GANG", "SchedulerTimeSlice=30"]
    freezes, thaws = [], []
    with SlurmHarness(partitions=partitions, extra_conf=extra) as h:
        h.add_node("bn1", cpus=1, memory=400)
        for _ in range(repeat):
            low = h.sbatch(wrap="for i in $(seq 1 40); do sleep 1; done", partition="low", nodelist="bn1", mem=100)
            h.wait_job(low, ("RUNNING",), timeout=60)
            high = h.sbatch(wrap="sleep 5", partition="high", nodelist="bn1", mem=100)
            freeze, thaw = watch(lambda high=high: h.job_state(high), lambda low=low: h.job_state(low) == "SUSPENDED")
            freezes.append(freeze)
            thaws.append(thaw)
            h.cancel_all()
    return {"freeze_seconds": _stat(freezes), "resume_seconds": _stat(thaws),
            "config": extra, "samples_raw": {"freeze": freezes, "resume": thaws}}


def vcluster_stack(repeat):
    out = pathlib.Path(tempfile.mkdtemp(prefix="vcbench-")) / "preempt.json"
    env = dict(os.environ, VCLUSTER_BENCH_OUT=str(out), VCLUSTER_BENCH_REPEAT=str(repeat))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--show-capture=no",
           "tests/integration/test_suspend_resume.py::test_preemption_latency_sample"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        return {"error": "stack run failed: " + (proc.stdout.strip().splitlines() or ["no output"])[-1]}
    data = json.loads(out.read_text())
    return {"freeze_seconds": _stat(data["freeze"]), "resume_seconds": _stat(data["resume"]),
            "samples_raw": data}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-stack", action="store_true", help="baseline only")
    args = parser.parse_args(argv)
    result = {"benchmark": "preempt", "goal_added_seconds": GOAL_ADDED_SECONDS,
              "baseline_slurm": baseline(args.repeat)}
    if not args.skip_stack:
        result["vcluster"] = vcluster_stack(args.repeat)
    added = {}
    for key in ("freeze_seconds", "resume_seconds"):
        try:
            added[key] = round(result["vcluster"][key]["median"] - result["baseline_slurm"][key]["median"], 3)
        except (KeyError, TypeError):
            added[key] = None
    result["added_seconds"] = added
    result["goal_met"] = all(v is not None and v <= GOAL_ADDED_SECONDS for v in added.values())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
