"""Expand, join, retire, shrink, status, plan and reconcile.

Written against :mod:`vcluster.context` interfaces; the Salt runner wires
them to the real master, minions and Slurm controller. Every step that
changes something is one registry transition and one event, so a crash
between two steps leaves a state that reconcile recognises.
"""

import concurrent.futures
import logging
import os
import time
import uuid

import hostlist

from vcluster import bootstrap, membership, retry
from vcluster import policy as _policy
from vcluster.arguments import flag, node_names, positive_int, whole_seconds
from vcluster.errors import (
    InvalidTransition,
    PolicyError,
    RegistryError,
    VclusterError,
    sentence,
)
from vcluster.slurm import instance as _instance
from vcluster.slurm import states

log = logging.getLogger(__name__)

#: States in which a node may be retired by the admin (a suspended node only
#: when it holds no job: suspended jobs are not finished, see retire).
RETIRABLE = ("ready", "draining", "failed", "suspended")


# -- input validation --------------------------------------------------------

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

    pool = ctx.policy.pools[prof.pool]
    provider = ctx.provider(prof.provider)
    request_id = uuid.uuid4().hex[:12]
    mode = ctx.policy.membership_of(prof.name)
    attrs = {"cpus": prof.cpus, "memory": prof.memory, "features": list(prof.features),
             "partition": prof.partition, "membership": mode}
    nodes = ctx.registry.allocate(pool, prof.name, prof.provider, count, request_id,
                                  membership=mode, actor=ctx.actor, attrs=attrs)
    names = [n.name for n in nodes]
    ctx.events.progress(f"allocated {hostlist.collect_hostlist(names)}", nodes=names)
    for n in nodes:
        ctx.node_event(n.name, "allocated", address=n.address, profile=prof.name, request=request_id)

    failure = launch(ctx, prof, provider, nodes, request_id)
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
        if node.state in ("allocated", "booting", "joining"):
            fail_node(ctx, name, f"did not join Slurm within {prof.join_timeout} s")
        elif node.state == "failed":
            _release(ctx, name, node.reason or "failed")
    return _summary(ctx, names, request_id)


def launch(ctx, prof, provider, nodes, request_id):
    """Create the instances of allocated ``nodes``; ``None``, or why it failed.

    Nodes are ``booting`` before the provider is called: a guest may boot
    and its minion start before the provider's create call returns, and the
    join handler acts on booting nodes only. On failure everything is
    rolled back (instances, keys, names, addresses).
    """
    # one transaction for the whole request (all or none), then the events
    ctx.registry.transition_many([n.name for n in nodes], "booting", expect="allocated", actor=ctx.actor)
    for n in nodes:
        ctx.node_event(n.name, "booting")
    created = []
    try:
        held = ctx.keys.all()  # one listing; only a name with a key left needs a delete first
        specs = _specs(ctx, prof, nodes, request_id, held)
        ctx.events.progress(f"creating {len(specs)} instance(s) with provider {prof.provider}",
                            nodes=[s.name for s in specs])
        instances = retry.create(ctx, prof, provider, specs)  # bounded retries, paused profiles
        created = [i.id for i in instances]
    except Exception as exc:  # noqa: BLE001 - every failure must roll back
        reason = f"creating instances failed: {sentence(exc)}"
        log.warning("expand %s: %s", request_id, reason)
        if created:
            _quietly(provider.delete, created)
        for n in nodes:
            _release(ctx, n.name, reason, delete_instance=False)
        return reason
    # one transaction for the request; a node failed and released while the
    # create call ran is skipped there, and its instance deleted: no orphan
    gone = ctx.registry.update_many({n.name: {"instance_id": inst.id, "host": inst.host}
                                     for n, inst in zip(nodes, instances, strict=True)})
    for n, inst in zip(nodes, instances, strict=True):
        if n.name in gone:
            _quietly(provider.delete, [inst.id])
            continue
        ctx.node_event(n.name, "created", instance=inst.id, host=inst.host)
    return None


