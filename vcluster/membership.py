"""How a virtual node enters and leaves Slurm, per membership mode.

``dynamic`` (default, Slurm >= 22.05): the node's highstate starts
``slurmd -Z`` in configless mode and slurmd registers the node itself. Leaving
is ``scontrol delete nodename=`` after the instance (and so slurmd) is gone,
or a still-running slurmd would register the node again.

``cloud``: every pool name is declared ``State=CLOUD`` in slurm.conf and
Slurm's power saving asks for nodes (:mod:`vcluster.powersave`); the node's
configless ``slurmd --conf-server -N <name>`` registers it. Leaving powers
the declared node down instead of deleting it.

``static`` (the seeds' method, and the benchmark baseline): the registry
feeds the ``vcluster_nodes`` pillar; slurm.conf is re-rendered on every
cluster node, slurmctld and the full-conf slurmds restart (the queue
survives in StateSaveLocation), and the node is resumed.
"""

import logging

from vcluster.errors import SlurmError
from vcluster.slurm import states

log = logging.getLogger(__name__)

#: Slurm base states in which a joined node counts as usable.
UP_STATES = ("IDLE", "MIXED", "ALLOCATED", "COMPLETING")

#: Compound target of every host that carries a slurm.conf.
CLUSTER_TARGET = "G@roles:slurm-controller or G@roles:slurm-compute"


#: States the first wait of a join accepts: usable, or to be resumed.
REGISTERED_STATES = UP_STATES + ("DRAIN", "DOWN")
#: Seconds between the controller's looks at a dynamic node that is being
#: highstated: one ``scontrol show -o node`` costs about 5 ms there, and the
#: node is usable at most this long before its join sees it.
REGISTRATION_POLL = 0.2


def prepare(ctx, node, timeout):
    """Before ``node``'s highstate; returns the pending registration wait, or ``None``.

    static: slurm.conf declaring the node is pushed to slurmctld.
    dynamic: the node is absent from Slurm until its own slurmd registers
    (during its highstate), so the controller starts waiting for it now
    and the join collects the answer after the highstate, instead of
    starting a wait then. Static and cloud nodes are declared before they
    boot: for them a state seen this early says nothing, so they wait after.
    """
    mode = mode_of(ctx, node)
    if mode == "static":
        _push_static_conf(ctx, timeout)
    elif mode == "dynamic":
        return ctx.slurm.watch_node_state(node.name, REGISTERED_STATES, timeout, interval=REGISTRATION_POLL)
    return None


def join(ctx, node, timeout, pending=None):
    """Make ``node`` (already highstated, slurmd started) a usable Slurm node.

    ``pending`` is :func:`prepare`'s wait, collected here.
    """
    mode = mode_of(ctx, node)
    if mode not in ("static", "dynamic", "cloud"):
        raise SlurmError(f"membership mode {mode!r} cannot join nodes through expand")
    if pending is not None:
        state = pending.result()
    else:
        state = ctx.slurm.wait_node_state(node.name, REGISTERED_STATES, timeout)
    if states.matches(state, UP_STATES):
        return state  # registered usable: no second round trip to the controller
    if "DRAIN" in state or "DOWN" in state:
        ctx.slurm.update_node(node.name, "RESUME")
    return ctx.slurm.wait_node_state(node.name, UP_STATES, timeout)


def leave(ctx, node, timeout):
    """Remove ``node`` from Slurm; its instance is already deleted."""
    mode = mode_of(ctx, node)
    if mode == "static":
        _push_static_conf(ctx, timeout)
    elif mode == "cloud":
        # a declared State=CLOUD name stays in slurm.conf: power it down
        # (Slurm calls SuspendProgram, which finds the node released)
        try:
            ctx.slurm.update_node(node.name, "POWER_DOWN_FORCE")
        except SlurmError as exc:
            log.info("slurm node %s not powered down: %s", node.name, exc)
    else:
        try:
            ctx.slurm.delete_node(node.name)
        except SlurmError as exc:
            if "invalid node name" not in str(exc).lower():
                raise
            log.info("slurm node %s was already gone", node.name)


def mode_of(ctx, node):
    """The node's membership mode: its own record, else its profile's (the cluster's)."""
    return node.membership or ctx.policy.membership_of(node.profile)


def _push_static_conf(ctx, timeout):
    """Re-render slurm.conf from the registry everywhere and restart.

    The controller goes first: its state writes the file and, because the
    service watches it, restarts slurmctld (jobs survive in
    StateSaveLocation). Then every other full-conf holder gets the file and
    its slurmd restarts the same way. A restarted daemon has read the new
    file, so no ``scontrol reconfigure`` follows (it would race the restart).
    """
    ok, summary = ctx.salt.apply(ctx.policy.controller, "slurm.controller", timeout)
    if not ok:
        raise SlurmError(f"updating slurmctld failed: {summary}")
    target = f"({CLUSTER_TARGET}) and not L@{ctx.policy.controller}"
    ok, summary = ctx.salt.apply(target, "slurm.compute", timeout, tgt_type="compound")
    if not ok and "no minion returned" not in summary:
        raise SlurmError(f"pushing slurm.conf failed: {summary}")
