"""Reconcile: make registry, provider, Salt keys and Slurm agree again.

Four views of the same virtual nodes can drift apart: a crash between two
steps of expand or retire, a container deleted by hand, a key accepted by
hand, a Slurm node left behind. :func:`reconcile` reads all four, reports
each disagreement and, with ``apply=True``, repairs it:

=======================  ==========================================================
kind                     repair
=======================  ==========================================================
``orphan_instance``      an instance tagged with this cluster that no active
                         registry node owns: deleted
``duplicate_instance``   several instances claim one node: the one the registry
                         names stays, the others are deleted
``node_without_instance``  the registry node's instance is gone: a node still
                         joining is failed and released; a joined node is
                         retired (its jobs requeued, Slurm node and key removed)
``orphan_key``           a minion key (accepted, pending, rejected or denied) of
                         a pool name without an active node: deleted. A guest
                         that outlived its key leaves a pending one; deleted,
                         a later node of that name starts clean
``orphan_slurm_node``    a Slurm node of a pool name without an active node: its
                         jobs requeued, then deleted (dynamic) or set DOWN
``stuck``                a transition interrupted by a crash, older than its
                         limit (``join_timeout`` for booting/joining, else
                         ``vcluster:reconcile:grace``): finished or undone
``preemption_over``      nodes suspended by a preempting job that no longer
                         runs (its end event was lost): resumed, or moved,
                         as that event would have (:mod:`vcluster.preempt`)
=======================  ==========================================================

Each repair is one registry transition (compare-and-set, so an expand,
retire or join running at the same time wins or loses cleanly) and one event
``vcluster/reconcile/<kind>``. Views are read in the order provider, keys,
Slurm, registry: everything vcluster creates is entered in the registry
first, so an object seen before the registry was read and missing from it is
really an orphan, not a node being born. A provider, key store or Slurm that
cannot be read is reported and its checks are skipped: nothing is deleted on
the strength of a failed listing.

One reconcile applies at a time (``<registry>.reconcile.lock``); a second one
returns at once. The master's ``vcluster_tasks`` engine runs it (see
:mod:`vcluster.periodic`), every ``vcluster:reconcile:interval`` seconds.
"""

import contextlib
import fcntl
import logging
import os
import time

import hostlist

from vcluster import preempt, suspend
from vcluster.arguments import flag, seconds
from vcluster.errors import InvalidTransition, PolicyError, RegistryError, VclusterError, sentence
from vcluster.slurm import states

log = logging.getLogger(__name__)

#: Report sections, in the order repairs run.
KINDS = (
    "orphan_instance",
    "duplicate_instance",
    "node_without_instance",
    "orphan_key",
    "orphan_slurm_node",
    "stuck",
    "preemption_over",
)
#: States that have not joined Slurm yet: undone by fail + release.
UNJOINED = ("allocated", "booting", "joining")
#: From a joined state to ``retiring`` along allowed transitions.
TO_RETIRING = {
    "ready": ("draining", "retiring"),
    "draining": ("retiring",),
    "suspending": ("ready", "draining", "retiring"),
    "suspended": ("resuming", "ready", "draining", "retiring"),
    "resuming": ("ready", "draining", "retiring"),
    "migrating": ("ready", "draining", "retiring"),
    "retiring": (),
}
#: Slurm words of a cloud-mode node in Slurm's power-saving hands: powered off
#: (no instance expected), or powering up (Slurm waits ResumeTimeout, then runs
#: ResumeFailProgram and requeues its jobs itself).
POWER_MANAGED = frozenset({"POWERED_DOWN", "POWERING_DOWN", "POWER_DOWN", "POWERING_UP", "POWER_UP"})
#: How often the master's ``vcluster_tasks`` engine looks whether a run is due (seconds).
SCHEDULE_TICK = 60


# -- gathering ------------------------------------------------------------------


