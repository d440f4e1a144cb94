"""The node state machine: every state, every allowed move, and the named groups of states.

The registry enforces :data:`TRANSITIONS` (:meth:`vcluster.registry.Registry.transition`);
:mod:`vcluster.lifecycle` is the only module that asks it to move a node.
Every other module that needs "the states in which ..." imports the group
from here, so a new state is added in one place. Imports nothing of vcluster.

::

    allocated -> booting -> joining -> ready <-> draining -> retiring -> released
    any of allocated|booting|joining -> failed -> released
    ready -> suspending -> suspended -> resuming -> ready
    ready|suspended -> migrating -> ready|suspended
    suspending -> ready, resuming -> suspended   (reconcile undoes an interrupted step)
    suspended -> retiring -> released            (only a suspended node that holds no job)
"""

#: Allowed lifecycle moves: from state -> states it may go to.
TRANSITIONS = {
    "allocated": frozenset({"booting", "failed"}),
    "booting": frozenset({"joining", "failed"}),
    "joining": frozenset({"ready", "failed"}),
    "ready": frozenset({"draining", "suspending", "migrating"}),
    "draining": frozenset({"ready", "retiring"}),
    "retiring": frozenset({"released"}),
    "failed": frozenset({"released"}),
    # "ready" and "suspended" undo an interrupted suspend / resume (reconcile)
    "suspending": frozenset({"suspended", "ready"}),
    # "retiring": retire of a suspended node that holds no job (a warm-pool node)
    "suspended": frozenset({"resuming", "migrating", "retiring"}),
    "resuming": frozenset({"ready", "suspended"}),
    "migrating": frozenset({"ready", "suspended"}),
    "released": frozenset(),
}

STATES = frozenset(TRANSITIONS)
#: States that hold a name and an address (everything but ``released``).
ACTIVE_STATES = frozenset(STATES - {"released"})

#: Not joined to Slurm yet: undone by fail + release (expand's deadline, reconcile, power save).
UNJOINED = ("allocated", "booting", "joining")
#: Already on its way up, or up: a Slurm power-up of such a node is a no-op (vcluster.powersave).
COMING = ("allocated", "booting", "joining", "ready", "resuming")
#: Retirable by the admin (a suspended node only when it holds no job: its jobs are not finished).
RETIRABLE = ("ready", "draining", "failed", "suspended")
#: Removed after a drain: the states :func:`vcluster.lifecycle.release` leaves Slurm from.
LEAVING = ("failed", "retiring")
#: Whose slurmd liveness watches (a frozen or moving node is left alone: vcluster.liveness).
WATCHED_STATES = ("ready", "draining")
#: Registered in Slurm: a node the ``vcluster_nodes`` pillar declares (static, cloud membership).
IN_SLURM = ("joining", "ready", "draining", "suspending", "suspended", "resuming", "migrating")
#: Held frozen by its provider, or on the way there (a warm pool counts these).
FROZEN = ("suspending", "suspended")
#: States reconcile leaves to their owner however old (no interrupted step to finish).
SETTLED = ("ready", "draining", "suspended")
#: From a joined state to ``retiring`` along allowed transitions (reconcile retires a vanished node).
TO_RETIRING = {
    "ready": ("draining", "retiring"),
    "draining": ("retiring",),
    "suspending": ("ready", "draining", "retiring"),
    "suspended": ("resuming", "ready", "draining", "retiring"),
    "resuming": ("ready", "draining", "retiring"),
    "migrating": ("ready", "draining", "retiring"),
    "retiring": (),
}

#: Registry reasons of a suspended node. Resume after a preempting job only
#: touches PREEMPTED ones; a WARM node is an idle one kept frozen for the next
#: demand: Slurm's power-up (cloud membership, vcluster.powersave) or the
#: queue autoscaler (vcluster.autoscale).
ADMIN_REASON = "suspended by admin"
PREEMPTED_PREFIX = "preempted by job "
WARM_REASON = "warm pool"
