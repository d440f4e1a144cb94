"""Reconcile's repairs: one per finding of :mod:`vcluster.reconcile_survey`.

Each repair re-reads the registry node first and moves it through
:mod:`vcluster.lifecycle` with a compare-and-set, so an expand, retire or join
running at the same time wins or loses cleanly; a node reconcile takes out
leaves by :func:`vcluster.lifecycle.remove`, as a retired one does.
"""

import logging
import time

from vcluster import lifecycle, preempt
from vcluster.errors import InvalidTransition, RegistryError, VclusterError, sentence
from vcluster.nodestates import PREEMPTED_PREFIX, TO_RETIRING, UNJOINED
from vcluster.slurm import states

log = logging.getLogger(__name__)


def _requeue_jobs(ctx, name):
    """Requeue the live jobs of Slurm node ``name`` (none is lost: they run elsewhere)."""
    requeued = []
    for job in ctx.slurm.jobs(nodes=[name]):
        if job.get("state") in states.JOB_ON_NODES:
            ctx.slurm.requeue(job["id"])
            requeued.append(job["id"])
    return requeued


def _fail_release(ctx, name, reason, extra_instances=()):
    """Undo a node that never joined: fail it, delete all it holds, free it."""
    node = ctx.registry.get(name)
    if node is None:
        return "already released"
    for prov_name, iid in extra_instances:
        if iid != node.instance_id:
            ctx.provider(prov_name).delete([iid])
    if node.state != "failed":
        try:
            lifecycle.move(ctx, name, "failed", reason=reason, expect=UNJOINED, event={"reason": reason})
        except InvalidTransition as exc:
            return f"left alone: {sentence(exc)}"
    try:
        lifecycle.release(ctx, name, reason)
    except RegistryError:
        if ctx.registry.get(name) is None:  # an expand or join handler released it first
            return "released by another process"
        raise
    return "failed and released"


def _retire_gone(ctx, name, reason, delete_instance=False):
    """Walk a joined node to ``retiring`` and finish its removal (every step strict: a failure is reported)."""
    node = ctx.registry.get(name)
    if node is None:
        return "already released"
    if node.state in UNJOINED or node.state == "failed":
        return _fail_release(ctx, name, reason)
    path = TO_RETIRING.get(node.state)
    if path is None:
        return f"left alone: node is {node.state}"
    for state in path:
        current = ctx.registry.get(name)
        if current is None:
            return "already released"
        try:
            lifecycle.move(ctx, name, state, reason=reason, expect=current.state, event={"reason": reason})
        except InvalidTransition as exc:
            return f"left alone: {sentence(exc)}"
    node = ctx.registry.get(name)
    requeued = []
    try:
        requeued = _requeue_jobs(ctx, name)
    except VclusterError as exc:
        log.warning("reconcile: cannot requeue the jobs of %s: %s", name, exc)
    lifecycle.remove(ctx, node, reason, instance=delete_instance, strict=lifecycle.REMOVE_STEPS)
    return "retired" + (f" (requeued jobs {', '.join(map(str, requeued))})" if requeued else "")


def _instance_status(ctx, node):
    if not node.instance_id:
        return None
    inst = ctx.provider(node.provider).get(node.instance_id)
    return inst.status.value if inst is not None else None


def _unstick(ctx, item):
    """Finish or undo one interrupted transition."""
    name, state = item["node"], item["state"]
    if state in UNJOINED or state == "failed":
        if state in ("booting", "joining"):
            reason = f"did not join within {item['limit']:g} s (found {state} by reconcile)"
        else:
            reason = f"interrupted while {state} (found by reconcile)"
        node = ctx.registry.get(name)
        extra = []
        if node is not None:
            extra = [(node.provider, iid) for iid in item.get("owned", [])]
        return _fail_release(ctx, name, reason, extra)
    if state == "retiring":
        return _retire_gone(ctx, name, "retired (removal finished by reconcile)", delete_instance=True)
    # suspending / resuming / migrating: the provider's status decides
    node = ctx.registry.get(name)
    if node is None or node.state != state:
        return "already moved on"
    status = _instance_status(ctx, node)
    target = {
        "suspending": "suspended" if status == "suspended" else "ready",
        "resuming": "ready" if status == "running" else "suspended",
        "migrating": "suspended" if status == "suspended" else "ready",
    }.get(state)
    if target is None:
        return f"left alone: no repair for state {state}"
    lifecycle.move(ctx, name, target, reason=f"{state} interrupted (instance {status})", expect=state,
                   event={"reason": "reconcile"})
    return f"moved to {target}"


