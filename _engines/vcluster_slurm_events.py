"""
Slurm job events to the Salt master the moment Slurm writes them.

Runs on the Slurm controller's minion. slurmctld's PrologSlurmctld (job
start) and jobcomp/script program (job end; not an EpilogSlurmctld, which
would delay the scheduling of every next job), both from
``salt/slurm/events.sls``, run as SlurmUser, hold no
credential and only append one line per job of a preempting partition to a
spool file. This engine waits on inotify for the spool to grow and fires
each new line to the master as the event ``vcluster/slurm/job``
(``{"raw": line}``), where the reactor hands it to
``vcluster.on_slurm_event``. The master adds the minion id it
authenticated; the runner trusts only the controller's and re-reads the job
from Slurm, so a forged line can at worst cause a check.

Minion configuration (the controller only):

.. code-block:: yaml

    engines:
      - vcluster_slurm_events:
          spool: /var/spool/vcluster-slurm/events

Lines already in the file when the engine starts are not sent; a spool that
is truncated or replaced is read from its start. Without inotify the engine
logs why and stops (nothing else is affected).
"""

import logging
import os

from vcluster.spool import Follower, Watch

log = logging.getLogger(__name__)

__virtualname__ = "vcluster_slurm_events"

DEFAULT_SPOOL = "/var/spool/vcluster-slurm/events"
TAG = "vcluster/slurm/job"
PREFIX = "vcluster-slurm-event v1 "
#: The longest inotify wait before the file is looked at again anyway: a
#: safety net for a watched directory removed and made again under the
#: same path (its watch is gone; the next round watches the new one).
IDLE_CHECK = 30


def __virtual__():
    return __virtualname__


def _send(line):
    if not line.startswith(PREFIX):
        return
    try:
        __salt__["event.send"](TAG, {"raw": line})  # noqa: F821 - Salt loader dunder
    except Exception as exc:  # noqa: BLE001 - one lost send must not stop the engine
        log.error("vcluster_slurm_events: cannot send %r to the master: %s", line[:120], exc)


def _nearest_directory(path):
    """The spool's directory, or its closest existing ancestor while it is missing."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    return directory


def start(spool=DEFAULT_SPOOL, idle_check=IDLE_CHECK):
    """Follow ``spool`` and send its new lines; runs until the minion stops."""
    follower = Follower(spool)
    watch, watched = None, None
    log.info("vcluster_slurm_events: following %s", spool)
    while True:
        directory = _nearest_directory(spool)
        if directory != watched:
            # watch before reading: a line written after the read wakes the wait
            if watch is not None:
                watch.close()
            try:
                watch, watched = Watch(directory), directory
            except OSError as exc:
                log.error("vcluster_slurm_events: %s; Slurm job events are not sent", exc)
                return
        for line in follower.read():
            _send(line)
        watch.wait(idle_check)
