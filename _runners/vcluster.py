"""
Grow and shrink the Slurm cluster with virtual nodes.

Runs on the Salt master, where the cloud credentials live. Slurm is reached
through the controller's minion (``slurm`` execution module), so the master
and slurmctld may be different hosts. Policy comes from the master's pillar
``vcluster`` (see ``pillar/vcluster.sls``).

Every function returns a dict with ``result`` and ``comment``; a failed call
also carries ``retcode: 1``, which makes ``salt-run`` exit non-zero.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "vcluster"

try:
    from vcluster import engine
    from vcluster.errors import VclusterError

    HAS_LIB = True
except ImportError as _exc:  # pragma: no cover - reported by __virtual__
    HAS_LIB = False
    _IMPORT_ERROR = str(_exc)


def __virtual__():
    if not HAS_LIB:
        return False, f"the vcluster library is not importable: {_IMPORT_ERROR}"
    return __virtualname__


def _run(func, *args, actor="vcluster", **kwargs):
    """Build a context, run one engine call, turn errors into a clean return."""
    jid_event = globals().get("__jid_event__")
    ctx = None
    try:
        from vcluster import saltlink

        ctx = saltlink.context(__opts__, jid_event=jid_event, actor=actor)
        ret = func(ctx, *args, **kwargs)
    except VclusterError as exc:
        ret = {"result": False, "comment": str(exc)}
    finally:
        if ctx is not None:
            ctx.close()
    if ret.get("result") is False:
        # salt-run exits with the "retcode" of the returned dict (the same
        # convention as state.orchestrate); __context__ marks the job failed.
        __context__["retcode"] = 1
        ret["retcode"] = 1
    return ret


def expand(count=None, profile=None, test=False, wait=True):
    """
    Create ``count`` virtual nodes of ``profile``; return when they joined Slurm.

    Nodes that fail to join within the profile's ``join_timeout`` are deleted
    with their key, name and address released, and the return says why.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.expand count=2 profile=htc
        salt-run vcluster.expand count=8 profile=htc test=True
    """
    return _run(engine.expand, profile, count, test=test, wait=wait)


def plan(count=None, profile=None):
    """
    Show what ``vcluster.expand`` would create, without creating anything.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.plan count=4 profile=htc
    """
    return _run(engine.plan, profile, count)


def retire(nodes=None, force=False, wait=600):
    """
    Drain ``nodes`` (a hostlist), wait for their jobs, and remove them.

    With ``force=True`` running jobs are requeued instead of waited for.
    Nodes still busy after ``wait`` seconds stay draining.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.retire nodes='vnode[001-002]'
        salt-run vcluster.retire nodes=vnode003 force=True
    """
    return _run(engine.retire, nodes, force=force, wait=wait)


def shrink(count=None, profile=None, force=False, wait=600):
    """
    Retire ``count`` nodes of ``profile``, idle nodes first.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.shrink count=2 profile=htc
    """
    return _run(engine.shrink, count, profile, force=force, wait=wait)


def status():
    """
    List virtual nodes: address, profile, instance, vcluster and Slurm state, jobs.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.status
    """
    return _run(engine.status)


def reconcile():
    """
    Compare registry, provider instances, minion keys and Slurm; report orphans.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.reconcile
    """
    return _run(engine.reconcile)


def on_minion_start(minion_id=None):
    """
    Reactor handler for ``salt/minion/<id>/start``: join a registry node.

    Ids that are not vcluster nodes are logged and ignored.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.on_minion_start minion_id=vnode001
    """
    return _run(engine.join, minion_id, actor="reactor")
