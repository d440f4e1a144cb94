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


def join(ctx, node, timeout):
    """Make ``node`` (already highstated) a usable Slurm node."""
    mode = node.membership or ctx.policy.membership_of(node.profile)
    if mode == "static":
        _push_static_conf(ctx, timeout)
        ctx.slurm.wait_node_state(node.name, UP_STATES + ("DOWN", "UNKNOWN", "FUTURE"), timeout)
        ctx.slurm.update_node(node.name, "RESUME")
    elif mode == "dynamic":
        state = ctx.slurm.wait_node_state(node.name, UP_STATES + ("DRAIN", "DOWN"), timeout)
        if "DRAIN" in state or "DOWN" in state:
            ctx.slurm.update_node(node.name, "RESUME")
    else:
        raise SlurmError(f"membership mode {mode!r} cannot join nodes through expand yet")
    return ctx.slurm.wait_node_state(node.name, UP_STATES, timeout)


def leave(ctx, node, timeout):
    """Remove ``node`` from Slurm; its instance is already deleted."""
    mode = node.membership or ctx.policy.membership_of(node.profile)
    if mode == "static":
        _push_static_conf(ctx, timeout)
    else:
        try:
            ctx.slurm.delete_node(node.name)
        except SlurmError as exc:
            if "invalid node name" not in str(exc).lower():
                raise
            log.info("slurm node %s was already gone", node.name)


def _push_static_conf(ctx, timeout):
    ok, summary = ctx.salt.apply(CLUSTER_TARGET, "slurm.config", timeout, tgt_type="compound")
    if not ok:
        raise SlurmError(f"pushing slurm.conf failed: {summary}")
    ok, summary = ctx.salt.apply(ctx.policy.controller, "slurm.controller", timeout)
    if not ok:
        raise SlurmError(f"restarting slurmctld failed: {summary}")
    ctx.slurm.reconfigure()
