"""Bad input is refused before any side effect; failed joins leave nothing.

Every call goes through the real ``salt-run`` against the real master; after
each refusal the registry, the LXD instances and the accepted keys are
exactly as before.
"""

import subprocess
import time

import pytest
from saltfactories.exceptions import FactoryNotStarted

pytestmark = [pytest.mark.integration]


def snapshot(stack):
    """What an expand or retire could have changed."""
    keys = stack.master.salt_key_cli().run("--list", "all", "--out", "json").data
    lxd = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True, check=True)
    status = stack.run("vcluster.status").data
    return {
        "keys": {k: sorted(v) for k, v in keys.items() if isinstance(v, list)},
        # only this stack's pools: other LXD users may come and go
        "instances": sorted(n for n in lxd.stdout.split() if n.startswith(("tnode", "tbad"))),
        "nodes": sorted(status["nodes"]),
    }


INVALID = [
    # (runner, args, a word the one-sentence error must contain)
    ("vcluster.expand", ["count=0", "profile=htc"], "count"),
    ("vcluster.expand", ["count=-3", "profile=htc"], "-3"),
    ("vcluster.expand", ["count=abc", "profile=htc"], "abc"),
    ("vcluster.expand", ["count=1.5", "profile=htc"], "1.5"),
    ("vcluster.expand", ["count=True", "profile=htc"], "True"),
    ("vcluster.expand", ["count=1000", "profile=htc"], "max_per_request"),
    ("vcluster.expand", ["count=1", "profile=nope"], "nope"),
    ("vcluster.expand", ["count=1"], "profile"),
    ("vcluster.expand", ["profile=htc"], "count"),
    ("vcluster.expand", ["count=1", "profile=htc", "test=maybe"], "maybe"),
    ("vcluster.expand", ["count=1", "profile=htc", "wait=later"], "later"),
    ("vcluster.plan", ["count=x", "profile=htc"], "'x'"),
    ("vcluster.plan", ["count=1", "profile=ghost"], "ghost"),
    ("vcluster.retire", ["nodes=tnode[01-"], "tnode[01-"),
    ("vcluster.retire", ["nodes=tnode09"], "tnode09"),
    ("vcluster.retire", [], "nodes"),
    ("vcluster.retire", ["nodes="], "nodes"),
    ("vcluster.retire", ["nodes=tnode01", "force=perhaps"], "perhaps"),
    ("vcluster.retire", ["nodes=tnode01", "wait=-5"], "-5"),
    ("vcluster.retire", ["nodes=tnode01", "wait=soon"], "soon"),
    ("vcluster.shrink", ["count=0", "profile=htc"], "count"),
    ("vcluster.shrink", ["count=two", "profile=htc"], "two"),
    ("vcluster.shrink", ["count=1", "profile=nope"], "nope"),
    ("vcluster.retire", ["nodes=vm"], "vm"),
]


@pytest.fixture(scope="module")
def before(stack):
    return snapshot(stack)


@pytest.mark.parametrize(("fun", "args", "word"), INVALID, ids=[f"{f}:{' '.join(a)}" for f, a, _ in INVALID])
def test_invalid_input_is_refused_and_changes_nothing(stack, before, fun, args, word):
    ret = stack.run(fun, *args)
    assert ret.returncode != 0, ret.stdout
    assert ret.data["result"] is False, ret.data
    comment = ret.data["comment"]
    assert word in comment, comment
    assert "\n" not in comment.strip(), "one sentence, one line"
    assert "Traceback" not in ret.stdout
    assert snapshot(stack) == before


def test_expand_test_mode_changes_nothing(stack, before):
    ret = stack.run("vcluster.expand", "count=2", "profile=htc", "test=True")
    assert ret.data["result"] is None, ret.data
    assert len(ret.data["nodes"]) == 2
    assert snapshot(stack) == before


def test_failed_highstate_releases_everything(stack, before):
    """A node whose highstate fails is failed, deleted, its key and name freed."""
    ret = stack.run("vcluster.expand", "count=1", "profile=broken")
    assert ret.returncode != 0
    assert ret.data["result"] is False, ret.data
    (name,) = ret.data["nodes"]
    assert ret.data["nodes"][name]["state"] == "released"
    assert "highstate failed" in ret.data["comment"], ret.data["comment"]
    assert "munge" in ret.data["comment"], ret.data["comment"]
    assert snapshot(stack) == before
    # the name is free again: a plan hands it out
    plan = stack.run("vcluster.plan", "count=1", "profile=broken").data
    assert list(plan["nodes"]) == [name]
    # the join started waiting for the node's registration before its
    # highstate; the failed join stopped that wait on the controller's minion
    running = stack.call("saltutil.running").data or []
    assert not [j for j in running if j.get("fun") == "slurm.wait_node_state" and name in j.get("arg", [])], running


def test_unknown_minion_start_is_ignored(stack, event_listener, before):
    """A minion the admin accepted but vcluster did not create is left alone."""
    stack.admin_accepts.add("intruder")
    start = time.time()
    minion = stack.master.salt_minion_daemon("intruder", overrides={
        "master": stack.network["gateway"], "disable_modules": ["systemd_service"],
    })
    with minion.started(start_timeout=120):
        events = event_listener.wait_for_events(
            [(stack.master_id, "salt/run/*/ret")], after_time=start, timeout=60
        )
    rets = [e.data.get("return") for e in events.matches
            if e.data.get("fun") == "runner.vcluster.on_minion_start"]
    assert any(r and r.get("ignored") and "intruder" in r.get("comment", "") for r in rets), rets
    stack.master.salt_key_cli().run("--yes", "--delete", "intruder")
    assert snapshot(stack) == before


def test_minion_with_unaccepted_key_for_a_pool_name_is_not_joined(stack, before):
    """A minion claiming a pool name without its pre-accepted key stays out."""
    minion = stack.master.salt_minion_daemon("tnode09", overrides={"master": stack.network["gateway"]})
    with pytest.raises(FactoryNotStarted):
        minion.start(start_timeout=20, max_start_attempts=1)
    minion.terminate()
    keys = stack.master.salt_key_cli().run("--list", "all", "--out", "json").data
    assert "tnode09" not in keys.get("minions", [])
    assert "tnode09" in keys.get("minions_pre", [])
    stack.master.salt_key_cli().run("--yes", "--delete", "tnode09")
    assert snapshot(stack) == before
