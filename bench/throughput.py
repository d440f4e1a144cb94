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

First, ``slurmctld_only``: the same comparison on a throwaway slurmctld of
the test harness (one dynamic node of 2 CPUs in a network namespace, no
Salt), with the hook scripts rendered by the states (preemption of
``batch`` and a cloud profile on): Slurm's side of the cost alone. It needs
no stack and no lock (``--skip-stack`` runs only this part).

Usage (root; the stack's host-wide lock serialises it with tests)::

    /opt/vcluster/venv/bin/python bench/throughput.py [--tasks 40] [--repeat 2] [--skip-stack]
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
sys.path.insert(0, str(REPO))
GOAL_RATIO = 0.95


def _cell(tasks, seconds):
    rates = [round(tasks / s, 3) for s in seconds]
    return {"seconds": seconds, "jobs_per_second": rates, "median_jobs_per_second": round(statistics.median(rates), 3)}


def slurmctld_only(tasks, repeat):
    """hooks vs none on a harness slurmctld (real 22.05), the hooks rendered by the states."""
    import json as _json  # noqa: PLC0415
    import time  # noqa: PLC0415

    from tests.functional.test_cloud_render import CLOUD  # noqa: PLC0415
    from tests.functional.test_slurm_hooks_slurm import HookHarness  # noqa: PLC0415
    from tests.functional.test_states_render import ROLES, Sandbox, _merge  # noqa: PLC0415
    from tests.harness.slurm import SlurmHarness, unavailable  # noqa: PLC0415

    if unavailable():
        return {"error": unavailable()}
    root = pathlib.Path(tempfile.mkdtemp(prefix="vcbt", dir="/tmp"))
    spec = ROLES["controller"]
    site = _merge(spec["site"], {"vcluster": {"preemption": {"enabled": True, "partitions": ["batch"],
                                                             "preemptible": ["htc"]}},
                                 "vcluster_cloud": CLOUD, "slurm": {"membership": "cloud"}})
    box = Sandbox(root / "box", spec["id"], spec["grains"], site)
    sls = box.call("state.show_sls", "slurm.controller")
    paths = {}
    for sid, kind in (("slurm-events-prolog-managed", "prolog"), ("slurm-events-jobcomp-managed", "jobcomp")):
        ctx = {k: v for a in sls[sid]["file"] if isinstance(a, dict) for k, v in a.items()}["context"]
        dest = root / kind
        box.call("cp.get_template", "salt://slurm/files/slurmctld-event.sh.jinja", str(dest), "tplroot=slurm",
                 *[f"{k}={_json.dumps(v)}" for k, v in ctx.items()])
        text = dest.read_text().replace(ctx["spool"], str(root / "events"))
        dest.write_text(text.replace(ctx["power_dir"], str(root / "power")))
        dest.chmod(0o755)
        paths[kind] = dest
    modes = {"hooks": [f"PrologSlurmctld={paths['prolog']}", "JobCompType=jobcomp/script",
                       f"JobCompLoc={paths['jobcomp']}"], "none": []}
    samples = {m: [] for m in modes}
    SlurmHarness.purge_stale()
    for rep in range(repeat):
        for mode in (("hooks", "none") if rep % 2 == 0 else ("none", "hooks")):
            with HookHarness(extra_conf=modes[mode]) as h:
                h.add_node("bn1", cpus=2, memory=1000)
                started = time.monotonic()
                job = h.sbatch(wrap="sleep 1", mem=50, extra=[f"--array=1-{tasks}"])
                while h.run("squeue", "-h", "-j", str(job), "-o", "%T", check=False).stdout.split():
                    time.sleep(0.2)
                samples[mode].append(round(time.monotonic() - started, 2))
                done = h.run("squeue", "-h", "--states=all", "-j", str(job), "-o", "%T", check=False).stdout.split()
                if done.count("COMPLETED") != tasks:
                    return {"error": f"{mode}: {done.count('COMPLETED')} of {tasks} tasks COMPLETED"}
    lines = len((root / "events").read_text().splitlines()) if (root / "events").exists() else 0
    out = {m: _cell(tasks, samples[m]) for m in modes}
    out["events_written"] = lines
    out["hooks_over_none"] = round(out["hooks"]["median_jobs_per_second"] / out["none"]["median_jobs_per_second"], 3)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40, help="tasks per array (default 40)")
    parser.add_argument("--repeat", type=int, default=2, help="samples per mode and partition (default 2)")
    parser.add_argument("--skip-stack", action="store_true", help="slurmctld_only part only")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1:
        parser.error("--tasks and --repeat take a whole number from 1")
    result = {"benchmark": "throughput", "goal_hooks_over_none_at_least": GOAL_RATIO,
              "date": datetime.date.today().isoformat(), "machine": f"{platform.node()}, {os.cpu_count()} cores",
              "slurmctld_only": slurmctld_only(args.tasks, args.repeat)}
    if args.skip_stack:
        print(json.dumps(result, indent=2))
        return 0
    out = pathlib.Path(tempfile.mkdtemp(prefix="vcbench-")) / "throughput.json"
    env = dict(os.environ, VCLUSTER_BENCH_OUT=str(out), VCLUSTER_BENCH_TASKS=str(args.tasks),
               VCLUSTER_BENCH_REPEAT=str(args.repeat))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--show-capture=no",
           "tests/integration/test_throughput.py"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        result["error"] = "stack run failed: " + (proc.stdout.strip().splitlines() or ["no output"])[-1]
        print(json.dumps(result, indent=2))
        return 1
    data = json.loads(out.read_text())
    result.update(tasks=data["tasks"], task=data["task"], slots=data["slots"])
    ratios = {}
    for part in ("baremetal", "virtual"):
        cell = {mode: _cell(data["tasks"], data["seconds"][mode][part]) for mode in ("hooks", "none")}
        ratios[part] = round(cell["hooks"]["median_jobs_per_second"] / cell["none"]["median_jobs_per_second"], 3)
        result[part] = cell
    result["hooks_over_none"] = ratios
    result["goal_met"] = all(r >= GOAL_RATIO for r in ratios.values())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
