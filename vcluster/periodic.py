"""vcluster's periodic work on the master: liveness, autoscale, reconcile.

The ``vcluster_tasks`` master engine (``_engines/vcluster_tasks.py``) runs
:func:`serve`: one long-lived thread per task, each running its task every
``SCHEDULE_TICK`` seconds of the task's module. Each run gets a fresh
context (the master's pillar compiled again, so policy edits apply on the
next tick); the thread keeps the pillar compiler it built
(:func:`vcluster.saltlink._pillar_compiler`).

Why not Salt's master schedule: it runs every job in a process forked from
the master and, with the ZeroMQ transport, loads every runner and utils
module again in it before the job's own work: about 0.4 s of CPU per run,
twice every 10 s, on the machine that also serves the joining nodes' files
and pillar. A thread of the engine pays that once.

The tasks' own rules are unchanged: each one decides from pillar whether it
is due or enabled (``vcluster:autoscale:enabled``/``interval``,
``vcluster:reconcile:interval``, ``vcluster:liveness:enabled``), and one
run of a task at a time (a long run skips the ticks it overran, as the
schedule's ``maxrunning: 1`` did). A failing run is logged and the next tick
runs as usual.
"""

import dataclasses
import logging
import threading
import time
import typing

from vcluster import autoscale, liveness, reconcile
from vcluster.errors import PolicyError, VclusterError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task:
    """One periodic task: every ``interval`` seconds, ``call(ctx)``; ``name`` is also its actor."""

    name: str
    interval: float
    call: typing.Callable


TASKS = (
    Task("liveness", liveness.SCHEDULE_TICK, lambda ctx: liveness.check(ctx)),
    Task("autoscale", autoscale.SCHEDULE_TICK, lambda ctx: autoscale.run(ctx, scheduled=True)),
    Task("reconcile", reconcile.SCHEDULE_TICK, lambda ctx: reconcile.run(ctx, scheduled=True)),
)


def metrics_task(path, interval=60):
    """A task that writes :mod:`vcluster.metrics` to ``path`` every ``interval`` seconds.

    Both are checked here, before any thread starts (PolicyError naming the value).
    """
    from vcluster import metrics  # pylint: disable=import-outside-toplevel

    metrics.check_path(path)
    try:
        every = float(interval)
    except (TypeError, ValueError):
        every = 0.0
    if isinstance(interval, bool) or not every >= 1:
        raise PolicyError(f"metrics_interval must be a number of seconds of at least 1, got {interval!r}")

    def write(ctx):
        return metrics.export(ctx.registry.path, path=path, profiles=sorted(ctx.policy.profiles))

    return Task("metrics", every, write)


def run_once(task, make_context):
    """One run of ``task`` with a context of its own; its return, or ``None`` if it failed (logged)."""
    ctx = None
    try:
        ctx = make_context(task.name)
        ret = task.call(ctx)
    except VclusterError as exc:
        log.warning("vcluster %s: %s", task.name, exc)
        return None
    except Exception:  # noqa: BLE001 - the next tick must still run
        log.exception("vcluster %s failed", task.name)
        return None
    finally:
        if ctx is not None:
            ctx.close()
    if not (isinstance(ret, dict) and ret.get("skipped")):
        log.info("vcluster %s: %s", task.name, (ret or {}).get("comment", ret))
    return ret


def loop(task, make_context, stop, clock=time.monotonic):
    """Run ``task`` every ``task.interval`` seconds until ``stop`` is set.

    The first run is one interval after the start (the master has just
    started; its minions are still connecting). A run that takes longer
    than the interval is followed by the next tick after it, not by a burst
    of the ticks it missed.
    """
    next_at = clock() + task.interval
    while not stop.wait(max(0.0, next_at - clock())):
        run_once(task, make_context)
        next_at += task.interval
        now = clock()
        if next_at <= now:
            missed = int((now - next_at) // task.interval) + 1
            next_at += missed * task.interval


def serve(make_context, stop, tasks=TASKS):
    """Run every task of ``tasks`` in a thread of its own until ``stop`` is set.

    ``make_context(actor)`` builds a :class:`vcluster.context.Context`.
    Returns once every thread has seen ``stop`` (a run in progress finishes
    first).
    """
    threads = [threading.Thread(target=loop, args=(task, make_context, stop), name=f"vcluster-{task.name}",
                                daemon=True) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
