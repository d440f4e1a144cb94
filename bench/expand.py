#!/usr/bin/env python3
"""Benchmark: seconds from ``salt-run vcluster.expand`` to all nodes usable in Slurm.

Runs against the local stack (``scripts/stack.sh up`` first, as root) and
prints JSON. For N=1 and N=4, in ``dynamic`` membership and in ``static``
membership (the seeds' method: re-render slurm.conf everywhere, restart
slurmctld, reconfigure, resume; the baseline) in the same run, it reports:

* ``total``: ``salt-run`` started to every node idle in Slurm (the runner
  returns then);
* ``salt_run_startup``: ``salt-run`` started to the runner's own start
  (``salt/run/<jid>/new``): Salt's command line loading, the same for any
  runner and both modes;
* ``boot``: the provider's create call (the runner's "creating" progress
  event) to the last node's ``salt/minion/<id>/start``: instance creation
  and the guest's boot up to its minion;
* ``overhead``: the rest of the runner's time, all vcluster's: before boot
  the context, allocation and key generation; after it the node's
  highstate and joining Slurm;
* ``salt_run_exit``: the runner's return event (``salt/run/<jid>/ret``)
  to the end of the ``salt-run`` process, part of ``overhead``: the
  command line's own end; ``last_ready_to_return``: the last node's
  ``ready`` event to the runner's return;
* ``cpu_busy``: CPU seconds the whole machine (guests included) spent
  during the expand, against ``cores`` times ``total`` available;
* ``timeline``: per node, seconds after the create call at which its minion
  started, its join began, its highstate returned and it was ready.

``static_over_dynamic`` compares totals, ``overhead_static_over_dynamic``
the overheads (the only part membership changes). ``burst`` gives, per mode,
the overhead of the largest N against N=1's (``overhead_ratio``; the goal of
a burst of 32 joins is at most 2x) and the per-node overhead.

``--memory`` sets the profile's memory (MiB) for the run (small containers
for a burst of 32: 24 GB of RAM hold 32 x 512 MiB), ``--lxd-parallel`` the
``lxd`` provider's ``parallel`` (containers created at once); ``max_per_request`` is
set to the largest count. Both go into the site pillar for the run, which is
restored byte for byte at the end. Each cell is also printed to stderr as
soon as it is measured (a later failure keeps the earlier cells). Static
membership pushes slurm.conf and restarts slurmctld per expand: for a burst
of 32 measure ``--modes dynamic`` (static at N=32 costs minutes and tells
nothing new).

With ``--repeat K`` every (mode, N) is measured K times, the modes taking
turns (dynamic, static, then static, dynamic, ...) so a drift of the
machine's speed hits both alike; each cell reports its sample of median
overhead, and ``samples`` lists every sample's overhead and total.

Every vcluster node of the stack is retired first (``stack.sh up`` leaves
two); the nodes are retired after each measurement. The site pillar's membership
keys are switched for the static runs and restored at the end.

Usage: /opt/vcluster/venv/bin/python bench/expand.py [--counts 1,4] [--profile htc] [--repeat 1]
       [--modes dynamic,static] [--memory MiB] [--lxd-parallel N]
       e.g. bench/expand.py --counts 1,8,32 --modes dynamic --memory 512
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import salt.config
import salt.utils.event
import yaml

SITE = pathlib.Path("/etc/vcluster/pillar/site.sls")


def salt_run(*args, timeout=1800):
    """The runner's return: the last JSON document (progress events come first)."""
    out = subprocess.run(["salt-run", "--out=json", *args], capture_output=True, text=True, timeout=timeout)
    decoder, text, pos, last = json.JSONDecoder(), out.stdout, 0, None
    while True:
        start = text.find("{", pos)
        if start < 0:
            break
        try:
            last, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
    return last if isinstance(last, dict) else {"result": False, "comment": (out.stdout + out.stderr)[-800:]}


