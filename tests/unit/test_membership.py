"""How a highstated node becomes usable in Slurm: one wait when it registered usable."""

import types

import pytest

from vcluster import membership
from vcluster.errors import SlurmError


class ScriptedSlurm:
    """Answers ``wait_node_state`` from a script of state words; records every call."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def wait_node_state(self, name, states, timeout):
        self.calls.append(("wait", name, tuple(states)))
        return self.answers.pop(0)

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
