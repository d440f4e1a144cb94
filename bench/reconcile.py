#!/usr/bin/env python3
"""Registry allocation rate and reconcile time at scale; prints one JSON object.

``registry_allocations``: 8 writer processes allocate one node at a time from
one pool in one SQLite file (bench/registry_alloc.py's measurement, reused),
against the naive read-then-write baseline in the same run. Goal: >= 1000
allocations/s with zero duplicate names or addresses.

``reconcile``: :func:`vcluster.reconcile.reconcile` over a real registry file
of 10,000 nodes (``ready``, each with an instance, key and Slurm node) plus a
few of every orphan kind, against in-memory provider / key store / Slurm
views (no API latency: the time is vcluster's own). Baseline in the same
run: the naive per-node reconcile (one provider GET, one key lookup and one
Slurm lookup per node, one registry lookup per instance). API calls are
counted for both, and the time the calls would cost at 1 ms each (a fast
local API) is projected. Goal: reconcile under 2 s.
"""

import argparse
import importlib.util
import ipaddress
import json
import os
import pathlib
import sys
import tempfile
import time

from vcluster import reconcile as _reconcile
from vcluster.context import Context
from vcluster.policy import load
from vcluster.providers.base import Instance, Provider, Status
from vcluster.registry import Registry

GOAL_SECONDS = 2.0
API_CALL_SECONDS = 0.001  # projection only: a fast local API round trip