class Watcher(threading.Thread):
    """Record the first time each interesting master event is seen."""

    def __init__(self, opts):
        super().__init__(daemon=True)
        self.opts = opts
        self.seen = {}
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self):
        with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True) as bus:
            self.ready.set()
            while not self.stop.is_set():
                event = bus.get_event(wait=0.5, full=True)
                if not event:
                    continue
                tag, data = event["tag"], event.get("data") or {}
                now = time.monotonic()
                m = re.match(r"salt/minion/([^/]+)/start$", tag)
                node = re.match(r"vcluster/node/([^/]+)/(joining|ready)$", tag)
                ret = re.match(r"salt/job/\d+/ret/([^/]+)$", tag)
                if m:
                    self.seen.setdefault(("start", m.group(1)), now)
                elif node:
                    self.seen.setdefault((node.group(2), node.group(1)), now)
                elif ret and data.get("fun") == "state.highstate":
                    self.seen.setdefault(("highstate", ret.group(1)), now)
                elif re.match(r"salt/run/\d+/new$", tag) and data.get("fun") == "runner.vcluster.expand":
                    self.seen.setdefault(("runner", "expand"), now)
                elif re.match(r"salt/run/\d+/ret$", tag) and data.get("fun") == "runner.vcluster.expand":
                    self.seen.setdefault(("runner", "ret"), now)
                elif re.match(r"salt/run/\d+/progress$", tag):
                    message = data.get("message") or (data.get("event") or {}).get("message") or ""
                    if message.startswith("creating "):
                        self.seen.setdefault(("creating", "expand"), now)


def set_membership(mode, sizing=None):
    """Set ``slurm:membership`` (states) and ``vcluster:membership`` (engine) together.

    ``sizing`` (a dict merged under ``vcluster:``) carries the run's profile
    memory and request limit.
    """
    site = yaml.safe_load(SITE.read_text()) or {}
    site.setdefault("slurm", {})["membership"] = mode
    vc = site.setdefault("vcluster", {})
    vc["membership"] = mode
    _merge(vc, sizing or {})
    SITE.write_text("# Written by scripts/stack.sh; membership set by bench/expand.py\n"
                    + yaml.safe_dump(site, default_flow_style=False))


