"""
vcluster's periodic work on the master: node liveness, autoscale, reconcile, metrics.

Runs in the salt-master (a master engine, restarted with the master), one
thread per task (:mod:`vcluster.periodic`): ``vcluster.liveness`` every
10 s, ``vcluster.autoscale scheduled=True`` every 10 s and
``vcluster.reconcile scheduled=True`` every 60 s, each deciding from pillar
``vcluster:`` whether it is enabled and due. It replaces master schedule
entries for the same calls, which fork a process and reload every runner
module for each run.

Master configuration (``python -m vcluster.masterconf`` writes it):

.. code-block:: yaml

    engines:
      - vcluster_tasks: {}

It also writes vcluster's Prometheus metrics file when pillar
``vcluster:metrics:path`` is set (every ``vcluster:metrics:interval``
seconds, for node_exporter's textfile collector; docs/operations.md).
The engine takes no options: what it does is policy.
"""

import logging
import threading

log = logging.getLogger(__name__)

__virtualname__ = "vcluster_tasks"

try:
    from vcluster import periodic, saltlink

    HAS_LIB = True
except ImportError as _exc:  # pragma: no cover - reported by __virtual__
    HAS_LIB = False
    _IMPORT_ERROR = str(_exc)


def __virtual__():
    if not HAS_LIB:
        return False, f"the vcluster library is not importable: {_IMPORT_ERROR}"
    if __opts__.get("__role") != "master":  # noqa: F821 - Salt loader dunder
        return False, "vcluster_tasks is a master engine (it uses the master's pillar and keys)"
    return __virtualname__


def start(**options):
    """Run liveness, autoscale, reconcile and the metrics file on their ticks until the master stops."""
    opts = __opts__  # noqa: F821 - Salt loader dunder
    if options:
        log.error("vcluster_tasks takes no options, ignored: %s (the metrics file is pillar vcluster:metrics)",
                  ", ".join(sorted(options)))
    tasks = periodic.tasks()
    log.info("vcluster_tasks: %s", ", ".join(f"{t.name} every {t.interval:g} s" for t in tasks))
    periodic.serve(lambda actor: saltlink.context(opts, actor=actor), threading.Event(), tasks=tasks)
