"""vcluster.lifecycle: every move is a transition, an audit row and an event; one way out.

The registry is the real one (a file); provider, keys and Slurm are the
in-memory implementations of tests/unit/test_reconcile.py (LXD, Salt's key
store and slurmctld cannot run in a unit test; tests/integration repeats
these paths on real ones). What is under test: which steps each way out
takes, in which order, which fail the removal and which are skipped.
"""

import pytest

from tests.unit.test_reconcile import ctx, prov  # noqa: F401 - the fixture and its provider
from vcluster import lifecycle, nodestates
from vcluster.errors import InvalidTransition, ProviderError
from vcluster.registry import TRANSITIONS


def _node(ctx, state, instance=True):
    """A node of the registry walked to ``state`` along allowed moves (no events: set up only)."""
    (node,) = ctx.registry.allocate(ctx.policy.pools["p"], "htc", "lxd", 1, "r1", membership="dynamic")
    path = {"allocated": [], "booting": ["booting"], "failed": ["booting", "failed"],
            "ready": ["booting", "joining", "ready"], "draining": ["booting", "joining", "ready", "draining"],
            "suspended": ["booting", "joining", "ready", "suspending", "suspended"]}[state]
    for step in path:
        ctx.registry.transition(node.name, step)
    if instance:
        prov(ctx).add(f"i-{node.name}", node.name)
        ctx.registry.update(node.name, instance_id=f"i-{node.name}")
    ctx.keys.keys.add(node.name)
    ctx.slurm.add(node.name)
    return ctx.registry.get(node.name)


def tags(ctx):
    return [t for t, _ in ctx.events.events]


def test_move_writes_the_state_its_audit_row_and_its_event_together(ctx):
    node = _node(ctx, "ready")
    moved = lifecycle.move(ctx, node.name, "draining", expect="ready", reason="retire", event={"why": "test"})
    assert moved.state == "draining" and ctx.registry.get(node.name).reason == "retire"
    audit = ctx.registry.audit(node.name, limit=1)[0]
    assert (audit["from_state"], audit["to_state"], audit["reason"], audit["actor"]) == (
        "ready", "draining", "retire", ctx.actor)
    assert ctx.events.events == [(f"vcluster/node/{node.name}/draining",
                                  {"why": "test", "node": node.name, "state": "draining"})]


def test_a_refused_move_changes_nothing_and_announces_nothing(ctx):
    node = _node(ctx, "ready")
    with pytest.raises(InvalidTransition):
        lifecycle.move(ctx, node.name, "suspended", expect="suspending")
    assert ctx.registry.get(node.name).state == "ready" and ctx.events.events == []


def test_retire_deletes_instance_leaves_slurm_deletes_key_then_releases(ctx):
    node = _node(ctx, "draining")
    lifecycle.retire(ctx, node, "retired")
    assert ctx.registry.get(node.name) is None
    gone = ctx.registry.get(node.name, include_released=True)
    assert gone.state == "released" and gone.reason == "retired"
    assert f"i-{node.name}" not in prov(ctx).instances
    assert node.name not in ctx.slurm.nodes_ and node.name not in ctx.keys.keys
    assert tags(ctx) == [f"vcluster/node/{node.name}/retiring", f"vcluster/node/{node.name}/released"]


def test_retire_stops_at_a_failed_instance_delete_and_keeps_the_node_for_reconcile(ctx):
    node = _node(ctx, "draining")

    def refuse(ids):
        raise ProviderError("the provider API is down")

    prov(ctx).delete = refuse
    with pytest.raises(ProviderError):
        lifecycle.retire(ctx, node, "retired")
    assert ctx.registry.get(node.name).state == "retiring"
    assert node.name in ctx.keys.keys and node.name in ctx.slurm.nodes_  # nothing after the failed step


def test_a_power_save_retire_leaves_slurm_alone(ctx):
    node = _node(ctx, "draining")
    lifecycle.retire(ctx, node, "powered down by Slurm", slurm=None)
    assert node.name in ctx.slurm.nodes_  # Slurm powered it down itself
    assert ctx.registry.get(node.name) is None and node.name not in ctx.keys.keys


def test_release_of_a_failed_create_fails_then_releases_and_skips_slurm(ctx):
    node = _node(ctx, "booting", instance=False)
    lifecycle.release(ctx, node.name, "creating instances failed: quota", delete_instance=False)
    assert ctx.registry.get(node.name) is None
    assert node.name in ctx.slurm.nodes_  # never joined: Slurm is not asked
    assert tags(ctx) == [f"vcluster/node/{node.name}/failed", f"vcluster/node/{node.name}/released"]
    rows = [(a["from_state"], a["to_state"]) for a in ctx.registry.audit(node.name)]
    assert rows[:2] == [("failed", "released"), ("booting", "failed")]


def test_release_goes_on_past_failed_clean_up_steps(ctx):
    node = _node(ctx, "failed")

    def refuse(ids):
        raise ProviderError("the provider API is down")

    prov(ctx).delete = refuse
    lifecycle.release(ctx, node.name, "highstate failed")
    assert ctx.registry.get(node.name) is None  # released all the same; reconcile deletes the orphan
    assert node.name not in ctx.slurm.nodes_ and node.name not in ctx.keys.keys


def test_fail_of_a_node_failed_meanwhile_still_releases_it_once(ctx):
    node = _node(ctx, "failed")
    lifecycle.fail(ctx, node.name, "gave up")
    assert ctx.registry.get(node.name) is None
    assert tags(ctx) == [f"vcluster/node/{node.name}/failed", f"vcluster/node/{node.name}/released"]
    lifecycle.fail(ctx, node.name, "gave up")  # released by then: nothing more
    assert len(ctx.events.events) == 2


def test_the_state_groups_name_only_states_of_the_machine():
    groups = [nodestates.UNJOINED, nodestates.COMING, nodestates.RETIRABLE, nodestates.LEAVING,
              nodestates.WATCHED_STATES, nodestates.IN_SLURM, nodestates.FROZEN, nodestates.SETTLED]
    for group in groups:
        assert set(group) <= nodestates.ACTIVE_STATES
    assert TRANSITIONS is nodestates.TRANSITIONS
    for start, path in nodestates.TO_RETIRING.items():
        for state in path:
            assert state in TRANSITIONS[start], (start, state)
            start = state