def _merge(into, data):
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def highstate_controller(host):
    out = subprocess.run(["salt", "--timeout", "600", "--out=json", "--static", host, "state.apply", "slurm.controller,slurm.compute"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"state.apply slurm.controller,slurm.compute on {host} failed:\n{out.stdout[-2000:]}")


def cpu_seconds():
    """Busy CPU seconds of the whole machine so far (containers included): /proc/stat."""
    fields = pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measure(watcher, profile, count):
    watcher.seen.clear()  # names are reused between runs: only this run's events count
    t0, cpu0 = time.monotonic(), cpu_seconds()
    ret = salt_run("vcluster.expand", f"count={count}", f"profile={profile}")
    t1, cpu1 = time.monotonic(), cpu_seconds()
    if not ret.get("result"):
        raise SystemExit(f"expand failed: {ret.get('comment')}")
    names = sorted(ret["nodes"])
    starts = [watcher.seen.get(("start", n)) for n in names]
    runner = watcher.seen.get(("runner", "expand"))
    creating = watcher.seen.get(("creating", "expand"))
    returned = watcher.seen.get(("runner", "ret"))
    retire = salt_run("vcluster.retire", f"nodes={','.join(names)}", "force=True")
    if not retire.get("result"):
        raise SystemExit(f"retire failed: {retire.get('comment')}")
    if not (all(starts) and runner and creating):
        raise SystemExit(f"missed events of the expand: runner {runner}, creating {creating}, starts {starts}")
    boot = max(starts) - creating
    overhead = (t1 - runner) - boot
    # per node, seconds after the create call: minion start, join handler
    # started, highstate returned, node ready (where the bus showed them)
    timeline = {n: {kind: round(watcher.seen[(kind, n)] - creating, 2)
                    for kind in ("start", "joining", "highstate", "ready") if (kind, n) in watcher.seen}
                for n in names}
    return {
        "total": round(t1 - t0, 2),
        "salt_run_startup": round(runner - t0, 2),
        "boot": round(boot, 2),
        "overhead": round(overhead, 2),
        "overhead_before_boot": round(creating - runner, 2),
        "overhead_after_boot": round(t1 - max(starts), 2),
        "per_node_overhead": round(overhead / count, 2),
        # the runner's return event to salt-run's exit: the command line's
        # own end (it reads every event of the master bus meanwhile)
        "salt_run_exit": round(t1 - returned, 2) if returned else None,
        "last_ready_to_return": round(returned - max(watcher.seen[("ready", n)] for n in names), 2)
        if returned and all(("ready", n) in watcher.seen for n in names) else None,
        "cpu_busy": round(cpu1 - cpu0, 1),
        "cores": os.cpu_count(),
        "timeline": timeline,
    }


def retire_all():
    """Retire every vcluster node first: switching membership under live nodes of the
    other mode breaks their slurmd, and a static push goes to every node there is."""
    names = sorted(salt_run("vcluster.status").get("nodes") or {})
    if names:
        ret = salt_run("vcluster.retire", f"nodes={','.join(names)}", "force=True")
        if not ret.get("result"):
            raise SystemExit(f"could not retire {names}: {ret.get('comment')}")


def main():
    parser = argparse.ArgumentParser(description="expand benchmark (dynamic vs static membership)")
    parser.add_argument("--counts", default="1,4")
    parser.add_argument("--profile", default="htc")
    parser.add_argument("--modes", default="dynamic,static")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--memory", type=int, help="the profile's memory (MiB) for this run")
    parser.add_argument("--lxd-parallel", type=int,
                        help="the lxd provider's parallel (containers created at once) for this run")
    parser.add_argument("--host", default=subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip())
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    modes = args.modes.split(",")
    if args.repeat < 1 or not set(modes) <= {"dynamic", "static"}:
        parser.error("--repeat takes a whole number from 1; --modes a list of dynamic, static")

    sizing = {"limits": {"max_per_request": max(counts)}}
    if args.memory:
        if args.memory < 128:
            parser.error("--memory takes MiB, at least 128")
        sizing["profiles"] = {args.profile: {"memory": args.memory}}
    if args.lxd_parallel is not None:
        if args.lxd_parallel < 1:
            parser.error("--lxd-parallel takes a whole number from 1")
        sizing["providers"] = {"lxd": {"parallel": args.lxd_parallel}}
    original_site = SITE.read_text()

    opts = salt.config.client_config("/etc/salt/master")
    watcher = Watcher(opts)
    watcher.start()
    watcher.ready.wait(10)

    results = {"profile": args.profile, "memory": args.memory, "lxd_parallel": args.lxd_parallel,
               "unit": "seconds", "repeat": args.repeat,
               "modes": {}}
    samples = {mode: {n: [] for n in counts} for mode in modes}
    retire_all()
    try:
        for rep in range(args.repeat):
            for mode in (modes if rep % 2 == 0 else modes[::-1]):
                set_membership(mode, sizing)
                highstate_controller(args.host)
                for n in counts:
                    samples[mode][n].append(measure(watcher, args.profile, n))
                    cell = {k: v for k, v in samples[mode][n][-1].items() if k != "timeline"}
                    print(json.dumps({"mode": mode, "N": n, **cell}), file=sys.stderr, flush=True)
    finally:
        SITE.write_text(original_site)
        highstate_controller(args.host)
        watcher.stop.set()
    for mode in modes:
        results["modes"][mode] = {}
        for n in counts:
            runs = sorted(samples[mode][n], key=lambda r: r["overhead"])
            cell = dict(runs[(len(runs) - 1) // 2])  # the median (the lower one of an even count)
            if len(runs) > 1:
                cell["samples"] = [{"overhead": r["overhead"], "total": r["total"]} for r in samples[mode][n]]
            results["modes"][mode][f"N={n}"] = cell

    def ratio(key):
        if not {"static", "dynamic"} <= set(modes):
            return None
        return {f"N={n}": round(results["modes"]["static"][f"N={n}"][key] / results["modes"]["dynamic"][f"N={n}"][key], 2)
                for n in counts}

    results["static_over_dynamic"] = ratio("total")
    results["overhead_static_over_dynamic"] = ratio("overhead")
    results["burst"] = {}
    if len(counts) > 1 and min(counts) == 1:
        top = max(counts)
        for mode in modes:
            one, big = results["modes"][mode]["N=1"], results["modes"][mode][f"N={top}"]
            results["burst"][mode] = {
                "counts": f"N={top} / N=1",
                "overhead_ratio": round(big["overhead"] / one["overhead"], 2) if one["overhead"] > 0 else None,
                "total_ratio": round(big["total"] / one["total"], 2),
                "per_node_overhead": {f"N={n}": results["modes"][mode][f"N={n}"]["per_node_overhead"]
                                      for n in counts},
            }
    results["goals"] = {
        "burst_overhead_ratio_at_most_2x": {m: v["overhead_ratio"] for m, v in results["burst"].items()},
        "overhead_one_node_at_most_5s": results["modes"].get("dynamic", {}).get("N=1", {}).get("overhead"),
        "dynamic_at_least_5x_faster_than_static": {"total": results["static_over_dynamic"],
                                                   "overhead": results["overhead_static_over_dynamic"]},
    }
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
