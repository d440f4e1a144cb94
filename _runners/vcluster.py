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
    from vcluster import expand as _expand
    from vcluster import retire as _retire
    from vcluster import status as _status
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
    """Build a context, run one library call, turn errors into a clean return."""
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
    return _run(_expand_unless_paused, profile, count, test=test, wait=wait)


def _expand_unless_paused(ctx, profile, count, **kwargs):
    """Refuse, before any side effect, a profile paused after repeated failures."""
    from vcluster import retry

    if isinstance(profile, str) and profile in ctx.policy.profiles:
        retry.check_pause(ctx.registry, ctx.policy, profile)
    return _expand.expand(ctx, profile, count, **kwargs)


def plan(count=None, profile=None):
    """
    Show what ``vcluster.expand`` would create, without creating anything.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.plan count=4 profile=htc
    """
    return _run(_expand.plan, profile, count)


def retire(nodes=None, force=False, wait=600, test=False):
    """
    Drain ``nodes`` (a hostlist), wait for their jobs, and remove them.

    With ``force=True`` running jobs are requeued instead of waited for.
    Nodes still busy after ``wait`` seconds stay draining. ``test=True``
    says what would be done to each node and changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.retire nodes='vnode[001-002]'
        salt-run vcluster.retire nodes=vnode003 force=True
        salt-run vcluster.retire nodes='vnode[001-002]' test=True
    """
    return _run(_retire.retire, nodes, force=force, wait=wait, test=test)


def shrink(count=None, profile=None, force=False, wait=600, test=False):
    """
    Retire ``count`` nodes of ``profile``, idle nodes first.

    ``test=True`` says which nodes would go and how, and changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.shrink count=2 profile=htc
        salt-run vcluster.shrink count=2 profile=htc test=True
    """
    return _run(_retire.shrink, count, profile, force=force, wait=wait, test=test)


def _table(ret, rows):
    """``ret`` shaped for Salt's ``table`` outputter: only lists (it prints nothing else).

    ``rows`` (a header and one list of strings per row) under ``table``;
    the comment and warnings, one sentence per row, under ``summary``;
    ``retcode`` kept for salt-run's exit status. A call that failed before
    it had rows (``rows`` None) shows its comment alone.
    """
    out = {"summary": [ret.get("comment") or ""] + list(ret.get("warnings") or [])}
    if rows is not None:
        out["table"] = rows
    if "retcode" in ret:
        out["retcode"] = ret["retcode"]
    return out


def _wants_table():
    """Whether salt-run was asked for ``--out=table``."""
    return __opts__.get("output") == "table"


def status():
    """
    List virtual nodes: vcluster state, Slurm state, instance status, live jobs, address, profile, host, reason.

    ``result`` is False, and ``unknown`` names the part, when Slurm or a
    provider could not be asked: those columns then read ``unknown``, never
    ``absent``. ``jobs`` lists the jobs alive in Slurm on each node. With
    ``--out=table`` the nodes come as one table.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.status
        salt-run vcluster.status --out=table
    """
    ret = _run(_status.status)
    if _wants_table():
        return _table(ret, _status.status_rows(ret) if "nodes" in ret else None)
    return ret


def history(node=None, since=None, limit=None):
    """
    Print the registry's audit log: every lifecycle transition, oldest first.

    ``node`` keeps one node's; ``since`` the ones from then on (an age such
    as ``2h``, ``30m``, ``1d``, an ISO 8601 time, UTC unless it says, or a
    Unix time); ``limit`` the newest N (default 50). The registry is read
    read-only.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.history
        salt-run vcluster.history node=vnode001
        salt-run vcluster.history since=2h limit=200 --out=table
    """
    from vcluster import history as _history

    def read(pol):
        return _history.history(pol.registry, node=node, since=since, limit=limit)

    ret = _run_policy(read)
    if _wants_table():
        return _table(ret, _history.rows(ret) if "events" in ret else None)
    return ret


