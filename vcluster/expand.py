"""Expand and join: new virtual nodes, from a request to Slurm ``ready``.

:func:`expand` validates the request, allocates and creates the nodes
(:func:`vcluster.lifecycle.allocate`, :func:`vcluster.lifecycle.create`) and
waits on the event bus until each is ``ready`` or released; :func:`join`
is the reactor's handler of a started minion: highstate, then Slurm
registration by the node's membership (:mod:`vcluster.membership`). Every
move is a :mod:`vcluster.lifecycle` call: one transition, one audit row,
one event, so a crash between two steps leaves a state reconcile recognises.
"""

import logging
import time
import uuid

import hostlist

from vcluster import lifecycle, membership
from vcluster import policy as _policy
from vcluster.arguments import flag, positive_int
from vcluster.errors import InvalidTransition, VclusterError, sentence
from vcluster.nodestates import UNJOINED
from vcluster.slurm import instance as _instance

log = logging.getLogger(__name__)


def _request(ctx, profile, count):
    """Validate an expand request against policy and current use; the Profile."""
    count = positive_int(count, "count")
    return _policy.validate_request(ctx.policy, profile, count, ctx.registry.counts()), count


def _preview(ctx, profile, count):
    """Names and addresses expand would take now, without taking them."""
    pool = ctx.policy.pools[profile.pool]
    held = ctx.registry.nodes(pool=pool.name)
    used_names = {n.name for n in held}
    used_addrs = {n.address for n in held}
    names = [n for n in pool.names if n not in used_names][:count]
    addrs = [a for a in pool.addresses if a not in used_addrs][:count]
    return names, addrs


# -- plan and expand ----------------------------------------------------------

def plan(ctx, profile, count):
    """What ``expand`` would do, with no side effect."""
    prof, count = _request(ctx, profile, count)
    names, addrs = _preview(ctx, prof, count)
    ok = len(names) == count and len(addrs) == count
    return {
        "result": ok,
        "profile": prof.name,
        "provider": prof.provider,
        "membership": ctx.policy.membership_of(prof.name),
        "count": count,
        "nodes": dict(zip(names, addrs, strict=True)),
        "comment": (
            f"would create {count} node(s) of profile {prof.name}"
            if ok
            else f"pool {prof.pool} has only {min(len(names), len(addrs))} free name/address pair(s) for {count}"
        ),
    }


def expand(ctx, profile, count, test=False, wait=True):
    """Create ``count`` virtual nodes of ``profile`` and wait until they join.

    Returns a dict with ``result``, ``comment`` and ``nodes`` (name -> state,
    address, instance, reason). Every failure releases what it took.
    """
    prof, count = _request(ctx, profile, count)
    test = flag(test, "test")
    wait = flag(wait, "wait")
    if test:
        ret = plan(ctx, profile, count)
        ret["result"] = None if ret["result"] else False
        return ret

    provider = ctx.provider(prof.provider)
    request_id = uuid.uuid4().hex[:12]
    nodes = lifecycle.allocate(ctx, prof, request_id, count=count)
    names = [n.name for n in nodes]
    ctx.events.progress(f"allocated {hostlist.collect_hostlist(names)}", nodes=names)

    failure = lifecycle.create(ctx, prof, provider, nodes, request_id)
    if failure:
        return {"result": False, "comment": failure, "request": request_id,
                "nodes": {n.name: {"state": "released", "reason": failure} for n in nodes}}

    ctx.events.progress(f"created {len(nodes)} instance(s); waiting for them to join", nodes=names)
    if not wait:
        return _summary(ctx, names, request_id)
    deadline = time.monotonic() + prof.join_timeout
    # "failed" is transitional: the join handler releases right after it.
    ctx.events.wait_for_nodes(ctx.registry, names, ("ready", "released"), deadline)
    for name in names:
        node = ctx.registry.get(name)
        if node is None:
            continue
        if node.state in UNJOINED:
            lifecycle.fail(ctx, name, f"did not join Slurm within {prof.join_timeout} s")
        elif node.state == "failed":
            lifecycle.release(ctx, name, node.reason or "failed")
    return _summary(ctx, names, request_id)


def _summary(ctx, names, request_id):
    nodes = {}
    for name in names:
        node = ctx.registry.get(name)
        if node is None:
            gone = ctx.registry.get(name, include_released=True)
            nodes[name] = {"state": "released", "reason": gone.reason if gone else None}
        else:
            nodes[name] = {"state": node.state, "address": node.address,
                           "instance": node.instance_id, "host": node.host, "reason": node.reason}
    ready = [n for n, v in nodes.items() if v["state"] == "ready"]
    failed = {n: v["reason"] for n, v in nodes.items() if v["state"] != "ready"}
    comment = f"{len(ready)} of {len(names)} node(s) ready"
    if failed:
        comment += "; " + "; ".join(f"{n}: {r}" for n, r in sorted(failed.items()))
    return {"result": not failed, "comment": comment, "request": request_id, "nodes": nodes}


# -- join (reactor: salt/minion/<id>/start) -----------------------------------

def join(ctx, minion_id):
    """Configure and register a freshly started registry node.

    Unknown minion ids are only logged: a minion start event is no reason to
    touch anything that vcluster did not create.
    """
    node = ctx.registry.get(minion_id) if isinstance(minion_id, str) else None
    if node is None or node.state == "released":
        log.info("minion %r started; not a vcluster node, ignored", minion_id)
        return {"result": True, "ignored": True, "comment": f"{minion_id!r} is not a vcluster node"}
    if node.state != "booting":
        log.info("minion %s started in state %s; nothing to join", node.name, node.state)
        return {"result": True, "ignored": True,
                "comment": f"{node.name} is {node.state}, not booting"}
    try:
        lifecycle.move(ctx, node.name, "joining", expect="booting")
    except InvalidTransition:
        return {"result": True, "ignored": True, "comment": f"{node.name} is already being joined"}
    prof = ctx.policy.profiles[node.profile]
    deadline = time.monotonic() + prof.join_timeout
    pending = None
    try:
        pending = membership.prepare(ctx, node, timeout=_left(deadline))
        ok, summary = ctx.salt.highstate(node.name, timeout=_left(deadline))
        if not ok:
            raise VclusterError(f"highstate failed: {summary}")
        state = membership.join(ctx, node, timeout=_left(deadline), pending=pending)
        lifecycle.move(ctx, node.name, "ready", expect="joining", event={"slurm_state": state})
    except InvalidTransition:
        _cancel(pending)
        log.info("node %s left the joining state while being joined (expand gave up)", node.name)
        return {"result": False, "comment": f"{node.name} was failed by its expand while joining"}
    except Exception as exc:  # noqa: BLE001 - any failure fails the node
        _cancel(pending)  # before the release: nothing of the node outlives its expand
        reason = sentence(exc)
        lifecycle.fail(ctx, node.name, reason)
        return {"result": False, "comment": f"{node.name}: {reason}"}
    _instance.record(ctx, node.name)  # Slurm's cloud accounting (23.11+); warns, never fails the join
    return {"result": True, "comment": f"{node.name} is ready ({state})"}


def _cancel(pending):
    """Stop a registration wait that the join will not collect (a no-op once collected)."""
    if pending is not None:
        pending.cancel()


def _left(deadline):
    return max(1, int(deadline - time.monotonic()))