def _specs(ctx, prof, nodes, request_id, held):
    """The instance specs of ``nodes``, their key pairs generated on every core.

    RSA key generation (about 46 ms per node here) releases the GIL: a burst
    of 32 nodes generated one after another spent 1.5 s before the first
    create call, on two cores it takes half that in two threads.
    """
    ctx.keys.master_pub()  # asked once, before the threads
    workers = min(len(nodes), os.cpu_count() or 1)
    if workers <= 1:
        return [_spec(ctx, prof, n, request_id, stale_key=n.name in held) for n in nodes]
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="vcluster-keys") as pool:
        return list(pool.map(lambda n: _spec(ctx, prof, n, request_id, stale_key=n.name in held), nodes))


def _spec(ctx, prof, node, request_id, stale_key=True):
    from vcluster.providers.base import InstanceSpec

    keys = ctx.keys.gen_accept(node.name, clear=stale_key)
    files = bootstrap.boot_files(
        node.name, prof, ctx.policy.membership_of(prof.name), ctx.policy.master, keys,
        ctx.keys.master_pub(), master_port=ctx.master_ports[0], publish_port=ctx.master_ports[1],
    )
    return InstanceSpec(
        name=node.name,
        address=node.address,
        image=prof.image,
        cpus=prof.cpus,
        memory_mb=prof.memory,
        flavor=prof.flavor,
        network=prof.network,
        boot_files=files,
        tags={"cluster": ctx.policy.cluster, "node": node.name, "profile": prof.name,
              "registry_id": request_id},
        extra=dict(prof.extra),
    )


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
        ctx.registry.transition(node.name, "joining", expect="booting", actor=ctx.actor)
    except InvalidTransition:
        return {"result": True, "ignored": True, "comment": f"{node.name} is already being joined"}
    ctx.node_event(node.name, "joining")
    prof = ctx.policy.profiles[node.profile]
    deadline = time.monotonic() + prof.join_timeout
    pending = None
    try:
        pending = membership.prepare(ctx, node, timeout=_left(deadline))
        ok, summary = ctx.salt.highstate(node.name, timeout=_left(deadline))
        if not ok:
            raise VclusterError(f"highstate failed: {summary}")
        state = membership.join(ctx, node, timeout=_left(deadline), pending=pending)
        ctx.registry.transition(node.name, "ready", expect="joining", actor=ctx.actor)
    except InvalidTransition:
        _cancel(pending)
        log.info("node %s left the joining state while being joined (expand gave up)", node.name)
        return {"result": False, "comment": f"{node.name} was failed by its expand while joining"}
    except Exception as exc:  # noqa: BLE001 - any failure fails the node
        _cancel(pending)  # before the release: nothing of the node outlives its expand
        reason = sentence(exc)
        fail_node(ctx, node.name, reason)
        return {"result": False, "comment": f"{node.name}: {reason}"}
    ctx.node_event(node.name, "ready", slurm_state=state)
    _instance.record(ctx, node.name)  # Slurm's cloud accounting (23.11+); warns, never fails the join
    return {"result": True, "comment": f"{node.name} is ready ({state})"}


def _cancel(pending):
    """Stop a registration wait that the join will not collect (a no-op once collected)."""
    if pending is not None:
        pending.cancel()


def fail_node(ctx, name, reason):
    """Mark ``name`` failed and release everything it holds."""
    try:
        ctx.registry.transition(name, "failed", reason=reason, actor=ctx.actor)
    except (InvalidTransition, RegistryError):
        node = ctx.registry.get(name)
        if node is None or node.state != "failed":
            return
    ctx.node_event(name, "failed", reason=reason)
    _release(ctx, name, reason)


