"""Slurm power saving for ``cloud`` membership: resume, suspend, resume-fail.

Every name of a cloud profile's pool is declared ``State=CLOUD`` in
slurm.conf (``salt/slurm/files/slurm.conf.jinja``). When Slurm wants such a
node it runs ``ResumeProgram``; when the node idled ``SuspendTime`` seconds,
``SuspendProgram``; when a resumed node did not register within
``ResumeTimeout``, ``ResumeFailProgram``. On the controller those programs
only fire ``vcluster/slurm/power/<action>`` with the hostlist (and the job
file of ``SLURM_RESUME_FILE``) through the controller's minion; the reactor
hands the event to :func:`handle` on the master, where the credentials are.

* resume: allocate exactly the names Slurm chose
  (:meth:`Registry.allocate_named`), create their instances (the node's
  configless ``slurmd --conf-server -N <name>`` registers the declared node
  after the usual join), or thaw a node of the warm pool;
* suspend (:func:`power_down`): retire the nodes (idle by definition), or
  keep them suspended in the provider when the profile's warm pool is short;
* resume_fail: fail and release the node, set it DOWN in Slurm with a reason.

Nothing here waits for a node to join: the minion start event does that
(:func:`vcluster.expand.join`) within the profile's ``join_timeout``, which the
policy requires to be below ``ResumeTimeout``.
"""

import logging
import uuid

import hostlist

from vcluster import lifecycle
from vcluster.arguments import node_names
from vcluster.errors import InvalidTransition, PolicyError, PoolExhausted, RegistryError, VclusterError, sentence
from vcluster.nodestates import COMING, FROZEN, UNJOINED, WARM_REASON
from vcluster.suspend_resume import reset_minion

log = logging.getLogger(__name__)

ACTIONS = ("resume", "suspend", "resume_fail")
#: Seconds a thawed warm-pool node has to answer and restart its slurmd.
RESTART_TIMEOUT = 60
#: Seconds a thawed warm-pool node's minion gets to reconnect before its slurmd is restarted.
RECONNECT_WAIT = 8


def handle(ctx, action, nodes, sender, resume_file=None):
    """Entry point of the reactor: check the sender, then act on ``nodes``."""
    if action not in ACTIONS:
        raise PolicyError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if sender != ctx.policy.controller:
        log.warning("power %s event from minion %r ignored: only the controller %r may send it",
                    action, sender, ctx.policy.controller)
        return {"result": False, "ignored": True,
                "comment": f"power-saving events come from the controller {ctx.policy.controller}, "
                           f"not from {sender!r}: ignored"}
    names = node_names(nodes)
    if action == "resume":
        return resume(ctx, names, resume_file=resume_file)
    if action == "suspend":
        return power_down(ctx, names)
    return resume_fail(ctx, names)


def cloud_profile_of(policy, name):
    """The cloud :class:`Profile` whose pool holds ``name``, or None."""
    for prof in policy.profiles.values():
        if prof.membership == "cloud" and name in policy.pools[prof.pool].names:
            return prof
    return None


def _jobs_by_node(resume_file):
    """``{node: [job ids]}`` from Slurm's SLURM_RESUME_FILE JSON (22.05+)."""
    out = {}
    if not isinstance(resume_file, dict):
        return out
    for job in resume_file.get("jobs") or []:
        if not isinstance(job, dict) or job.get("job_id") is None:
            continue
        try:
            # 22.05 writes {"jobs": [{"job_id": 1, "nodes": "cn1"}], "all_nodes": "cn1"}
            names = hostlist.expand_hostlist(str(job.get("nodes") or job.get("nodes_resume") or ""))
        except hostlist.BadHostlist:
            continue
        for name in names:
            out.setdefault(name, []).append(str(job["job_id"]))
    return out


def _down(ctx, name, reason):
    """Set a Slurm node DOWN (its jobs are requeued by Slurm); never raises."""
    try:
        ctx.slurm.update_node(name, "DOWN", reason=f"vcluster: {reason}"[:200])
    except VclusterError as exc:
        log.warning("setting %s DOWN failed: %s", name, exc)


