"""An admin's day one on the real stack: status, test=True, history and metrics.

Real master, controller minion, slurmctld/slurmd and an LXD node. Each
``test=True`` command is checked against what a change would touch: the
registry (read-only), the LXD containers, Slurm's nodes and jobs, the
master's minion keys and reconcile's schedule stamp, before and after.
Status with the controller's answer missing points the site pillar at a
controller id no minion has (nothing on the host is stopped), then puts
it back.
"""

import copy
import json
import re
import sqlite3
import subprocess

import pytest

from tests.integration.stack import POOL_PREFIX, job_states, sbatch, slurm, wait_jobs
from tests.unit.test_admin_day_one import parse_exposition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIVE = ("PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED", "STOPPED")


def registry_view(stack):
    db = sqlite3.connect(f"file:{stack.registry}?mode=ro", uri=True)
    try:
        nodes = [tuple(r) for r in db.execute(
            "SELECT name, state, reason, instance_id, host, address, updated FROM nodes ORDER BY id")]
        audit = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        jobs = [tuple(r) for r in db.execute("SELECT node, job_id FROM jobs ORDER BY node, job_id")]
    finally:
        db.close()
    return nodes, audit, jobs


def containers():
    out = subprocess.run(["lxc", "list", "--format", "json"], capture_output=True, text=True, check=True)
    return sorted((c["name"], c["status"]) for c in json.loads(out.stdout) if c["name"].startswith(POOL_PREFIX))


def slurm_view():
    out = slurm("scontrol", "-F", "show", "-o", "node")
    nodes = sorted(re.findall(r"NodeName=(\S+) .*?State=(\S+)", out))
    reasons = sorted(re.findall(r"NodeName=(\S+) .*?Reason=(.*?) \[", out))
    jobs = json.loads(slurm("squeue", "--json", "--states=all")).get("jobs", [])
    # jobs that hold or wait for nodes (ended ones leave squeue on their own after MinJobAge)
    return nodes, reasons, sorted((str(j["job_id"]), str(j["job_state"])) for j in jobs
                                  if str(j["job_state"]) in LIVE)


def keys(stack):
    ret = stack.master.salt_key_cli().run("--list", "all", "--out", "json")
    return json.dumps(ret.data, sort_keys=True)


def everything(stack):
    # (reconcile's schedule stamp is not compared: the master's engine runs a
    # scheduled reconcile whenever it is due; unit/test_admin_day_one.py checks
    # that test=True leaves the stamp alone)
    return {
        "registry": registry_view(stack),
        "containers": containers(),
        "slurm": slurm_view(),
        "keys": keys(stack),
    }


def table_rows(text, first_cell):
    """Rows of the table whose header starts with ``first_cell`` in Salt's table output."""
    rows = [re.split(r"\s*\|\s*", line.strip().strip("|").strip()) for line in text.splitlines()
            if line.strip().startswith("| ")]
    start = next(i for i, r in enumerate(rows) if r[0] == first_cell)
    return [r for r in rows[start:] if len(r) == len(rows[start])]


@pytest.fixture(scope="module")
def node(stack):
    ret = stack.run("vcluster.expand", "count=1", "profile=htc")
    assert ret.data["result"] is True, ret.data
    (name,) = ret.data["nodes"]
    return name


