"""The salt-master dies in the middle of an expand; reconcile cleans up after the restart.

The expand runs as a real ``salt-run`` process. As soon as its instances are
created (registry ``booting``) but before they joined Slurm, the master and
the ``salt-run`` process are killed with SIGKILL: no clean-up code runs. The
master is started again, and ``vcluster.reconcile apply=True`` must leave no
orphan instance, key, Slurm node or name: every requested node is either
ready (it joined after the restart) or completely rolled back.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.integration.stack import node_info
from vcluster.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SALT_RUN = os.path.join(os.path.dirname(sys.executable), "salt-run")


def lxd_names(prefix="tnode"):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True, check=True)
    return sorted(n for n in out.stdout.split() if n.startswith(prefix))


def accepted(stack):
    ret = stack.master.salt_key_cli().run("--list", "accepted", "--out", "json")
    return {k for k in ret.data.get("minions", []) if k.startswith("tnode")}


def kill_tree(pid):
    """SIGKILL a process and all its children (a crash: no handler runs)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def held(stack, request=None):
    with Registry(stack.registry) as reg:
        return {n.name: n.state for n in reg.nodes(request_id=request)}


def created(stack):
    """Names whose instance the provider has created (the registry has its id)."""
    with Registry(stack.registry) as reg:
        return {n.name for n in reg.nodes() if n.instance_id}


@pytest.mark.parametrize("crash_at", ["booting", "joining"])
def test_master_killed_mid_expand_leaves_no_orphan(stack, crash_at):
    """``booting``: instances created, minions not yet joined (they join after the restart).
    ``joining``: the reactor's join handlers die with the master, mid-highstate.
    """
    before = set(held(stack))
    # booting: created, not joined yet (a fast minion may already be joining)
    wanted = ("booting", "joining") if crash_at == "booting" else ("joining", "ready")
    proc = subprocess.Popen(
        [SALT_RUN, f"--config-dir={stack.master.config_dir}", "vcluster.expand", "count=2", "profile=htc"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    killed = False
    try:
        deadline = time.monotonic() + 180
        while True:
            mine = {n: s for n, s in held(stack).items() if n not in before}
            # nodes are "booting" from just before the provider's create call:
            # crash only once both instances exist
            if (len(mine) == 2 and all(s in wanted for s in mine.values())
                    and (crash_at == "booting" or "joining" in mine.values()) and set(mine) <= created(stack)):
                break
            assert proc.poll() is None, f"expand ended before its nodes were {crash_at}: {mine}"
            assert time.monotonic() < deadline, mine
            time.sleep(0.2)
        # crash: the master (reactor, join handlers) and the expand process, no clean-up
        kill_tree(stack.master.pid)
        killed = True
        kill_tree(proc.pid)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        if killed or not stack.master.is_running():
            # whatever happens next, later tests need a master
            stack.master.terminate()  # reset the factory's bookkeeping of the dead process
            stack.master.start(start_timeout=120)
    names = sorted(mine)
    states_at_crash = dict(mine)
    assert set(lxd_names()) >= set(names), "instances were created before the crash"

    # the controller's minion reconnects by itself; reconcile needs it for Slurm.
    # A ping published before it reconnected is lost: asked again after 5 s
    # (a connected minion answers within a second), not after 30
    deadline = time.monotonic() + 120
    while not stack.master.salt_cli(timeout=5).run("test.ping", minion_tgt=stack.controller_id).data:
        assert time.monotonic() < deadline, "controller minion did not reconnect"
        time.sleep(1)

    # Give joins that the restarted reactor picks up a chance (a minion that
    # connects only now fires its start event now), then undo whatever is
    # still interrupted: grace=0 after a known crash. A join whose handler
    # died with the master is not waited for: nothing will finish it.
    waiting = ("allocated", "booting", "joining") if crash_at == "booting" else ("allocated", "booting")
    deadline = time.monotonic() + 150
    while any(s in waiting for s in held(stack).values()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)  # a read of the registry file
    ret = stack.run("vcluster.reconcile", "apply=True", "grace=0").data
    assert ret["errors"] == [], ret
    assert not [r for r in ret["repairs"] if r.get("error")], ret

    final = held(stack)
    ready = sorted(n for n in names if final.get(n) == "ready")
    rolled_back = sorted(n for n in names if n not in final)
    assert sorted(ready + rolled_back) == names, (states_at_crash, final)
    if crash_at == "joining":
        # their join handlers died: reconcile rolled them back
        cut = sorted(n for n, s in states_at_crash.items() if s == "joining")
        assert set(cut) <= set(rolled_back), (states_at_crash, final, ret["repairs"])
        assert sorted(r["node"] for r in ret["repairs"] if r["kind"] == "stuck") == cut, ret["repairs"]
    # no orphan: instances, keys and Slurm nodes are exactly the ready nodes
    assert lxd_names() == ready
    assert accepted(stack) == set(ready)
    for name in names:
        assert (node_info(name) is not None) == (name in ready), name
    # and a second look agrees
    again = stack.run("vcluster.reconcile").data
    assert again["result"] is True, again

    if ready:
        ret = stack.run("vcluster.retire", f"nodes={','.join(ready)}")
        assert ret.data["result"] is True, ret.data
    assert lxd_names() == []
