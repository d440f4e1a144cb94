"""Retire and shrink: drain virtual nodes, wait for (or requeue) their jobs, remove them.

A node leaves through :func:`vcluster.lifecycle.retire` (``retiring``, then
instance, Slurm node, key, name and address); a failed one through
:func:`vcluster.lifecycle.release`. No job is lost: a retire waits for the
jobs of a drained node, or with ``force`` requeues them.
"""

import time

import hostlist

from vcluster import lifecycle
from vcluster.arguments import flag, node_names, positive_int, whole_seconds
from vcluster.errors import PolicyError
from vcluster.nodestates import RETIRABLE
from vcluster.slurm import states


def retire(ctx, nodes, force=False, wait=600, test=False):
    """Drain ``nodes``, wait for their jobs, remove them everywhere.

    ``force=True`` requeues the jobs still running instead of waiting (the
    jobs go back to the queue; none is lost). Nodes whose jobs outlast
    ``wait`` seconds stay ``draining`` and are reported; run retire again.
    A ``suspended`` node is retired as it is (instance deleted frozen) when
    it holds no job, a warm-pool node for instance; one with suspended jobs
    is refused: resume it first, its jobs would have nowhere to go.
    ``test=True`` validates the same way, reads Slurm's jobs and says what
    would be done to each node; it changes nothing.
    """
    names = node_names(nodes)
    force = flag(force, "force")
    wait = whole_seconds(wait, "wait")
    test = flag(test, "test")
    found = lifecycle.held(ctx, names, RETIRABLE, "retired", sep=", ")
    holding = _suspended_with_jobs(ctx, found.values())
    if holding:
        raise PolicyError(f"suspended node(s) {hostlist.collect_hostlist(sorted(holding))} hold suspended jobs; "
                          f"resume them first (vcluster.resume), then retire")
    if test:
        return _retire_plan(ctx, found, force, wait)

    result = {}
    for name, node in found.items():
        if node.state == "failed":
            lifecycle.release(ctx, name, "retired by admin")
            result[name] = "released"
            continue
        if node.state == "suspended":
            lifecycle.retire(ctx, node, "retired", expect="suspended")
            result[name] = "released"
            continue
        if node.state == "ready":
            lifecycle.move(ctx, name, "draining", reason="retire")
        ctx.slurm.update_node(name, "DRAIN", reason="vcluster retire")

    draining = [n for n in found if n not in result]
    deadline = time.monotonic() + wait
    while draining:
        busy = _busy_nodes(ctx, draining)
        if force and busy:
            for job in ctx.slurm.jobs(nodes=sorted(busy)):
                if job.get("state") in states.JOB_ON_NODES:
                    ctx.slurm.requeue(job["id"])
            ctx.events.progress(f"requeued jobs on {hostlist.collect_hostlist(sorted(busy))}")
            busy = _busy_nodes(ctx, draining)
            if busy and time.monotonic() < deadline:
                time.sleep(1)
                continue
        idle = [n for n in draining if n not in busy]
        for name in idle:
            lifecycle.retire(ctx, found[name], "retired")
            result[name] = "released"
        draining = [n for n in draining if n in busy]
        if not draining or time.monotonic() >= deadline:
            break
        ctx.events.progress(f"waiting for jobs on {hostlist.collect_hostlist(draining)}")
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    for name in draining:
        result[name] = "draining"
    done = [n for n, s in result.items() if s == "released"]
    comment = f"retired {len(done)} of {len(names)} node(s)"
    if draining:
        comment += f"; {hostlist.collect_hostlist(draining)} still run jobs after {wait} s and stay draining"
    return {"result": not draining, "comment": comment, "nodes": result}


def _retire_plan(ctx, found, force, wait):
    """What :func:`retire` would do to ``found`` nodes (``test=True``); reads Slurm's jobs only."""
    draining = [n for n, node in found.items() if node.state in ("ready", "draining")]
    jobs = _live_jobs(ctx, draining)
    plan = {}
    for name, node in found.items():
        what = f"instance {node.instance_id}" if node.instance_id else "no instance"
        if node.state == "failed":
            plan[name] = f"would release {name} (failed: {node.reason or 'no reason kept'}), deleting {what}"
        elif node.state == "suspended":
            plan[name] = f"would delete the frozen {what} of {name} (it holds no job) and release it"
        elif jobs.get(name):
            ids = ", ".join(str(j) for j in jobs[name])
            if force:
                plan[name] = f"would drain {name}, requeue its job(s) {ids}, then delete {what} and release it"
            else:
                plan[name] = (f"would drain {name} and wait up to {wait} s for its job(s) {ids} to end, "
                              f"then delete {what} and release it")
        else:
            plan[name] = f"would drain {name} (no job runs on it), delete {what} and release it"
    comment = f"would retire {len(found)} node(s): " + "; ".join(plan[n] for n in found)
    return {"result": None, "test": True, "comment": comment, "nodes": plan}


def _live_jobs(ctx, names):
    """``{node: [job id, ...]}`` of the jobs holding ``names`` in Slurm; one call, none for no names."""
    out = {}
    if not names:
        return out
    for job in ctx.slurm.jobs(nodes=list(names)):
        if job.get("state") in states.JOB_ON_NODES:
            for n in job.get("nodes", []):
                if n in names:
                    out.setdefault(n, []).append(job["id"])
    return out


def _busy_nodes(ctx, names):
    busy = set()
    for job in ctx.slurm.jobs(nodes=names):
        if job.get("state") in states.JOB_ON_NODES:
            busy.update(n for n in job.get("nodes", []) if n in names)
    return busy


def _suspended_with_jobs(ctx, nodes, busy=None):
    """Names of the ``suspended`` ones of ``nodes`` that hold jobs (Slurm's view or the registry's)."""
    frozen = [n.name for n in nodes if n.state == "suspended"]
    if not frozen:
        return set()
    busy = _busy_nodes(ctx, frozen) if busy is None else busy
    return {n for n in frozen if n in busy or ctx.registry.jobs_on(n)}


def shrink(ctx, count, profile, force=False, wait=600, test=False):
    """Retire ``count`` nodes of ``profile``, idle ones first; ``test=True`` says which and how."""
    count = positive_int(count, "count")
    test = flag(test, "test")
    prof = ctx.policy.profile(profile)
    candidates = [n for n in ctx.registry.nodes(profile=prof.name) if n.state in RETIRABLE]
    busy = _busy_nodes(ctx, [n.name for n in candidates]) if candidates else set()
    # a suspended node with jobs cannot be retired (see retire): not a candidate
    held = _suspended_with_jobs(ctx, candidates, busy)
    candidates = [n for n in candidates if n.name not in held]
    if not candidates:
        return {"result": None if test else True, "comment": f"profile {prof.name} has no node to retire",
                "nodes": {}, **({"test": True} if test else {})}
    order = {"failed": 0, "ready": 1, "suspended": 2, "draining": 3}
    candidates.sort(key=lambda n: (n.name in busy, order.get(n.state, 9), n.name))
    chosen = [n.name for n in candidates[:count]]
    ret = retire(ctx, chosen, force=force, wait=wait, test=test)
    if len(chosen) < count:
        ret["comment"] += f"; profile {prof.name} had only {len(chosen)} retirable node(s)"
    return ret