def repair(ctx, kind, item):
    """Repair one finding ``item`` of ``kind``; what was done, one phrase (raises when it failed)."""
    if kind == "orphan_instance":
        prov = ctx.provider(item["provider"])
        # re-check: the name may have been allocated again since the survey, and
        # providers whose ids are names (LXD) would give its new instance this id
        node = ctx.registry.get(item["node"])
        if node is not None and node.instance_id in (None, item["instance"]):
            return "node allocated meanwhile, left alone"
        prov.delete([item["instance"]])
        return "deleted"
    if kind == "duplicate_instance":
        node = ctx.registry.get(item["node"])
        if node is None:
            return "already released"
        if item["keep"] is not None:
            extra = [i for i in item["instances"] if i != item["keep"]]
            prov = ctx.provider(node.provider)
            prov.delete(extra)
            return f"kept {item['keep']}, deleted {', '.join(extra)}"
        extra = [(node.provider, i) for i in item["instances"]]
        return _fail_release(ctx, item["node"], "several instances claimed the node (found by reconcile)", extra)
    if kind == "node_without_instance":
        node = ctx.registry.get(item["node"])
        if node is None or node.instance_id != item["instance"]:
            return "already moved on"
        if ctx.provider(node.provider).get(node.instance_id) is not None:
            return "instance found on a second look, left alone"
        reason = f"instance {node.instance_id} disappeared (found by reconcile)"
        if node.state in UNJOINED or node.state == "failed":
            return _fail_release(ctx, node.name, reason)
        return _retire_gone(ctx, node.name, reason)
    if kind == "orphan_key":
        if ctx.registry.get(item["node"]) is not None:
            return "node allocated meanwhile, left alone"
        ctx.keys.delete(item["node"])
        return "deleted"
    if kind == "orphan_slurm_node":
        name = item["node"]
        if ctx.registry.get(name) is not None:
            return "node allocated meanwhile, left alone"
        requeued = _requeue_jobs(ctx, name)
        done = f"requeued jobs {', '.join(map(str, requeued))}; " if requeued else ""
        if item["dynamic"]:
            try:
                ctx.slurm.delete_node(name)
            except VclusterError as exc:
                if "invalid node name" not in str(exc).lower():
                    raise
            return done + "deleted from Slurm"
        words = item["state"].split("+")
        if "CLOUD" in words:
            return done + "left to Slurm's power saving (cloud node; no instance to delete)"
        if "DOWN" in words:
            return done + "already down"
        ctx.slurm.update_node(name, "DOWN", reason="vcluster reconcile: no instance")
        return done + "set DOWN"
    if kind == "preemption_over":
        reason = PREEMPTED_PREFIX + item["job"]
        if not any((n := ctx.registry.get(name)) is not None and n.state == "suspended" and n.reason == reason
                   for name in item["nodes"]):
            return "resumed meanwhile"
        ret = preempt.job_ended(ctx, item["job"])
        if not ret["result"]:
            raise VclusterError(ret["comment"])
        return ret["comment"]
    if kind == "stuck":
        node = ctx.registry.get(item["node"])
        if node is None or node.state != item["state"] or time.time() - node.updated <= item["limit"]:
            return "moved on meanwhile, left alone"
        return _unstick(ctx, item)
    raise ValueError(kind)
