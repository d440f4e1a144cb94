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

One reconcile applies at a time (a lock in the registry, :mod:`vcluster.taskstate`); a second one
returns at once. The master's ``vcluster_tasks`` engine runs it (see
:mod:`vcluster.periodic`), every ``vcluster:reconcile:interval`` seconds.
"""

import contextlib
import logging
import time

from vcluster import taskstate
from vcluster.arguments import flag, seconds
from vcluster.errors import PolicyError, RegistryError, sentence
from vcluster.reconcile_repair import repair
from vcluster.reconcile_survey import KINDS, survey

log = logging.getLogger(__name__)

#: How often the master's ``vcluster_tasks`` engine looks whether a run is due (seconds).
SCHEDULE_TICK = taskstate.TICKS["reconcile"]


@contextlib.contextmanager
def _exclusive(registry):
    """Hold reconcile's lock in the registry's database (:func:`vcluster.taskstate.lock`); False: another has it."""
    path = getattr(registry, "path", ":memory:")
    with taskstate.lock(path, "reconcile", legacy=path + ".reconcile.lock") as held:
        yield held


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
                    repairs.append(_apply_one(ctx, kind, item))
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


def _apply_one(ctx, kind, item):
    subject = {k: item[k] for k in ("node", "instance", "job") if k in item}
    out = dict(subject, kind=kind)
    try:
        out["action"] = repair(ctx, kind, item)
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


def _mark_run(registry):
    try:
        taskstate.mark_run(getattr(registry, "path", ":memory:"), "reconcile")
    except RegistryError as exc:
        log.warning("reconcile: cannot record its run: %s", exc)


def last_run(registry):
    """Unix time of the last finished reconcile, or ``None`` (an older ``<registry>.reconcile-last`` is taken over)."""
    path = getattr(registry, "path", ":memory:")
    return taskstate.last_run(path, "reconcile", stamp=path + ".reconcile-last")


def due(policy, registry, now=None):
    """``(due, why)``: whether a scheduled reconcile should run now."""
    interval = policy.reconcile.interval
    if interval <= 0:
        return False, "vcluster:reconcile:interval is 0: scheduled reconcile is off"
    now = time.time() if now is None else now
    return taskstate.due(last_run(registry), interval, now, SCHEDULE_TICK, "reconcile")


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
