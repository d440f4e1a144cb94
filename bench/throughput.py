#!/usr/bin/env python3
"""Slurm throughput with vcluster's hooks against the same cluster without any.

Prints one JSON object. On the integration test stack (salt-master,
reactor, controller minion, slurmctld, slurmd, LXD; preemption and power
saving enabled, so the states install every hook vcluster has: a
PrologSlurmctld and jobcomp/script), it runs arrays of short tasks
(``sleep 1``) on the bare-metal partition ``batch`` (the host) and on
``htc`` (two LXD virtual nodes of 1 CPU), once with slurm.conf as the states
wrote it (``hooks``) and once with the hook lines taken out (``none``),
slurmctld restarted for each, modes taking turns. ``batch`` is the
preempting partition: each of its jobs sends a start and an end event
through the engine to the master's runner (which finds no victim: the
preemptible profile is never expanded).

Reported per partition: seconds and jobs per second of each sample, the
medians, and ``hooks_over_none`` (jobs per second with hooks / without;
the goal is at least 0.95). The stack is the pytest integration stack:
this script runs
``tests/integration/test_throughput.py::test_throughput_sample`` and reads
the timings it writes.

Usage (root; the stack's host-wide lock serialises it with tests)::

    /opt/vcluster/venv/bin/python bench/throughput.py [--tasks 40] [--repeat 2]
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
GOAL_RATIO = 0.95


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40, help="tasks per array (default 40)")
    parser.add_argument("--repeat", type=int, default=2, help="samples per mode and partition (default 2)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1:
        parser.error("--tasks and --repeat take a whole number from 1")
    out = pathlib.Path(tempfile.mkdtemp(prefix="vcbench-")) / "throughput.json"
    env = dict(os.environ, VCLUSTER_BENCH_OUT=str(out), VCLUSTER_BENCH_TASKS=str(args.tasks),
               VCLUSTER_BENCH_REPEAT=str(args.repeat))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--show-capture=no",
           "tests/integration/test_throughput.py"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    result = {"benchmark": "throughput", "goal_hooks_over_none_at_least": GOAL_RATIO,
              "date": datetime.date.today().isoformat(), "machine": f"{platform.node()}, {os.cpu_count()} cores"}
    if proc.returncode != 0 or not out.exists():
        result["error"] = "stack run failed: " + (proc.stdout.strip().splitlines() or ["no output"])[-1]
        print(json.dumps(result, indent=2))
        return 1
    data = json.loads(out.read_text())
    result.update(tasks=data["tasks"], task=data["task"], slots=data["slots"])
    ratios = {}
    for part in ("baremetal", "virtual"):
        cell = {}
        for mode in ("hooks", "none"):
            seconds = data["seconds"][mode][part]
            rates = [round(data["tasks"] / s, 3) for s in seconds]
            cell[mode] = {"seconds": seconds, "jobs_per_second": rates,
                          "median_jobs_per_second": round(statistics.median(rates), 3)}
        ratios[part] = round(cell["hooks"]["median_jobs_per_second"] / cell["none"]["median_jobs_per_second"], 3)
        result[part] = cell
    result["hooks_over_none"] = ratios
    result["goal_met"] = all(r >= GOAL_RATIO for r in ratios.values())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
