"""How a virtual node enters and leaves Slurm, per membership mode.

``dynamic`` (default, Slurm >= 22.05): the node's highstate starts
``slurmd -Z`` in configless mode and slurmd registers the node itself. Leaving
is ``scontrol delete nodename=`` after the instance (and so slurmd) is gone,
or a still-running slurmd would register the node again.

``static`` (the seeds' method, and the benchmark baseline): the registry
feeds the ``vcluster_nodes`` pillar; slurm.conf is re-rendered on every
cluster node, slurmctld is restarted (the queue survives in
StateSaveLocation) and told to reconfigure, and the node is resumed.
"""

import logging

from vcluster.errors import SlurmError

log = logging.getLogger(__name__)

#: Slurm base states in which a joined node counts as usable.
UP_STATES = ("IDLE", "MIXED", "ALLOCATED", "COMPLETING")

#: Compound target of every host that carries a slurm.conf.
CLUSTER_TARGET = "G@roles:slurm-controller or G@roles:slurm-compute"


def prepare(ctx, node, timeout):
    """Before ``node``'s highstate: static mode declares it to slurmctld."""
    if _mode(ctx, node) == "static":
        _push_static_conf(ctx, timeout)


def join(ctx, node, timeout):
    """Make ``node`` (already highstated, slurmd started) a usable Slurm node."""
    mode = _mode(ctx, node)
    if mode not in ("static", "dynamic"):
        raise SlurmError(f"membership mode {mode!r} cannot join nodes through expand")
    state = ctx.slurm.wait_node_state(node.name, UP_STATES + ("DRAIN", "DOWN"), timeout)
    if "DRAIN" in state or "DOWN" in state:
        ctx.slurm.update_node(node.name, "RESUME")
    return ctx.slurm.wait_node_state(node.name, UP_STATES, timeout)


def leave(ctx, node, timeout):
    """Remove ``node`` from Slurm; its instance is already deleted."""
    if _mode(ctx, node) == "static":
        _push_static_conf(ctx, timeout)
    else:
        try:
            ctx.slurm.delete_node(node.name)
        except SlurmError as exc:
            if "invalid node name" not in str(exc).lower():
                raise
            log.info("slurm node %s was already gone", node.name)


def _mode(ctx, node):
    return node.membership or ctx.policy.membership_of(node.profile)


def _push_static_conf(ctx, timeout):
    """Re-render slurm.conf from the registry everywhere; restart, reconfigure.

    The controller goes first: its state writes the file and, because the
    service watches it, restarts slurmctld. Then every other full-conf
    holder gets the file (static slurmds restart on change the same way).
    """
    ok, summary = ctx.salt.apply(ctx.policy.controller, "slurm.controller", timeout)
    if not ok:
        raise SlurmError(f"updating slurmctld failed: {summary}")
    target = f"({CLUSTER_TARGET}) and not L@{ctx.policy.controller}"
    ok, summary = ctx.salt.apply(target, "slurm.compute", timeout, tgt_type="compound")
    if not ok and "no minion returned" not in summary:
        raise SlurmError(f"pushing slurm.conf failed: {summary}")
    ctx.slurm.reconfigure()