def _release(ctx, name, reason, delete_instance=True):
    """Delete instance, Slurm node and key of ``name``; free its name and address."""
    node = ctx.registry.get(name)
    if node is None:
        return
    if delete_instance and node.instance_id:
        _quietly(ctx.provider(node.provider).delete, [node.instance_id])
    if node.state in ("failed", "retiring") and membership.mode_of(ctx, node) == "dynamic":
        _quietly(ctx.slurm.delete_node, name, expected="invalid node name")
    _quietly(ctx.keys.delete, name)
    try:
        if node.state not in ("failed", "retiring"):
            ctx.registry.fail(name, reason, actor=ctx.actor)
        ctx.registry.release(name, reason, actor=ctx.actor)
    except RegistryError:
        # Failed twice at once (expand's deadline and the join handler):
        # the other one released it; that is the end state we want.
        if ctx.registry.get(name) is not None:
            raise
        return
    ctx.node_event(name, "released", reason=reason)


# -- retire and shrink --------------------------------------------------------

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
    found = {}
    for name in names:
        node = ctx.registry.get(name)
        if node is None or node.state == "released":
            raise PolicyError(f"nodes must be vcluster nodes; {name!r} is not in the registry")
        if node.state not in RETIRABLE:
            raise PolicyError(f"node {name} is {node.state}; only {', '.join(RETIRABLE)} nodes can be retired")
        found[name] = node
    holding = _suspended_with_jobs(ctx, found.values())
    if holding:
        raise PolicyError(f"suspended node(s) {hostlist.collect_hostlist(sorted(holding))} hold suspended jobs; "
                          f"resume them first (vcluster.resume), then retire")
    if test:
        return _retire_plan(ctx, found, force, wait)

    result = {}
    for name, node in found.items():
        if node.state == "failed":
            _release(ctx, name, "retired by admin")
            result[name] = "released"
            continue
        if node.state == "suspended":
            _remove(ctx, node, expect="suspended")
            result[name] = "released"
            continue
        if node.state == "ready":
            ctx.registry.transition(name, "draining", reason="retire", actor=ctx.actor)
            ctx.node_event(name, "draining")
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
            _remove(ctx, found[name])
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


def _remove(ctx, node, expect="draining"):
    ctx.registry.transition(node.name, "retiring", expect=expect, actor=ctx.actor)
    ctx.node_event(node.name, "retiring")
    if node.instance_id:
        ctx.provider(node.provider).delete([node.instance_id])
    membership.leave(ctx, ctx.registry.get(node.name), timeout=120)
    _quietly(ctx.keys.delete, node.name)
    ctx.registry.release(node.name, "retired")
    ctx.node_event(node.name, "released", reason="retired")


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


# -- status and reconcile ----------------------------------------------------

#: Columns of :func:`status_rows`, in order.
STATUS_COLUMNS = ("node", "state", "slurm", "instance", "jobs", "address", "profile", "host", "reason")