def test_status_lists_live_jobs_only_and_renders_as_a_table(stack, node):
    done = sbatch("-p", "htc", "-w", node, script="hostname")
    wait_jobs([done], timeout=120)
    running = sbatch("-p", "htc", "-w", node, script="sleep 300")
    wait_jobs([running], states=("RUNNING",), timeout=120)
    try:
        ret = stack.run("vcluster.status")
        assert ret.returncode == 0, ret.stdout
        mine = ret.data["nodes"][node]
        # squeue still lists the ended job with the node it ran on: not a job of the node any more
        assert job_states([done]) == {done: "COMPLETED"}
        assert mine["jobs"] == [int(running)], mine
        assert mine["instance_state"] == "running" and mine["state"] == "ready"
        assert ret.data["unknown"] == [] and ret.data["result"] is True

        table = stack.run("vcluster.status", "--out=table")
        assert table.returncode == 0, table.stderr
        rows = table_rows(table.stdout, "NODE")
        assert rows[0] == ["NODE", "STATE", "SLURM", "INSTANCE", "JOBS", "ADDRESS", "PROFILE", "HOST", "REASON"]
        row = next(r for r in rows if r[0] == node)
        assert row[1] == "ready" and row[2] in ("ALLOCATED", "MIXED") and row[3] == f"{node} (running)"
        assert row[4] == running
        assert "TypeError" not in table.stdout + table.stderr

        # retire test=True on a busy node: what a user reads, and nothing changes
        before = everything(stack)
        ret = stack.run("vcluster.retire", f"nodes={node}", "test=True")
        assert ret.returncode == 0 and ret.data["result"] is None, ret.data
        assert ret.data["comment"] == (
            f"would retire 1 node(s): would drain {node} and wait up to 600 s for its job(s) {running} to end, "
            f"then delete instance {node} and release it")
        ret = stack.run("vcluster.shrink", "count=1", "profile=htc", "force=True", "test=True")
        assert ret.data["result"] is None, ret.data
        assert ret.data["nodes"] == {node: f"would drain {node}, requeue its job(s) {running}, then delete "
                                           f"instance {node} and release it"}
        assert everything(stack) == before
    finally:
        slurm("scancel", running)
    # the jobs of this test, counted after: one ran to its end, the other was cancelled by the test alone
    assert wait_jobs([done, running], states=("COMPLETED", "CANCELLED"), timeout=120) == {
        done: "COMPLETED", running: "CANCELLED"}


def test_status_says_plainly_when_slurm_could_not_be_asked(stack, node):
    real, saved = stack.controller_id, copy.deepcopy(stack.site_extra)
    stack.site_extra = dict(saved, vcluster=dict(saved.get("vcluster", {}), controller="vct-no-such-controller"))
    stack.write_site_pillar()
    try:
        ret = stack.run("vcluster.status", timeout=180)
        assert ret.returncode == 1, ret.stdout
        assert ret.data["result"] is False and ret.data["unknown"] == ["slurm"], ret.data
        assert ret.data["nodes"][node]["slurm"] == "unknown" and ret.data["nodes"][node]["jobs"] is None
        assert ret.data["nodes"][node]["instance_state"] == "running"  # the provider was asked
        assert ret.data["comment"] == (
            "1 node(s); Slurm could not be asked (the Slurm controller's minion vct-no-such-controller did not "
            "answer slurm.nodes): Slurm state and jobs are unknown")
        table = stack.run("vcluster.status", "--out=table", timeout=180)
        row = next(r for r in table_rows(table.stdout, "NODE") if r[0] == node)
        assert row[2] == "unknown" and row[4] == "unknown"
        assert "Slurm could not be asked" in " ".join(table.stdout.split())
    finally:
        stack.site_extra = saved
        stack.write_site_pillar()
    assert stack.controller_id == real
    assert stack.run("vcluster.status").data["nodes"][node]["slurm"] != "unknown"


