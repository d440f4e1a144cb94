"""
vcluster's periodic work on the master: node liveness, autoscale, reconcile.

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

With ``metrics_path`` it also writes vcluster's Prometheus metrics there
every ``metrics_interval`` seconds (default 60), for node_exporter's
textfile collector (see docs/operations.md):

.. code-block:: yaml

    engines:
      - vcluster_tasks:
          metrics_path: /var/lib/node_exporter/textfile/vcluster.prom
          metrics_interval: 60
"""

import logging
import threading

log = logging.getLogger(__name__)

__virtualname__ = "vcluster_tasks"

try:
    from vcluster import periodic, saltlink
    from vcluster.errors import VclusterError

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


def start(metrics_path=None, metrics_interval=60):
    """Run liveness, autoscale and reconcile (and the metrics file, when asked) on their ticks until the master stops."""
    opts = __opts__  # noqa: F821 - Salt loader dunder
    tasks = list(periodic.TASKS)
    if metrics_path is not None:
        try:
            tasks.append(periodic.metrics_task(metrics_path, metrics_interval))
        except VclusterError as exc:
            log.error("vcluster_tasks: no metrics file: %s", exc)
    log.info("vcluster_tasks: %s", ", ".join(f"{t.name} every {t.interval:g} s" for t in tasks))
    periodic.serve(lambda actor: saltlink.context(opts, actor=actor), threading.Event(), tasks=tasks)