def metrics(path=None):
    """
    vcluster's metrics in the Prometheus text format; written atomically to ``path`` when given.

    Nodes by state and profile, expand and join durations, failures and
    suspended seconds, from the registry (see docs/operations.md). A
    ``path`` must end in ``.prom``, for node_exporter's textfile collector.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.metrics
        salt-run vcluster.metrics path=/var/lib/node_exporter/textfile/vcluster.prom
    """
    from vcluster import metrics as _metrics

    def export(pol):
        return _metrics.export(pol.registry, path=path, profiles=sorted(pol.profiles))

    return _run_policy(export)


def _run_policy(func):
    """Run ``func(policy)`` for calls that need only the policy (no Salt client, no provider)."""
    try:
        from vcluster import saltlink

        ret = func(saltlink.load_policy(__opts__))
    except VclusterError as exc:
        ret = {"result": False, "comment": str(exc)}
    if ret.get("result") is False:
        __context__["retcode"] = 1
        ret["retcode"] = 1
    return ret


def reconcile(apply=False, grace=None, scheduled=False, test=False):
    """
    Compare registry, provider instances, minion keys and Slurm; report orphans.

    With ``apply=True`` each one is repaired (orphan instances and keys
    deleted, nodes whose instance vanished released or retired, stray Slurm
    nodes removed, transitions interrupted by a crash finished or undone),
    one ``vcluster/reconcile/<kind>`` event per repair. ``grace`` (seconds)
    overrides ``vcluster:reconcile:grace`` and the profiles' ``join_timeout``
    for this run (``grace=0`` right after a crash). ``scheduled=True`` is what
    the master's ``vcluster_tasks`` engine runs: only when
    ``vcluster:reconcile:interval`` has passed. ``test=True`` says what each
    repair would do and changes nothing (not even the schedule's last-run
    stamp). See docs/reconcile.md.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.reconcile
        salt-run vcluster.reconcile apply=True
        salt-run vcluster.reconcile apply=True test=True
    """
    from vcluster import reconcile as _reconcile

    return _run(_reconcile.run, apply=apply, grace=grace, scheduled=scheduled, test=test,
                actor="reconcile")


def on_minion_start(minion_id=None):
    """
    Reactor handler for ``salt/minion/<id>/start``: join a registry node.

    Ids that are not vcluster nodes are logged and ignored.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.on_minion_start minion_id=vnode001
    """
    return _run(_expand.join, minion_id, actor="reactor")


def suspend(nodes=None, mode=None, test=False):
    """
    Suspend ``nodes`` (a hostlist) with their running jobs.

    Drains each node (reason ``vcluster suspend``), ``scontrol suspend``\\ s its
    jobs, then suspends the instance (``mode``: ``suspend`` or ``pause``;
    default ``vcluster:suspend:mode``; LXD freezes either way). The jobs are
    neither requeued nor killed; ``vcluster.resume`` continues them.
    ``test=True`` says what would be done and changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.suspend nodes='vnode[001-002]'
        salt-run vcluster.suspend nodes=vnode003 mode=pause
        salt-run vcluster.suspend nodes=vnode003 test=True
    """
    from vcluster import suspend_resume

    return _run(suspend_resume.suspend, nodes, mode=mode, test=test)


def resume(nodes=None, host=None, timeout=None, test=False):
    """
    Resume suspended ``nodes`` and their jobs, optionally on another ``host``.

    Resumes the instance, waits until its minion answers and slurmd runs
    (``timeout`` seconds, default ``vcluster:suspend:resume_timeout``),
    resumes the jobs vcluster suspended and lifts vcluster's drain.
    ``test=True`` says what would be done and changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.resume nodes='vnode[001-002]'
        salt-run vcluster.resume nodes=vnode003 host=compute2
        salt-run vcluster.resume nodes=vnode003 test=True
    """
    from vcluster import suspend_resume

    return _run(suspend_resume.resume, nodes, host=host, timeout=timeout, test=test)