def test_every_changing_command_has_a_dry_run_that_changes_nothing(stack, node):
    before = everything(stack)
    other = "tnode16"
    checks = [
        (("vcluster.retire", f"nodes={node}", "test=True"),
         f"would retire 1 node(s): would drain {node} (no job runs on it), delete instance {node} and release it"),
        (("vcluster.shrink", "count=1", "profile=htc", "test=True"),
         f"would retire 1 node(s): would drain {node} (no job runs on it), delete instance {node} and release it"),
        (("vcluster.suspend", f"nodes={node}", "test=True"),
         f"would suspend 1 of 1 node(s): would drain {node}, suspend no job (none runs) and suspend its "
         f"instance {node} (provider lxd)"),
        (("vcluster.resume", f"nodes={node}", "test=True"),
         f"would resume 0 of 1 node(s): {node} is already ready; it would be left as it is"),
        (("vcluster.migrate", f"node={node}", "host=elsewhere", "test=True"),
         f"would move {node} (ready, instance {node}) from "),
        (("vcluster.reconcile", "apply=True", "test=True"), "0 inconsistency(ies) found; nothing would be repaired"),
    ]
    for args, said in checks:
        ret = stack.run(*args)
        assert ret.returncode == 0, (args, ret.stdout)
        assert ret.data["comment"].startswith(said), (args, ret.data)
        assert ret.data.get("test") is True, (args, ret.data)
        assert everything(stack) == before, args
    ret = stack.run("vcluster.liveness", "test=True")
    assert ret.returncode == 0 and ret.data["result"] in (True, None), ret.data
    assert everything(stack) == before
    # validation comes first, in one sentence, in test mode too
    ret = stack.run("vcluster.retire", f"nodes={other}", "test=True")
    assert ret.returncode == 1 and ret.data["comment"] == f"nodes must be vcluster nodes; '{other}' is not in the registry"
    ret = stack.run("vcluster.suspend", f"nodes={node}", "test=sometimes")
    assert ret.returncode == 1 and ret.data["comment"].startswith("test must be"), ret.data

    # a suspended node: resume test=True leaves it frozen with its job map
    assert stack.run("vcluster.suspend", f"nodes={node}").data["result"] is True
    frozen = everything(stack)
    assert dict(frozen["containers"])[node] == "Frozen"
    ret = stack.run("vcluster.resume", f"nodes={node}", "test=True")
    assert ret.data["result"] is None and ret.data["comment"].startswith(
        f"would resume 1 of 1 node(s): would resume the instance {node} of {node}, wait up to "), ret.data
    assert everything(stack) == frozen
    assert stack.run("vcluster.resume", f"nodes={node}", timeout=300).data["result"] is True


def test_history_after_expand_and_retire_and_metrics(stack, node, tmp_path):
    prom = tmp_path / "textfile" / "vcluster.prom"
    prom.parent.mkdir()
    ret = stack.run("vcluster.metrics", f"path={prom}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.data
    fams = parse_exposition(prom.read_text())
    ready = fams["vcluster_nodes"][1][("vcluster_nodes", (("profile", "htc"), ("state", "ready")))]
    assert ready == 1
    assert fams["vcluster_expand_duration_seconds"][1][
        ("vcluster_expand_duration_seconds_count", (("profile", "htc"),))] >= 1
    assert fams["vcluster_suspended_seconds_total"][1][
        ("vcluster_suspended_seconds_total", (("profile", "htc"),))] > 0  # the suspend of the test before

    assert stack.run("vcluster.retire", f"nodes={node}").data["result"] is True
    ret = stack.run("vcluster.history", f"node={node}", "limit=10")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.data
    moves = [(e["from"], e["to"]) for e in ret.data["events"]]
    assert moves == [
        ("allocated", "booting"), ("booting", "joining"), ("joining", "ready"), ("ready", "suspending"),
        ("suspending", "suspended"), ("suspended", "resuming"), ("resuming", "ready"), ("ready", "draining"),
        ("draining", "retiring"), ("retiring", "released"),
    ], moves
    assert ret.data["comment"] == f"10 transition(s) of node {node} (the newest 10; raise limit for more)"
    table = stack.run("vcluster.history", f"node={node}", "since=1h", "--out=table")
    assert table.returncode == 0, table.stderr
    rows = table_rows(table.stdout, "TIME")
    assert rows[0] == ["TIME", "NODE", "FROM", "TO", "ACTOR", "REASON"]
    assert rows[-1][1:] == [node, "retiring", "released", "vcluster", "retired"]
    assert [node, "-", "allocated"] in [r[1:4] for r in rows]

    ret = stack.run("vcluster.metrics")
    fams = parse_exposition(ret.data["metrics"])
    assert fams["vcluster_nodes"][1][("vcluster_nodes", (("profile", "htc"), ("state", "ready")))] == 0
    bad = stack.run("vcluster.metrics", "path=relative.prom")
    assert bad.returncode == 1 and bad.data["comment"].startswith("path must be an absolute file path")