class Survey:
    """The four views, read once, in a safe order."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.started = time.time()
        self.errors = []
        self.instances = {}  # provider name -> [Instance]; missing key: listing failed
        policy = ctx.policy
        for prov_name in sorted(policy.providers):
            try:
                self.instances[prov_name] = list(ctx.provider(prov_name).list(policy.cluster))
            except Exception as exc:  # noqa: BLE001 - reported, its checks skipped
                self.errors.append(f"provider {prov_name}: {sentence(exc)}")
        try:
            self.keys = ctx.keys.all()  # name -> accepted / pending / rejected / denied
        except Exception as exc:  # noqa: BLE001
            self.keys = None
            self.errors.append(f"minion keys: {sentence(exc)}")
        try:
            self.slurm = list(ctx.slurm.nodes())
        except Exception as exc:  # noqa: BLE001
            self.slurm = None
            self.errors.append(f"slurm: {sentence(exc)}")
        # the registry last: see the module doc
        self.held = {n.name: n for n in ctx.registry.nodes()}
        self.pool_names = set()
        for pool in policy.pools.values():
            self.pool_names.update(pool.names)


def _owns(node, inst):
    """Whether registry ``node`` accounts for provider instance ``inst``."""
    if node.instance_id is not None:
        return node.instance_id == inst.id
    # created, but the crash came before the id was written: the request tag says whose it is
    tag = inst.tags.get("registry_id")
    return tag is None or tag == node.request_id


def survey(ctx, grace=None, now=None):
    """Every disagreement, by kind; nothing is changed. Returns ``(findings, survey)``."""
    s = Survey(ctx)
    now = s.started if now is None else now
    override = grace  # given: one limit for every state, join states included
    grace = ctx.policy.reconcile.grace if grace is None else grace
    found = {kind: [] for kind in KINDS}

    owned = {}  # node name -> [(provider, Instance)] it owns
    for prov_name, insts in s.instances.items():
        for inst in insts:
            name = inst.tags.get("node") or inst.name
            node = s.held.get(name)
            if node is not None and node.provider == prov_name and _owns(node, inst):
                owned.setdefault(name, []).append((prov_name, inst))
            else:
                found["orphan_instance"].append({
                    "provider": prov_name, "instance": inst.id, "node": name,
                    "why": "no active registry node" if node is None else
                    f"registry node {name} has instance {node.instance_id or 'none'}",
                })
    for name, claims in sorted(owned.items()):
        if len(claims) > 1:
            node = s.held[name]
            keep = node.instance_id if node.instance_id in {i.id for _, i in claims} else None
            found["duplicate_instance"].append({
                "node": name, "state": node.state, "keep": keep,
                "instances": sorted(i.id for _, i in claims),
                "providers": sorted({p for p, _ in claims}),
            })

    listed = {p: {i.id for i in insts} for p, insts in s.instances.items()}
    for node in s.held.values():
        if not node.instance_id or node.provider not in listed:
            continue
        # an id written after the listing started may belong to an instance it could not see
        if node.instance_id not in listed[node.provider] and node.updated < s.started:
            found["node_without_instance"].append({
                "node": node.name, "state": node.state, "instance": node.instance_id,
                "provider": node.provider,
            })

    if s.keys is not None:
        for key in sorted(set(s.keys) & s.pool_names):
            if key not in s.held:
                found["orphan_key"].append({"node": key, "key_state": s.keys[key]})

    if s.slurm is not None:
        for snode in s.slurm:
            name = snode.get("name")
            words = set(snode.get("state") or [])
            if not snode.get("dynamic") and words & POWER_MANAGED:
                continue  # cloud mode: powered off, or powering up under Slurm's own deadline
            if name in s.pool_names and name not in s.held:
                found["orphan_slurm_node"].append({
                    "node": name, "state": "+".join(snode.get("state") or []) or "unknown",
                    "dynamic": bool(snode.get("dynamic")),
                })

    gone = {f["node"] for f in found["node_without_instance"]}
    for node in s.held.values():
        if node.name in gone or node.state in ("ready", "draining", "suspended"):
            continue
        age = now - node.updated
        limit = grace
        if node.state == "allocated" and override is None:
            # an expand may still be inside its (retried) provider create
            limit = max(grace, getattr(getattr(ctx.policy, "faults", None), "create_deadline", 0))
        if node.state in ("booting", "joining") and override is None:
            prof = ctx.policy.profiles.get(node.profile)
            limit = prof.join_timeout if prof is not None else grace
        if age > limit:
            found["stuck"].append({
                "node": node.name, "state": node.state, "age": round(age, 1), "limit": limit,
                "instance": node.instance_id,
                "owned": sorted(i.id for _, i in owned.get(node.name, [])),
            })

    if s.slurm is not None:
        try:
            ended = preempt.over(ctx, [n for n in s.held.values() if n.name not in gone])
        except Exception as exc:  # noqa: BLE001 - reported, the check skipped
            ended = {}
            s.errors.append(f"slurm jobs: {sentence(exc)}")
        for job_id, item in ended.items():
            found["preemption_over"].append({
                "job": job_id, "node": hostlist.collect_hostlist(item["nodes"]), "nodes": item["nodes"],
                "job_state": item["job_state"],
            })
    return found, s


# -- repairs ----------------------------------------------------------------------


def _engine():
    from vcluster import engine  # late: engine imports this module

    return engine


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
    eng = _engine()
    node = ctx.registry.get(name)
    if node is None:
        return "already released"
    for prov_name, iid in extra_instances:
        if iid != node.instance_id:
            ctx.provider(prov_name).delete([iid])
    if node.state != "failed":
        try:
            ctx.registry.transition(name, "failed", reason=reason, expect=UNJOINED, actor=ctx.actor)
        except InvalidTransition as exc:
            return f"left alone: {sentence(exc)}"
        ctx.node_event(name, "failed", reason=reason)
    try:
        eng._release(ctx, name, reason)
    except RegistryError:
        if ctx.registry.get(name) is None:  # an expand or join handler released it first
            return "released by another process"
        raise
    return "failed and released"


def _retire_gone(ctx, name, reason, delete_instance=False):
    """Walk a joined node to ``retiring`` and finish its removal."""
    from vcluster import membership

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
            ctx.registry.transition(name, state, reason=reason, expect=current.state, actor=ctx.actor)
        except InvalidTransition as exc:
            return f"left alone: {sentence(exc)}"
        ctx.node_event(name, state, reason=reason)
    node = ctx.registry.get(name)
    requeued = []
    try:
        requeued = _requeue_jobs(ctx, name)
    except VclusterError as exc:
        log.warning("reconcile: cannot requeue the jobs of %s: %s", name, exc)
    if delete_instance and node.instance_id:
        ctx.provider(node.provider).delete([node.instance_id])
    membership.leave(ctx, node, timeout=120)
    ctx.keys.delete(name)
    ctx.registry.release(name, reason, expect="retiring", actor=ctx.actor)
    ctx.node_event(name, "released", reason=reason)
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
    ctx.registry.transition(name, target, reason=f"{state} interrupted (instance {status})",
                            expect=state, actor=ctx.actor)
    ctx.node_event(name, target, reason="reconcile")
    return f"moved to {target}"


def _repair(ctx, kind, item, s):
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
        reason = suspend.PREEMPTED_PREFIX + item["job"]
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


@contextlib.contextmanager
def _exclusive(registry):
    """Hold ``<registry>.reconcile.lock``; yields False when another reconcile has it."""
    path = getattr(registry, "path", ":memory:")
    if path == ":memory:" or path.startswith("file::memory:"):
        yield True
        return
    fd = os.open(path + ".reconcile.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


#: What a repair of each kind would do, for ``test=True`` (see the module table).
WOULD = {
    "orphan_instance": "would delete instance {instance} of provider {provider} ({why})",
    "duplicate_instance": "would keep the instance the registry names for {node} and delete the others of {instances}",
    "node_without_instance": "would retire {node} ({state}; its instance {instance} is gone), requeueing its jobs",
    "orphan_key": "would delete the {key_state} minion key of {node} (no active node)",
    "orphan_slurm_node": "would requeue the jobs of Slurm node {node} ({state}, no active node) and remove it",
    "stuck": "would finish or undo the {state} of {node} (unchanged for {age} s, limit {limit} s)",
    "preemption_over": "would resume {node}, suspended for job {job} that is {job_state}",
}


def would(kind, item):
    """One sentence: what the repair of finding ``item`` of ``kind`` would do."""
    fields = dict(item)
    if "instances" in fields:
        fields["instances"] = ", ".join(map(str, fields["instances"]))
    try:
        return WOULD[kind].format(**fields)
    except (KeyError, IndexError):
        return f"would repair {kind} {item.get('node') or item.get('instance')}"


def reconcile(ctx, apply=False, grace=None, test=False):
    """Compare registry, provider instances, minion keys and Slurm; report, and repair with ``apply``.

    ``grace`` (seconds) replaces, for this run, both ``vcluster:reconcile:grace``
    and the profiles' ``join_timeout`` as the age at which an interrupted
    transition counts as stuck (``grace=0`` after a known crash: undo every
    interrupted transition now). Returns ``report`` (findings by kind), ``repairs`` (one per finding when
    applied: kind, node/instance, action or error) and ``errors`` (views that
    could not be read).

    ``test=True`` reads the same views and says, per finding, what its
    repair would do (``would``); it repairs nothing, fires no event and
    does not count as a run for the schedule.
    """
    apply = flag(apply, "apply")
    grace = None if grace is None else seconds(grace, "grace")
    test = flag(test, "test")
    started = time.monotonic()
    if test:
        found, s = survey(ctx, grace=grace)
        plan = [dict({k: item[k] for k in ("node", "instance", "job") if k in item}, kind=kind,
                     would=would(kind, item)) for kind in KINDS for item in found[kind]]
        comment = (f"{len(plan)} inconsistency(ies) found; " + "; ".join(p["would"] for p in plan)
                   if plan else "0 inconsistency(ies) found; nothing would be repaired")
        if s.errors:
            comment += "; could not read " + "; ".join(s.errors) + " (their checks were skipped)"
        return {"result": None if plan or s.errors else True, "test": True, "comment": comment,
                "report": found, "would": plan, "errors": s.errors,
                "seconds": round(time.monotonic() - started, 3)}
    with _exclusive(ctx.registry) as mine:
        if not mine:
            return {"result": True, "skipped": True,
                    "comment": "another reconcile is running; this one did nothing"}
        found, s = survey(ctx, grace=grace)
        found_count = sum(len(v) for v in found.values())
        ctx.events.progress(f"reconcile: {found_count} inconsistency(ies) found"
                            + ("; repairing them" if apply and found_count else ""), found=found_count)
        repairs = []
        if apply:
            for kind in KINDS:
                for item in found[kind]:
                    repairs.append(_apply_one(ctx, kind, item, s))
                    done = repairs[-1]
                    ctx.events.progress(
                        f"reconcile: {kind} {done.get('node') or done.get('instance') or done.get('job')}: "
                        f"{done.get('action') or 'failed: ' + str(done.get('error'))}",
                        kind=kind, repaired=len(repairs), of=found_count)
        _mark_run(ctx.registry)
    problems = found_count
    failed = [r for r in repairs if r.get("error")]
    if apply:
        comment = f"{problems} inconsistency(ies) found, {problems - len(failed)} repaired"
        if failed:
            comment += "; failed: " + "; ".join(f"{r['kind']} {r.get('node') or r.get('instance')}: {r['error']}"
                                               for r in failed)
        result = not failed and not s.errors
    else:
        comment = f"{problems} inconsistency(ies) found"
        result = problems == 0 and not s.errors
    if s.errors:
        comment += "; could not read " + "; ".join(s.errors) + " (their checks were skipped)"
    return {
        "result": result,
        "comment": comment,
        "applied": apply,
        "report": found,
        "repairs": repairs,
        "errors": s.errors,
        "seconds": round(time.monotonic() - started, 3),
    }


def _apply_one(ctx, kind, item, s):
    subject = {k: item[k] for k in ("node", "instance", "job") if k in item}
    out = dict(subject, kind=kind)
    try:
        out["action"] = _repair(ctx, kind, item, s)
    except RegistryError as exc:
        # the node left the registry under our feet: an expand, retire or join handler won the race
        if "node" in item and ctx.registry.get(item["node"]) is None and kind not in ("orphan_key", "preemption_over"):
            out["action"] = "released by another process meanwhile"
        else:
            out["error"] = sentence(exc)
            log.warning("reconcile: %s %s not repaired: %s", kind, subject, out["error"])
    except Exception as exc:  # noqa: BLE001 - one failed repair must not stop the others
        out["error"] = sentence(exc)
        log.warning("reconcile: %s %s not repaired: %s", kind, subject, out["error"])
    else:
        log.info("reconcile: %s %s: %s", kind, subject, out["action"])
    try:
        ctx.events.fire(f"vcluster/reconcile/{kind}", dict(out, finding=item))
    except Exception:  # noqa: BLE001 - the repair is done; the event is a courtesy
        log.warning("reconcile: could not fire the event of %s %s", kind, subject, exc_info=True)
    return out


# -- schedule -------------------------------------------------------------------


def _stamp(registry):
    path = getattr(registry, "path", ":memory:")
    if path == ":memory:" or path.startswith("file::memory:"):
        return None
    return path + ".reconcile-last"


def _mark_run(registry):
    stamp = _stamp(registry)
    if stamp is None:
        return
    try:
        with open(stamp, "w", encoding="ascii") as fh:
            fh.write(f"{time.time():.3f}\n")
    except OSError as exc:
        log.warning("reconcile: cannot write %s: %s", stamp, exc)


def last_run(registry):
    """Unix time of the last finished reconcile, or ``None``."""
    stamp = _stamp(registry)
    try:
        with open(stamp, encoding="ascii") as fh:
            return float(fh.read().strip())
    except (TypeError, OSError, ValueError):
        return None


def due(policy, registry, now=None):
    """``(due, why)``: whether a scheduled reconcile should run now."""
    interval = policy.reconcile.interval
    if interval <= 0:
        return False, "vcluster:reconcile:interval is 0: scheduled reconcile is off"
    now = time.time() if now is None else now
    last = last_run(registry)
    # half a tick of slack: the schedule's tick is not exact
    if last is not None and now - last < interval - SCHEDULE_TICK / 2:
        return False, f"last reconcile {now - last:.0f} s ago, interval {interval:g} s"
    return True, "due"


def scheduled(ctx):
    """The periodic entry point: reconcile when due, with ``vcluster:reconcile:apply``."""
    ok, why = due(ctx.policy, ctx.registry)
    if not ok:
        return {"result": True, "skipped": True, "comment": why}
    return reconcile(ctx, apply=ctx.policy.reconcile.apply)


def run(ctx, apply=False, grace=None, scheduled=False, test=False):
    """The runner's entry point: :func:`scheduled` or :func:`reconcile`."""
    if flag(scheduled, "scheduled"):
        if flag(test, "test"):
            raise PolicyError("test must be False with scheduled=True (the schedule never runs a dry run)")
        return globals()["scheduled"](ctx)
    return reconcile(ctx, apply=apply, grace=grace, test=test)


__all__ = ["run", "KINDS", "reconcile", "scheduled", "survey", "due", "last_run", "RegistryError"]
