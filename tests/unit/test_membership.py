"""How a highstated node becomes usable in Slurm: one wait when it registered usable."""

import types

import pytest

from vcluster import expand as vexpand
from vcluster import lifecycle, membership
from vcluster.errors import SlurmError


class ScriptedSlurm:
    """Answers ``wait_node_state`` from a script of state words; records every call.

    ``watch_node_state`` is the same wait started early: its start, its
    collection and its cancel are recorded apart.
    """

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def wait_node_state(self, name, states, timeout):
        self.calls.append(("wait", name, tuple(states)))
        return self.answers.pop(0)

    def watch_node_state(self, name, states, timeout, interval=0.5):
        self.calls.append(("watch", name, tuple(states), interval))

        def result():
            self.calls.append(("collect", name))
            return self.answers.pop(0)

        return types.SimpleNamespace(result=result, cancel=lambda: self.calls.append(("cancel", name)))

    def update_node(self, name, state, reason=None):
        self.calls.append(("update", name, state))


def ctx_with(slurm, mode="dynamic"):
    policy = types.SimpleNamespace(membership_of=lambda profile: mode)
    return types.SimpleNamespace(slurm=slurm, policy=policy)


NODE = types.SimpleNamespace(name="vn1", profile="htc", membership=None)


def test_node_registered_idle_needs_one_wait_and_no_update():
    slurm = ScriptedSlurm(["IDLE"])
    assert membership.join(ctx_with(slurm), NODE, timeout=5) == ["IDLE"]
    assert [c[0] for c in slurm.calls] == ["wait"]


@pytest.mark.parametrize("first", [["IDLE", "DRAIN"], ["DOWN"], ["IDLE", "NOT_RESPONDING", "DRAIN"]])
def test_drained_or_down_node_is_resumed_then_waited_for(first):
    slurm = ScriptedSlurm(first, ["IDLE"])
    assert membership.join(ctx_with(slurm, "static"), NODE, timeout=5) == ["IDLE"]
    assert slurm.calls[1] == ("update", "vn1", "RESUME")
    assert slurm.calls[2] == ("wait", "vn1", membership.UP_STATES)


def test_unknown_membership_is_refused_before_any_slurm_call():
    slurm = ScriptedSlurm()
    with pytest.raises(SlurmError, match="membership mode 'bogus'"):
        membership.join(ctx_with(slurm, "bogus"), NODE, timeout=5)
    assert slurm.calls == []


def test_dynamic_node_is_waited_for_from_before_its_highstate():
    slurm = ScriptedSlurm(["IDLE"])
    ctx = ctx_with(slurm)
    pending = membership.prepare(ctx, NODE, timeout=5)
    assert slurm.calls == [("watch", "vn1", membership.REGISTERED_STATES, membership.REGISTRATION_POLL)]
    assert membership.join(ctx, NODE, timeout=5, pending=pending) == ["IDLE"]
    assert slurm.calls[1:] == [("collect", "vn1")]


@pytest.mark.parametrize("mode", ["static", "cloud"])
def test_declared_nodes_are_waited_for_after_their_highstate(mode, monkeypatch):
    monkeypatch.setattr(membership, "_push_static_conf", lambda ctx, timeout: None)
    slurm = ScriptedSlurm(["IDLE"])
    assert membership.prepare(ctx_with(slurm, mode), NODE, timeout=5) is None
    assert slurm.calls == []


class JoinCtx:
    """Just what vexpand.join touches, around a ScriptedSlurm and a highstate result."""

    def __init__(self, slurm, highstate_ok):
        self.slurm = slurm
        self.actor = "test"
        self.events = []
        self.failed = []
        node = types.SimpleNamespace(name="vn1", profile="htc", membership="dynamic", state="booting")
        self.registry = types.SimpleNamespace(get=lambda name: node, transition=lambda *a, **k: None)
        self.policy = types.SimpleNamespace(profiles={"htc": types.SimpleNamespace(join_timeout=30)},
                                            membership_of=lambda profile: "dynamic")

        def highstate(minion, timeout):
            slurm.calls.append(("highstate", minion))
            return (True, "1 minion(s) succeeded") if highstate_ok else (False, "vn1: state munge failed: no key")

        self.salt = types.SimpleNamespace(highstate=highstate)

    def node_event(self, name, state, **data):
        self.events.append(state)


def test_join_collects_the_early_wait_after_the_highstate():
    slurm = ScriptedSlurm(["IDLE"])
    ret = vexpand.join(JoinCtx(slurm, highstate_ok=True), "vn1")
    assert ret["result"] is True, ret
    assert [c[0] for c in slurm.calls] == ["watch", "highstate", "collect"]


def test_failed_highstate_cancels_the_early_wait(monkeypatch):
    released = []
    monkeypatch.setattr(lifecycle, "fail",
                        lambda ctx, name, reason: released.append((name, reason, slurm.calls[-1][0])))
    slurm = ScriptedSlurm(["IDLE"])
    ret = vexpand.join(JoinCtx(slurm, highstate_ok=False), "vn1")
    assert ret["result"] is False and "state munge failed" in ret["comment"]
    assert [c[0] for c in slurm.calls] == ["watch", "highstate", "cancel"]
    # cancelled before the node is released
    assert released == [("vn1", "highstate failed: vn1: state munge failed: no key", "cancel")]