def _registry_alloc():
    path = pathlib.Path(__file__).with_name("registry_alloc.py")
    spec = importlib.util.spec_from_file_location("bench_registry_alloc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Views:
    """In-memory provider, key store and Slurm, each counting its calls."""

    class Prov(Provider):
        driver = "memory"

        def __init__(self):
            super().__init__("sim", {})
            self.instances = {}

        def create(self, specs):
            raise NotImplementedError

        def delete(self, instance_ids):
            self.calls["delete"] += 1
            return [i for i in instance_ids if self.instances.pop(i, None)]

        def list(self, cluster):
            self.calls["list"] += 1
            return [i for i in self.instances.values() if i.tags.get("cluster") == cluster]

        def get(self, instance_id):
            self.calls["get"] += 1
            return self.instances.get(instance_id)

    class Keys:
        def __init__(self):
            self.keys, self.calls = set(), 0

        def accepted(self):
            self.calls += 1
            return set(self.keys)

        def all(self):
            self.calls += 1
            return dict.fromkeys(self.keys, "accepted")

        def has(self, name):
            self.calls += 1
            return name in self.keys

        def delete(self, name):
            self.calls += 1
            self.keys.discard(name)

    class Slurm:
        def __init__(self):
            self.nodes_, self.calls = {}, 0

        def nodes(self):
            self.calls += 1
            return list(self.nodes_.values())

        def node(self, name):
            self.calls += 1
            return self.nodes_.get(name)

        def jobs(self, nodes=None):
            self.calls += 1
            return []

        def delete_node(self, name):
            self.calls += 1
            self.nodes_.pop(name, None)

        def update_node(self, name, state, reason=None):
            self.calls += 1

    class Bus:
        def __init__(self):
            self.fired = 0

        def fire(self, tag, data):
            self.fired += 1

        def progress(self, message, **data):
            pass


def build(tmp, size, orphans):
    """A registry of ``size`` ready nodes and views that agree, plus ``orphans`` of each kind."""
    base = int(ipaddress.IPv4Address("10.128.0.10"))
    pillar = {
        "cluster": "bench", "controller": "ctl", "master": "10.127.0.1",
        "pools": {"big": {"names": f"bn[00000-{size + 4 * orphans - 1:05d}]",
                          "addresses": f"{ipaddress.IPv4Address(base)}-"
                                       f"{ipaddress.IPv4Address(base + size + 4 * orphans - 1)}",
                          "prefix": 9}},
        "providers": {"sim": {"driver": "lxd", "network": "x", "storage_pool": "y"}},
        "profiles": {"htc": {"image": "img"}},
        "limits": {"max_nodes": size + 4 * orphans, "max_per_request": size},
    }
    policy = load(pillar)
    reg = Registry(os.path.join(tmp, "registry.sqlite"))
    nodes = reg.allocate(policy.pools["big"], "htc", "sim", size, "bench", membership="dynamic")
    # setup only: one statement instead of 30,000 transitions
    reg._db.execute("UPDATE nodes SET state = 'ready', instance_id = 'i-' || name, updated = ?",
                    (time.time() - 3600,))
    prov, keys, slurm = Views.Prov(), Views.Keys(), Views.Slurm()
    for n in nodes:
        prov.instances["i-" + n.name] = Instance(id="i-" + n.name, name=n.name, status=Status.RUNNING,
                                                 tags={"cluster": "bench", "node": n.name, "registry_id": "bench"})
        keys.keys.add(n.name)
        slurm.nodes_[n.name] = {"name": n.name, "state": ["IDLE"], "dynamic": True}
    spare = [f"bn{i:05d}" for i in range(size, size + 4 * orphans)]
    for i in range(orphans):
        name = spare[i]
        prov.instances["stray-" + name] = Instance(id="stray-" + name, name=name, status=Status.RUNNING,
                                                   tags={"cluster": "bench", "node": name})
        keys.keys.add(spare[orphans + i])
        slurm.nodes_[spare[2 * orphans + i]] = {"name": spare[2 * orphans + i], "state": ["IDLE"], "dynamic": True}
        del prov.instances["i-" + nodes[i].name]  # node without instance (a ready node: retired)
    ctx = Context(policy=policy, registry=reg, keys=keys, slurm=slurm, salt=None, events=Views.Bus())
    ctx._providers["sim"] = prov
    return ctx


def naive(ctx):
    """Per-node lookups: what a first reconcile often looks like."""
    prov = ctx.provider("sim")
    found = {"orphan_instance": 0, "node_without_instance": 0, "orphan_key": 0, "orphan_slurm_node": 0}
    pool_names = ctx.policy.pools["big"].names
    for node in ctx.registry.nodes():
        if prov.get(node.instance_id) is None:
            found["node_without_instance"] += 1
    for inst in prov.list(ctx.policy.cluster):
        if ctx.registry.get(inst.tags["node"]) is None:
            found["orphan_instance"] += 1
    for name in pool_names:  # every name: its registry row, its key, its Slurm node
        node = ctx.registry.get(name)
        has_key = ctx.keys.has(name)
        snode = ctx.slurm.node(name)
        if node is None and has_key:
            found["orphan_key"] += 1
        if node is None and snode is not None:
            found["orphan_slurm_node"] += 1
    return found


def calls(ctx):
    prov = ctx.provider("sim")
    return sum(prov.calls.values()) + ctx.keys.calls + ctx.slurm.calls


def bench_reconcile(size, orphans):
    out = {"nodes": size, "orphans_per_kind": orphans}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = build(tmp, size, orphans)
        start = time.perf_counter()
        report = _reconcile.reconcile(ctx, apply=False)
        seconds = time.perf_counter() - start
        out["vcluster_report"] = {
            "seconds": round(seconds, 3), "api_calls": calls(ctx),
            "projected_seconds_with_api": round(seconds + calls(ctx) * API_CALL_SECONDS, 3),
            "found": {k: len(v) for k, v in report["report"].items()},
        }
        before = calls(ctx)
        start = time.perf_counter()
        applied = _reconcile.reconcile(ctx, apply=True)
        seconds = time.perf_counter() - start
        out["vcluster_apply"] = {
            "seconds": round(seconds, 3), "api_calls": calls(ctx) - before,
            "repairs": len(applied["repairs"]), "repair_errors": sum(1 for r in applied["repairs"] if "error" in r),
            "events": ctx.events.fired,
        }
        ctx.registry.close()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = build(tmp, size, orphans)
        start = time.perf_counter()
        found = naive(ctx)
        seconds = time.perf_counter() - start
        out["baseline_naive_per_node"] = {
            "seconds": round(seconds, 3), "api_calls": calls(ctx),
            "projected_seconds_with_api": round(seconds + calls(ctx) * API_CALL_SECONDS, 3),
            "found": found,
        }
        ctx.registry.close()
    ours = out["vcluster_report"]
    out["goal"] = {"seconds": GOAL_SECONDS,
                   "met": ours["seconds"] < GOAL_SECONDS and out["vcluster_apply"]["repair_errors"] == 0
                   # every planted orphan found (the other kinds have none planted)
                   and all(ours["found"].get(k) == orphans for k in out["baseline_naive_per_node"]["found"])}
    return out


def bench_allocations(processes, per_process):
    mod = _registry_alloc()
    total = processes * per_process
    pool = mod.make_pool(total)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "alloc.sqlite")
        Registry(path).close()
        ours = mod.measure("vcluster", path, pool, processes, per_process)
        naive_path = os.path.join(tmp, "naive.sqlite")
        import sqlite3

        db = sqlite3.connect(naive_path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(mod.NAIVE_SCHEMA)
        db.close()
        baseline = mod.measure("naive", naive_path, pool, processes, per_process)
    dups = ours["duplicate_names"] + ours["duplicate_addresses"]
    return {
        "processes": processes, "allocations_per_process": per_process,
        "vcluster": ours, "baseline_naive": baseline,
        "goal": {"allocations_per_second": mod.GOAL_PER_SECOND, "duplicates": 0,
                 "met": ours["allocations_per_second"] >= mod.GOAL_PER_SECOND and dups == 0
                 and ours["rows"] == total and ours["failed_processes"] == 0},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--orphans", type=int, default=10)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--per-process", type=int, default=250)
    args = parser.parse_args(argv)
    report = {
        "bench": "reconcile",
        "cpus": os.cpu_count(),
        "registry_allocations": bench_allocations(args.processes, args.per_process),
        "reconcile": bench_reconcile(args.nodes, args.orphans),
    }
    report["goal_met"] = report["registry_allocations"]["goal"]["met"] and report["reconcile"]["goal"]["met"]
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