def resume(ctx, names, resume_file=None):
    """Bring up ``names`` (cloud pool names Slurm powers up)."""
    result, groups, warm = {}, {}, []
    for name in names:
        prof = cloud_profile_of(ctx.policy, name)
        if prof is None:
            result[name] = "ignored: not a name of a cloud profile's pool"
            continue
        node = ctx.registry.get(name)
        if node is None:
            groups.setdefault(prof.name, []).append(name)
        elif node.state == "suspended":
            warm.append(node)
        elif node.state in COMING:
            result[name] = f"already {node.state}"
        else:
            result[name] = f"left alone: {node.state}"
    for node in warm:
        result[node.name] = _thaw(ctx, node)
    for prof_name, group in groups.items():
        result.update(_create(ctx, ctx.policy.profiles[prof_name], group))
    jobs = _jobs_by_node(resume_file)
    for name, job_ids in jobs.items():
        if ctx.registry.get(name) is not None:
            try:
                ctx.registry.map_jobs(name, job_ids, replace=False)
            except RegistryError:
                pass
    failed = {n: s for n, s in result.items() if s.startswith("failed")}
    comment = f"resume {hostlist.collect_hostlist(names)}: " + "; ".join(
        f"{n} {s}" for n, s in sorted(result.items()))
    return {"result": not failed, "comment": comment, "nodes": result,
            "jobs": {n: j for n, j in jobs.items() if n in result}}


def _room(ctx, prof, wanted):
    """How many of ``wanted`` new nodes the limits allow now."""
    counts = ctx.registry.counts()
    room = ctx.policy.limits.max_nodes - sum(counts.values())
    if prof.max_nodes is not None:
        room = min(room, prof.max_nodes - counts.get(prof.name, 0))
    scale = ctx.policy.autoscale.profiles.get(prof.name)
    if scale is not None and scale.max_nodes is not None:
        room = min(room, scale.max_nodes - counts.get(prof.name, 0))
    return max(0, min(room, wanted))


def _create(ctx, prof, names):
    """Allocate ``names`` and create their instances; the join follows on minion start."""
    out = {}
    room = _room(ctx, prof, len(names))
    for name in names[room:]:
        reason = f"profile {prof.name} is at its node limit"
        _down(ctx, name, reason)
        out[name] = f"failed: {reason}"
    names = names[:room]
    if not names:
        return out
    request_id = uuid.uuid4().hex[:12]
    try:
        # a cloud profile's membership is cloud
        nodes = lifecycle.allocate(ctx, prof, request_id, names=names, trigger="slurm-resume")
    except (PoolExhausted, RegistryError) as exc:
        # another resume took one of them meanwhile: do them one by one
        if len(names) == 1:
            return dict(out, **{names[0]: f"already held ({sentence(exc)})"})
        for name in names:
            out.update(_create(ctx, prof, [name]))
        return out
    # booting before the create call, retries and profile pauses: as for expand
    failure = lifecycle.create(ctx, prof, ctx.provider(prof.provider), nodes, request_id)
    for n in nodes:
        if failure:
            _down(ctx, n.name, failure)
            out[n.name] = f"failed: {failure}"
        else:
            out[n.name] = "booting"
    if failure:
        log.warning("resume %s: %s", request_id, failure)
    ctx.events.progress(f"resuming {hostlist.collect_hostlist(names)} for Slurm", nodes=names)
    return out


def _thaw(ctx, node):
    """Resume a warm-pool node (provider resume) and make its slurmd register again."""
    try:
        lifecycle.move(ctx, node.name, "resuming", expect="suspended", event={"trigger": "slurm-resume"})
    except InvalidTransition:
        return "already being resumed"
    try:
        # A thawed minion re-authenticates (and fires its start event) a
        # moment later; a command published before that is lost and costs
        # a client timeout. Wait for the reconnect, briefly. A provider
        # that can (libvirt) resets the minion's connections first: after a
        # save they come back looking open while the master's side ended.
        with ctx.events.watch(f"salt/minion/{node.name}/start") as reconnected:
            provider = ctx.provider(node.provider)
            provider.resume(node.instance_id)
            reset_minion(provider, node)
            reconnected(RECONNECT_WAIT)
        ctx.salt.restart_slurmd(node.name, timeout=RESTART_TIMEOUT)
        lifecycle.move(ctx, node.name, "ready", expect="resuming", event={"trigger": "warm-pool"})
    except Exception as exc:  # noqa: BLE001 - a failed thaw fails the node
        reason = f"resuming the warm node failed: {sentence(exc)}"
        try:
            lifecycle.move(ctx, node.name, "suspended", expect="resuming", reason=reason,
                           event={"reason": reason})
        except InvalidTransition:
            pass
        _down(ctx, node.name, reason)
        return f"failed: {reason}"
    return "resumed from the warm pool"


