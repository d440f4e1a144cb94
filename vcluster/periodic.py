"""vcluster's periodic work on the master: liveness, autoscale, reconcile, the metrics file.

The ``vcluster_tasks`` master engine (``_engines/vcluster_tasks.py``) runs
:func:`serve`: one long-lived thread per task, each running its task every
``SCHEDULE_TICK`` seconds of the task's module. Each run gets a fresh
context (the master's pillar compiled again, so policy edits apply on the
next tick) with a pillar compiler built once and lent out again
(:func:`vcluster.saltlink._pillar_compiler`).

Why not Salt's master schedule: it runs every job in a process forked from
the master and, with the ZeroMQ transport, loads every runner and utils
module again in it before the job's own work: about 0.4 s of CPU per run,
twice every 10 s, on the machine that also serves the joining nodes' files
and pillar. A thread of the engine pays that once.

The tasks' own rules are unchanged: each one decides from pillar whether it
is due or enabled (``vcluster:autoscale:enabled``/``interval``,
``vcluster:reconcile:interval``, ``vcluster:liveness:enabled``,
``vcluster:metrics:path``/``interval``), and one
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
from vcluster.errors import VclusterError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task:
    """One periodic task: every ``interval`` seconds, ``call(ctx)``; ``name`` is also its actor."""

    name: str
    interval: float
    call: typing.Callable


#: Seconds between two looks of the metrics task at pillar ``vcluster:metrics``.
METRICS_TICK = 10


class MetricsFile:
    """The metrics task: writes pillar ``vcluster:metrics:path`` every ``interval`` seconds.

    Path and interval are policy (validated with the rest of the pillar,
    edits apply on the next tick); the time of the last write is kept here,
    in the engine's thread, so a master restart writes the file on its
    first tick.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.last = None  # (path, monotonic time) of the last write

    def __call__(self, ctx):
        from vcluster import metrics  # pylint: disable=import-outside-toplevel

        conf = ctx.policy.metrics
        if conf.path is None:
            return {"result": True, "skipped": True, "comment": "vcluster:metrics:path is not set"}
        now = self.clock()
        last_path, last_at = self.last or (None, None)
        if last_path == conf.path and now - last_at < conf.interval - METRICS_TICK / 2:
            return {"result": True, "skipped": True,
                    "comment": f"last write {now - last_at:.0f} s ago, interval {conf.interval:g} s"}
        ret = metrics.export(ctx.registry.path, path=conf.path, profiles=sorted(ctx.policy.profiles))
        self.last = (conf.path, now)
        return ret


def tasks():
    """The engine's tasks: liveness, autoscale, reconcile and the metrics file (a fresh one each call)."""
    return (
        Task("liveness", liveness.SCHEDULE_TICK, lambda ctx: liveness.check(ctx)),
        Task("autoscale", autoscale.SCHEDULE_TICK, lambda ctx: autoscale.run(ctx, scheduled=True)),
        Task("reconcile", reconcile.SCHEDULE_TICK, lambda ctx: reconcile.run(ctx, scheduled=True)),
        Task("metrics", METRICS_TICK, MetricsFile()),
    )


TASKS = tasks()


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
