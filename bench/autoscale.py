#!/usr/bin/env python3
"""Benchmark: seconds from ``sbatch`` to the job RUNNING on a cloud node, cold and warm pool.

Runs against the local stack (``scripts/stack.sh up`` first, as root) and
prints JSON keyed by measurement (other benchmarks add their own keys to the
same file layout):

* ``sbatch_to_running_cold_pool``: a job on the cloud partition, no
  instance exists: Slurm's ResumeProgram -> Salt event -> vcluster creates
  the named node -> it boots, is highstated and registers -> the job runs;
* ``sbatch_to_running_warm_pool``: the same with the node kept suspended
  (warm pool: provider suspend after Slurm's SuspendProgram): vcluster
  thaws it and restarts its slurmd.

For the warm run the job is pinned with ``-w`` to the suspended node (Slurm
would otherwise pick any powered-down name of the partition). Each run is
repeated ``--repeat`` times; the JSON gives every sample, the median and
the minimum.

It also prints ``registry_allocations`` (8 concurrent writer processes;
goal at least 1000/s, zero duplicates) and ``reconcile`` (10,000 registry
entries; goal under 2 s), measured by bench/reconcile.py's code without the
stack; ``--no-stack`` prints only those two.

The site pillar (/etc/vcluster/pillar/site.sls) is switched to cloud
membership for the run (htc becomes a cloud profile with its own pool, a
warm pool of one node, a short SuspendTime) and restored at the end, and
the controller's Slurm states are re-applied both times. Every vcluster node
of the stack is retired first (the stack's own nodes would fill the warm
pool) and again at the end.

Usage: /opt/vcluster/venv/bin/python bench/autoscale.py [--repeat 1] [--suspend-time 30] [--no-stack]
"""

import argparse
import copy
import importlib.util
import json
import pathlib
import re
import statistics
import subprocess
import sys
import time

import yaml

SITE = pathlib.Path("/etc/vcluster/pillar/site.sls")


def sh(*cmd, check=True, timeout=600):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout


def salt_run(*args, timeout=900):
    out = sh("salt-run", "--out=json", *args, check=False, timeout=timeout)
    try:
        return json.loads(out[out.find("{"):]) if "{" in out else {}
    except json.JSONDecodeError:
        return {"result": False, "comment": out[-500:]}


def controller_id():
    site = yaml.safe_load(SITE.read_text()) or {}
    return site["vcluster"]["controller"]


def apply_controller(host):
    sh("salt", "--timeout", "600", "--static", host, "state.apply", "slurm.controller,slurm.compute", timeout=900)
    sh("salt", "--timeout", "120", "--static", host, "service.restart", "slurmctld", timeout=300)
    wait(lambda: "UP" in sh("scontrol", "ping", check=False), 60, "slurmctld")