def _warm_short(ctx, profile):
    """Whether ``profile``'s warm pool wants one more suspended node."""
    scale = ctx.policy.autoscale.profiles.get(profile)
    if scale is None or not scale.warm_pool:
        return False
    held = [n for n in ctx.registry.nodes(profile=profile) if n.state in FROZEN]
    return len(held) < scale.warm_pool


def power_down(ctx, names):
    """Slurm powered ``names`` down (its ``suspend`` action): retire them, or keep them warm (suspended)."""
    result = {}
    for name in names:
        node = ctx.registry.get(name)
        if node is None:
            result[name] = "not held"
            continue
        try:
            if node.state in UNJOINED:
                lifecycle.fail(ctx, name, "Slurm powered it down before it joined")
                result[name] = "released"
            elif node.state == "failed":
                lifecycle.release(ctx, name, node.reason or "failed")
                result[name] = "released"
            elif node.state in ("ready", "draining"):
                if node.state == "ready" and _warm_short(ctx, node.profile):
                    result[name] = _freeze(ctx, node)
                else:
                    _retire_idle(ctx, node)
                    result[name] = "released"
            else:
                result[name] = f"left alone: {node.state}"
        except VclusterError as exc:
            result[name] = f"failed: {exc}"
    failed = {n: s for n, s in result.items() if s.startswith("failed")}
    comment = f"suspend {hostlist.collect_hostlist(names)}: " + "; ".join(
        f"{n} {s}" for n, s in sorted(result.items()))
    return {"result": not failed, "comment": comment, "nodes": result}


def _freeze(ctx, node):
    lifecycle.move(ctx, node.name, "suspending", expect="ready", reason=WARM_REASON, event={"reason": WARM_REASON})
    try:
        ctx.provider(node.provider).suspend(node.instance_id)
    except Exception as exc:  # noqa: BLE001 - not frozen: retire it instead
        log.warning("warm-pool suspend of %s failed (%s); retiring it", node.name, exc)
        lifecycle.move(ctx, node.name, "ready", expect="suspending", event={"reason": "warm-pool suspend failed"})
        _retire_idle(ctx, ctx.registry.get(node.name))
        return "released"
    lifecycle.move(ctx, node.name, "suspended", expect="suspending", event={"reason": WARM_REASON})
    return "suspended (warm pool)"


def _retire_idle(ctx, node):
    """Remove an idle node Slurm has powered down: instance, key, name, address (Slurm has it down already)."""
    if node.state == "ready":
        lifecycle.move(ctx, node.name, "draining", expect="ready", reason="Slurm power down",
                       event={"reason": "Slurm power down"})
    lifecycle.retire(ctx, node, "powered down by Slurm", slurm=None)


def resume_fail(ctx, names):
    """Slurm gave up on ``names``: release what they hold, DOWN with a reason."""
    result = {}
    for name in names:
        node = ctx.registry.get(name)
        gone = ctx.registry.get(name, include_released=True)
        why = "it did not register within ResumeTimeout"
        if node is not None:
            lifecycle.fail(ctx, name, f"Slurm gave up resuming it: {why}")
            result[name] = "released"
        elif gone is not None and gone.reason:
            why = gone.reason
            result[name] = "already released"
        else:
            result[name] = "not held"
        _down(ctx, name, f"resume failed: {why}")
    comment = f"resume failed for {hostlist.collect_hostlist(names)}: " + "; ".join(
        f"{n} {s}" for n, s in sorted(result.items()))
    return {"result": True, "comment": comment, "nodes": result}
