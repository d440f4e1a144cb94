"""Concurrent expands and retires: four salt-run processes at once, no double allocation or deletion.

Each ``salt-run`` is its own process with its own registry connection; they
meet only in the SQLite file (allocation is one ``BEGIN IMMEDIATE``
transaction, transitions are compare-and-set), on the master's event bus and
in LXD.
"""

import collections
import concurrent.futures
import sqlite3
import subprocess

import pytest

from tests.integration.stack import node_info, sbatch, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def lxd_names(prefix="tnode"):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True, check=True)
    return sorted(n for n in out.stdout.split() if n.startswith(prefix))


def accepted(stack):
    ret = stack.master.salt_key_cli().run("--list", "accepted", "--out", "json")
    return {k for k in ret.data.get("minions", []) if k.startswith("tnode")}


def test_four_concurrent_expands_of_three_then_concurrent_retires(stack):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rets = list(pool.map(lambda _: stack.run("vcluster.expand", "count=3", "profile=htc").data, range(4)))
    for ret in rets:
        assert ret["result"] is True, ret
    nodes = {}
    for ret in rets:
        for name, info in ret["nodes"].items():
            assert name not in nodes, f"{name} handed out twice"
            nodes[name] = info
    assert len(nodes) == 12
    addresses = [v["address"] for v in nodes.values()]
    assert len(set(addresses)) == 12, addresses
    assert all(v["state"] == "ready" for v in nodes.values())
    names = sorted(nodes)
    assert lxd_names() == names
    assert accepted(stack) == set(names)
    for name in names:
        info = node_info(name)
        assert info is not None and info["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED"), (name, info)
    # each container really has the address the registry gave it
    for name in names:
        out = subprocess.run(["lxc", "list", name, "--format", "csv", "-c", "4"], capture_output=True, text=True,
                             check=True).stdout
        assert nodes[name]["address"] in out, (name, out)

    jobs = [sbatch("-p", "htc", "-w", name) for name in names]
    assert set(wait_jobs(jobs, timeout=240).values()) == {"COMPLETED"}

    # retire all at once: 4 processes of 3 nodes, plus a reconcile applying in between
    groups = [names[i::4] for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(lambda g: stack.run("vcluster.retire", f"nodes={','.join(g)}").data, g)
                   for g in groups]
        recon = pool.submit(lambda: stack.run("vcluster.reconcile", "apply=True").data)
        rets = [f.result() for f in futures]
        recon = recon.result()
    for ret in rets:
        assert ret["result"] is True, ret
    assert not [r for r in recon.get("repairs", []) if r.get("error")], recon

    assert lxd_names() == []
    assert accepted(stack) == set()
    assert all(node_info(n) is None for n in names)
    db = sqlite3.connect(str(stack.registry))
    try:
        rows = db.execute("SELECT name, state FROM nodes WHERE name IN (%s)" % ",".join("?" * len(names)),
                          names).fetchall()
        releases = collections.Counter(r[0] for r in db.execute(
            "SELECT node FROM audit WHERE to_state = 'released' AND node IN (%s)" % ",".join("?" * len(names)),
            names))
    finally:
        db.close()
    assert {state for _, state in rows} == {"released"}
    # one release per node row: nobody released (deleted) a node twice
    per_row = collections.Counter(name for name, _ in rows)
    assert all(releases[n] == per_row[n] for n in names), (releases, per_row)
