#!/usr/bin/env python3
"""Resume time against the length of the freeze: must not grow with it.

Prints one JSON object. On the real local stack (the pytest integration
stack: salt-master, reactor, controller minion, slurmctld, LXD), a counter
job runs on a virtual node; the node is suspended (frozen) with
``vcluster.suspend`` for each length asked for, then resumed with
``vcluster.resume``, whose wall time is measured (provider thaw, minion and
slurmd check, ``scontrol resume`` of the job, drain lifted), together with
the time until Slurm shows the job RUNNING again. The baseline is the
shortest freeze of the same run; the goal is a resume after any freeze
within 1 s of it. The job must end COMPLETED with one accounting record
and an unbroken counter.

The stack is ``tests/integration/test_suspend_resume.py::
test_resume_time_after_freeze_sample``; this script runs it and reads the
timings it writes.

Usage (root; the stack's host-wide lock serialises it with tests)::

    flock /run/vcluster-test-stack.lock \\
        /opt/vcluster/venv/bin/python bench/resume_after.py [--freezes 5,60,300]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
GOAL_ADDED_SECONDS = 1.0


def run(freezes):
    out = pathlib.Path(tempfile.mkdtemp(prefix="vcbench-")) / "resume_after.json"
    env = dict(os.environ, VCLUSTER_BENCH_OUT=str(out), VCLUSTER_BENCH_FREEZES=",".join(map(str, freezes)))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "-s",
           "tests/integration/test_suspend_resume.py::test_resume_time_after_freeze_sample"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout.strip().splitlines() or ["no output"])[-1]
        return None, f"stack run failed: {tail}"
    return json.loads(out.read_text()), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freezes", default="5,60,300", help="freeze lengths in seconds, comma-separated")
    args = parser.parse_args(argv)
    try:
        freezes = sorted(int(x) for x in args.freezes.split(","))
    except ValueError:
        parser.error(f"--freezes must be whole seconds separated by commas, got {args.freezes!r}")
    if not freezes or freezes[0] <= 0:
        parser.error(f"--freezes must be positive, got {args.freezes!r}")
    samples, error = run(freezes)
    result = {"benchmark": "resume_after", "goal_added_seconds": GOAL_ADDED_SECONDS, "freezes": freezes}
    if error:
        result["error"] = error
        print(json.dumps(result, indent=2))
        return 1
    base = samples[0]["resume_seconds"]
    result["baseline_shortest_freeze"] = samples[0]
    result["samples"] = samples
    result["added_seconds"] = {str(s["frozen_seconds"]): round(s["resume_seconds"] - base, 3) for s in samples[1:]}
    result["goal_met"] = all(v <= GOAL_ADDED_SECONDS for v in result["added_seconds"].values())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