def wait(predicate, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def job_state(job):
    out = sh("squeue", "-h", "-j", job, "-o", "%T %N", "--states=all", check=False).split()
    return (out[0], out[1] if len(out) > 1 else "") if out else ("GONE", "")


def registry_state(name):
    return (salt_run("vcluster.status").get("nodes") or {}).get(name, {}).get("state")


def powered_down(node):
    state = re.search(r"\bState=(\S+)", sh("scontrol", "show", "node", node, check=False))
    words = state.group(1).split("+") if state else []
    return "POWERED_DOWN" in words and "POWERING_DOWN" not in words


def retire_all():
    """Retire every vcluster node, warm-pool (suspended) ones included."""
    names = sorted(salt_run("vcluster.status").get("nodes") or {})
    if names:
        ret = salt_run("vcluster.retire", f"nodes={','.join(names)}", "force=True")
        if not ret.get("result"):
            raise RuntimeError(f"could not retire {names}: {ret.get('comment')}")


def cloud_site(site, suspend_time):
    site = copy.deepcopy(site)
    vc = site.setdefault("vcluster", {})
    vc["membership"] = "cloud"
    vc["pools"] = {
        "local": {"names": "vnode[001-032]", "addresses": "10.77.0.100-10.77.0.131", "gateway": "10.77.0.1"},
        "spare": {"names": "vnode[033-064]", "addresses": "10.77.0.132-10.77.0.163", "gateway": "10.77.0.1"},
    }
    vc["profiles"] = {"htc": {"join_timeout": 240}, "mem": {"pool": "spare", "membership": "dynamic"}}
    vc["power_save"] = {"suspend_time": suspend_time, "suspend_timeout": 30, "resume_timeout": 300}
    vc["autoscale"] = {"profiles": {"htc": {"warm_pool": 1}}}
    site.setdefault("slurm", {})["membership"] = "cloud"
    return site


def one_run(partition, pin=None, timeout=600):
    args = ["sbatch", "--parsable", "-p", partition, "-o", "/dev/null"]
    if pin:
        args += ["-w", pin]
    start = time.monotonic()
    job = sh(*args, "--wrap", "sleep 1").strip().split(";")[0]
    state, node = wait(lambda: (lambda s: s if s[0] in ("RUNNING", "COMPLETING", "COMPLETED") else None)(
        job_state(job)), timeout, f"job {job} running")
    seconds = time.monotonic() - start
    wait(lambda: job_state(job)[0] in ("COMPLETED", "GONE"), 120, f"job {job} done")
    return round(seconds, 2), node


def summary(samples, **extra):
    return dict(extra, samples=samples, median=round(statistics.median(samples), 2), min=min(samples),
                unit="seconds")


def registry_and_reconcile():
    """bench/reconcile.py's two measurements (no stack needed), under their own keys."""
    spec = importlib.util.spec_from_file_location("bench_reconcile", pathlib.Path(__file__).with_name("reconcile.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {"registry_allocations": mod.bench_allocations(8, 250), "reconcile": mod.bench_reconcile(10000, 10)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--suspend-time", type=int, default=30)
    parser.add_argument("--partition", default="htc")
    parser.add_argument("--no-stack", action="store_true",
                        help="only the registry and reconcile measurements (no stack needed)")
    args = parser.parse_args(argv)
    scale = registry_and_reconcile()
    if args.no_stack:
        json.dump(scale, sys.stdout, indent=2, sort_keys=True)
        return
    original = SITE.read_text()
    host = controller_id()
    cold, warm = [], []
    # the stack's own nodes would fill the warm pool first: start from none
    retire_all()
    try:
        SITE.write_text("# bench/autoscale.py (restored at the end)\n"
                        + yaml.safe_dump(cloud_site(yaml.safe_load(original) or {}, args.suspend_time)))
        apply_controller(host)
        for _ in range(args.repeat):
            retire_all()  # a cold sample needs an empty warm pool and no node up
            seconds, node = one_run(args.partition)
            cold.append(seconds)
            # idle for SuspendTime: SuspendProgram -> the node goes to the warm pool (frozen)
            wait(lambda node=node: registry_state(node) == "suspended", args.suspend_time + 180, f"{node} in the warm pool")
            # Slurm holds a node POWERING_DOWN for SuspendTimeout whatever the
            # provider did; a job pinned before that waits for it, not for vcluster
            wait(lambda node=node: powered_down(node), 180, f"{node} powered down")
            seconds, _ = one_run(args.partition, pin=node)
            warm.append(seconds)
            # let it go for good: no warm pool wanted after the last sample
        result = {
            "sbatch_to_running_cold_pool": summary(cold, membership="cloud", provider="lxd",
                                                   what="ResumeProgram, create, boot, highstate, register"),
            "sbatch_to_running_warm_pool": summary(warm, membership="cloud", provider="lxd",
                                                   what="ResumeProgram, thaw, slurmd restart, register"),
        }
        result.update(scale)
        result["warm_speedup"] = round(result["sbatch_to_running_cold_pool"]["median"]
                                       / max(0.01, result["sbatch_to_running_warm_pool"]["median"]), 2)
    finally:
        retire_all()  # under the cloud policy the nodes were made with
        SITE.write_text(original)
        apply_controller(host)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
