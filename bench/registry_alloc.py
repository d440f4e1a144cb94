#!/usr/bin/env python3
"""Concurrent allocation benchmark of the registry; prints one JSON object.

8 writer processes (default) each allocate one node at a time from one pool
in one SQLite file, started together on a barrier. Measured twice in the same
run:

- ``vcluster``: ``Registry.allocate`` (one ``BEGIN IMMEDIATE`` transaction per
  allocation);
- ``baseline_naive``: the same lowest-free-name/address choice done as a
  read-then-write in autocommit mode (SELECT, then INSERT, no write lock held
  in between, no unique index), the way a first attempt often looks.

Goal: >= 1000 allocations/s with zero duplicate names or addresses.
"""

import argparse
import collections
import ipaddress
import json
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time

from vcluster.policy import Pool
from vcluster.registry import Registry

GOAL_PER_SECOND = 1000


def make_pool(size):
    base = int(ipaddress.IPv4Address("10.200.0.1"))
    return Pool(
        name="bench",
        names=tuple(f"bn{i:05d}" for i in range(size)),
        addresses=tuple(str(ipaddress.IPv4Address(base + i)) for i in range(size)),
        prefix=16,
    )


def run_vcluster(path, pool, count, barrier, results, options):
    reg = Registry(path, **options)
    barrier.wait()
    for i in range(count):
        reg.allocate(pool, "bench", "none", 1, f"{os.getpid()}-{i}")
    results.put(time.monotonic())
    reg.close()


NAIVE_SCHEMA = "CREATE TABLE IF NOT EXISTS naive (name TEXT, address TEXT, state TEXT)"


def run_naive(path, pool, count, barrier, results, options):
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    barrier.wait()
    for _ in range(count):
        rows = db.execute("SELECT name, address FROM naive WHERE state != 'released'").fetchall()
        names = {r[0] for r in rows}
        addresses = {r[1] for r in rows}
        name = next(n for n in pool.names if n not in names)
        address = next(a for a in pool.addresses if a not in addresses)
        db.execute("INSERT INTO naive VALUES (?, ?, 'allocated')", (name, address))
    results.put(time.monotonic())
    db.close()


def measure(kind, path, pool, processes, per_process, options=None):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    target = run_vcluster if kind == "vcluster" else run_naive
    args = (path, pool, per_process, barrier, results, options or {})
    procs = [ctx.Process(target=target, args=args) for _ in range(processes)]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.monotonic()
    ends = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    seconds = max(ends) - start
    table, where = ("nodes", "state != 'released'") if kind == "vcluster" else ("naive", "1")

    db = sqlite3.connect(path)
    rows = db.execute(f"SELECT name, address FROM {table} WHERE {where}").fetchall()
    db.close()
    total = processes * per_process
    names = collections.Counter(r[0] for r in rows)
    addresses = collections.Counter(r[1] for r in rows)
    return {
        "allocations": total,
        "rows": len(rows),
        "seconds": round(seconds, 4),
        "allocations_per_second": round(total / seconds, 1),
        "duplicate_names": sum(n - 1 for n in names.values() if n > 1),
        "duplicate_addresses": sum(n - 1 for n in addresses.values() if n > 1),
        "failed_processes": len(failed),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--per-process", type=int, default=250)
    parser.add_argument(
        "--no-variants", dest="variants", action="store_false", help="skip the lock-file and fsync variants"
    )
    parser.add_argument("--dir", default=None, help="directory for the SQLite files (default: a temp dir)")
    args = parser.parse_args(argv)
    total = args.processes * args.per_process
    pool = make_pool(total)
    variants = {
        "vcluster": {},
        # the same without the flock queue: SQLite's own sleep-and-retry busy handler
        "vcluster_sqlite_busy_handler_only": {"lock_file": False},
        # the same with an fsync per commit (synchronous=FULL)
        "vcluster_fsync_every_commit": {"synchronous": "FULL"},
    }
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for label, options in variants.items():
            if label != "vcluster" and not args.variants:
                continue
            path = os.path.join(tmp, f"{label}.sqlite")
            Registry(path, **options).close()  # schema created once, outside the timing
            results[label] = measure("vcluster", path, pool, args.processes, args.per_process, options)
            results[label]["options"] = options
        naive_path = os.path.join(tmp, "naive.sqlite")
        db = sqlite3.connect(naive_path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(NAIVE_SCHEMA)
        db.close()
        naive = measure("naive", naive_path, pool, args.processes, args.per_process)
    ours = results["vcluster"]
    duplicates = ours["duplicate_names"] + ours["duplicate_addresses"]
    report = {
        "bench": "registry_alloc",
        "processes": args.processes,
        "allocations_per_process": args.per_process,
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        **results,
        "baseline_naive": naive,
        "goal": {
            "allocations_per_second": GOAL_PER_SECOND,
            "duplicates": 0,
            "met": ours["allocations_per_second"] >= GOAL_PER_SECOND
            and duplicates == 0
            and ours["rows"] == total
            and ours["failed_processes"] == 0,
        },
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report["goal"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