def migrate(node=None, host=None, live=True, test=False):
    """
    Move ``node`` to hypervisor ``host`` (default: the provider's choice), jobs included.

    Ready nodes stay ready (live migration), suspended nodes stay suspended.
    The registry and Slurm (NodeAddr) follow the node. ``test=True`` says
    what would be done and changes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.migrate node=vnode001 host=compute2
        salt-run vcluster.migrate node=vnode001 host=compute2 test=True
    """
    from vcluster import migrate as _migrate

    return _run(_migrate.migrate, node, host=host, live=live, test=test)


def liveness(timeout=None, test=False):
    """
    Check node liveness once; set nodes whose slurmd is gone DOWN in Slurm (the master's vcluster_tasks engine runs this every 10 s).

    Slurm runs with ``SlurmdTimeout=0``: vcluster decides which nodes are dead
    from one scan of every watched slurmd by the controller, skipping nodes it
    suspended on purpose. A node whose minion is silent but whose slurmd
    answers is only reported (``minion_silent``), never set DOWN.
    ``timeout`` (seconds) bounds the Salt probe of the nodes the scan flags;
    ``test=True`` says which nodes would be set DOWN or resumed and changes
    nothing. See docs/operations.md.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.liveness
        salt-run vcluster.liveness test=True
        salt-run vcluster.liveness timeout=5
    """
    from vcluster import liveness as _liveness

    return _run(_liveness.check, timeout=timeout, test=test, actor="liveness")


def on_slurm_event(minion_id=None, line=None):
    """
    Reactor handler for Slurm job start/end lines (PrologSlurmctld/EpilogSlurmctld).

    Only the controller's minion is trusted (its vcluster_slurm_events
    engine sends the lines); the job is re-read from Slurm.
    A job of a preempting partition suspends the preemptible virtual nodes on
    its hosts; its end resumes them (see ``vcluster:preemption``).

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.on_slurm_event minion_id=ctl line='vcluster-slurm-event v1 start job=42 partition=batch nodes=node01'
    """
    from vcluster import preempt as _preempt

    return _run(_preempt.on_event, minion_id, line, actor="preempt")


def on_slurm_power(action=None, nodes=None, sender=None, resume_file=None):
    """
    Reactor handler for ``vcluster/slurm/power/<action>`` (cloud membership).

    Slurm's ResumeProgram, SuspendProgram and ResumeFailProgram fire these
    through the controller's minion. ``resume`` creates exactly the named
    nodes (or thaws warm-pool nodes), ``suspend`` retires them (or keeps them
    suspended for the warm pool), ``resume_fail`` releases them and sets
    them DOWN with a reason. Events from any minion but the controller are
    ignored. See docs/autoscaling.md.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.on_slurm_power action=resume nodes='tnode[01-02]' sender=ctl
    """
    from vcluster import powersave

    return _run(powersave.handle, action, nodes, sender, resume_file, actor="slurm-power")


def autoscale(scheduled=False, test=False):
    """
    One autoscaling pass from pillar ``vcluster:autoscale`` (see docs/autoscaling.md).

    Thaws warm-pool nodes and creates nodes for pending jobs up to
    ``max_nodes``, keeps ``min_nodes``, retires nodes idle for
    ``idle_time`` (or suspends them into the warm pool), and gives jobs
    submitted with ``--hold --comment=<job_flag>`` nodes of their own,
    retired when the job ends. ``test=True`` only reports what it would do.
    The master's ``vcluster_tasks`` engine runs it with ``scheduled=True``:
    it then acts only when ``enabled`` and ``interval`` seconds have passed.

    CLI Example:

    .. code-block:: bash

        salt-run vcluster.autoscale
        salt-run vcluster.autoscale test=True
    """
    from vcluster import autoscale as _autoscale

    return _run(_autoscale.run, scheduled=scheduled, test=test, actor="autoscale")