def status(ctx):
    """Every held node with its vcluster, provider and Slurm view.

    ``result`` is False when Slurm or a provider could not be asked: the
    nodes' Slurm state (and jobs) or instance status then read ``unknown``
    (never ``absent``), ``unknown`` names the part and the comment says why.
    ``jobs`` lists only jobs alive in Slurm (:data:`vcluster.slurm.states.JOB_ON_NODES`).
    """
    nodes = ctx.registry.nodes()
    unknown, why = [], []
    slurm, jobs = None, None
    try:
        slurm = {s["name"]: s for s in ctx.slurm.nodes()}
        jobs = {}
        for job in ctx.slurm.jobs():
            if job.get("state") not in states.JOB_ON_NODES:
                continue  # ended: squeue keeps it MinJobAge seconds with the nodes it ran on
            for name in job.get("nodes", []):
                jobs.setdefault(name, []).append(job["id"])
    except VclusterError as exc:
        slurm, jobs = None, None
        unknown.append("slurm")
        why.append(f"Slurm could not be asked ({sentence(exc)}): Slurm state and jobs are unknown")
    instances = {}
    for prov in sorted({n.provider for n in nodes}):
        try:
            instances[prov] = {i.id: i for i in ctx.provider(prov).list(ctx.policy.cluster)}
        except Exception as exc:  # noqa: BLE001 - reported, the column reads unknown
            unknown.append(f"provider {prov}")
            why.append(f"provider {prov} could not be asked ({sentence(exc)}): "
                       f"the instance status of its nodes is unknown")
    out = {}
    for n in sorted(nodes, key=lambda n: n.name):
        if slurm is None:
            slurm_state = "unknown"
        else:
            s = slurm.get(n.name)
            slurm_state = "+".join(s["state"]) if s and isinstance(s.get("state"), list) else (
                (s or {}).get("state") or "absent")
        if n.provider not in instances:
            inst_state = "unknown"
        elif not n.instance_id:
            inst_state = "none"
        else:
            inst = instances[n.provider].get(n.instance_id)
            inst_state = getattr(inst.status, "value", inst.status) if inst is not None else "absent"
        out[n.name] = {
            "address": n.address,
            "profile": n.profile,
            "provider": n.provider,
            "instance": n.instance_id,
            "instance_state": inst_state,
            "host": n.host,
            "state": n.state,
            "slurm": slurm_state,
            "jobs": None if jobs is None else sorted(jobs.get(n.name, []), key=_job_key),
            "reason": n.reason,
        }
    comment = f"{len(out)} node(s)"
    if why:
        comment += "; " + "; ".join(why)
    return {"result": not unknown, "comment": comment, "nodes": out, "count": len(out),
            "unknown": unknown, "warnings": _minion_warnings(ctx, nodes, slurm or {})}


def _job_key(job_id):
    text = str(job_id)
    main, _, task = text.partition("_")
    return (int(main) if main.isdigit() else 0, int(task) if task.isdigit() else -1, text)


def status_rows(ret):
    """A :func:`status` return as table rows: a header, then one list of strings per node."""
    rows = [[c.upper() for c in STATUS_COLUMNS]]
    for name, n in sorted((ret.get("nodes") or {}).items()):
        jobs = n.get("jobs")
        inst = n.get("instance") or "-"
        if n.get("instance_state") not in (None, "none"):
            inst = f"{inst} ({n['instance_state']})"
        cells = {
            "node": name, "state": n.get("state"), "slurm": n.get("slurm"), "instance": inst,
            "jobs": "unknown" if jobs is None else (",".join(str(j) for j in jobs) or "-"),
            "address": n.get("address"), "profile": n.get("profile"), "host": n.get("host"),
            "reason": n.get("reason"),
        }
        rows.append([str(cells[c]) if cells[c] not in (None, "") else "-" for c in STATUS_COLUMNS])
    return rows


def _minion_warnings(ctx, nodes, slurm):
    """A warning naming the watched nodes whose minion is not connected (liveness keeps them up)."""
    from vcluster import liveness  # pylint: disable=import-outside-toplevel

    watched = [n.name for n in nodes if n.state in liveness.WATCHED_STATES]
    watched += _try(lambda: liveness.watched_baremetal(ctx, slurm), default=[])
    silent = liveness.silent_minions(ctx, watched)
    if not silent:
        return []
    return [f"the minion of {', '.join(silent)} is not connected to the master: Salt cannot reach "
            f"{'it' if len(silent) == 1 else 'them'}; liveness keeps such a node up while its slurmd answers"]


# reconcile lives in vcluster/reconcile.py (it imports this module lazily)
from vcluster.reconcile import reconcile  # noqa: E402,F401

# -- helpers -------------------------------------------------------------------

def _left(deadline):
    return max(1, int(deadline - time.monotonic()))


def _try(func, default):
    try:
        return func()
    except VclusterError as exc:
        log.warning("%s", exc)
        return default


def _quietly(func, *args, expected=None):
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001 - clean-up must go on
        if expected and expected in str(exc).lower():
            return
        log.warning("clean-up step %s%r failed: %s", getattr(func, "__name__", func), args, exc)
