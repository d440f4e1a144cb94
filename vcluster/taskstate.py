"""Periodic work's own state, in the registry's SQLite file: last runs, locks, small values.

The periodic tasks (:mod:`vcluster.periodic`: liveness, autoscale,
reconcile) keep a little state between runs: when each last ran, which run
holds a task's lock, and small JSON values (autoscale's idle times and its
job -> nodes memory). It lives in two tables of the registry's database
file, next to the nodes it is about, instead of files beside it: one file
to back up, one place to look, and writes that are transactions.

* ``task_values (task, key, value, updated)``: JSON values by task and key;
  a task's last run is its key ``last_run``.
* ``task_locks (task, owner, host, pid, started, expires)``: at most one
  holder per task.

This module opens its own connection (the registry's schema and
migrations stay the registry's): ``CREATE TABLE IF NOT EXISTS``, the busy
timeout of :mod:`vcluster.registry`, every write one ``BEGIN IMMEDIATE``
transaction, and the file's WAL mode as the registry set it. It needs the
file to exist (the registry creates it, private to the master's user).

The lock is a lease, not a held SQLite lock. A transaction cannot stay open
for a whole run: every registry write of the run (and of every other
process) would wait for it. So taking the lock is one short transaction
that writes the holder (host, pid, the process's start time, a token) and
an expiry; giving it back deletes that row. A holder that died without
giving it back (killed, a crashed master) does not keep it: on the same
host a holder whose process is gone, or whose pid now belongs to another
process (its start time differs), has lost it at once, as an ``flock`` would
be dropped with its process; a holder on another host (a registry on a
shared file system) loses it at its expiry. A live holder on this host
keeps it however long its run takes, as before with ``flock``.

:func:`due` is the one schedule rule of the periodic tasks: a run is due
unless the last one was less than its interval (less half a tick) ago.
"""

import contextlib
import json
import logging
import os
import socket
import sqlite3
import time
import uuid

from vcluster.errors import RegistryError
from vcluster.registry import BUSY_TIMEOUT_MS, write_transaction

log = logging.getLogger(__name__)

#: Seconds between two schedule ticks of each periodic task (the engine's
#: thread of the task looks this often whether a run is due).
TICKS = {"liveness": 10, "autoscale": 10, "reconcile": 60}

#: Seconds a lock holder on another host keeps the lock without giving it back.
LEASE = 3600

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS task_values (
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (task, key))""",
    """CREATE TABLE IF NOT EXISTS task_locks (
        task TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started TEXT NOT NULL,
        expires REAL NOT NULL)""",
)


def in_memory(path):
    """Whether ``path`` names an in-memory SQLite database (tests), which no other process sees."""
    return path == ":memory:" or path.startswith("file::memory:")


def due(last, interval, now, tick, what):
    """``(due, why)`` of a scheduled run of ``what`` that last ran at ``last`` (Unix time or None).

    Half a tick of slack: the ticks are not exact, and a run that comes a
    moment early would otherwise wait a whole tick more.
    """
    if last is not None and now - last < interval - tick / 2:
        return False, f"last {what} {now - last:.0f} s ago, interval {interval:g} s"
    return True, "due"


def process_started(pid):
    """The start time of process ``pid`` (clock ticks after boot, /proc), '' when unknown, None when gone."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    # the command name (field 2) is in parentheses and may hold spaces
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


class TaskState:
    """The task tables of the registry file ``path``; one per thread (its own connection)."""

    def __init__(self, path, busy_timeout_ms=BUSY_TIMEOUT_MS):
        self.path = os.fspath(path)
        self._db = None
        try:
            if in_memory(self.path):
                self._db = sqlite3.connect(self.path, isolation_level=None)
            else:
                quoted = os.path.abspath(self.path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
                uri = f"file:{quoted}?mode=rw"
                self._db = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            found = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                     "AND name IN ('task_values', 'task_locks')").fetchone()[0]
            if found < 2:  # the first use of this file (no write transaction on every open)
                with self._write() as db:
                    for statement in _SCHEMA:
                        db.execute(statement)
        except sqlite3.Error as exc:
            self.close()
            raise RegistryError(f"registry {self.path} cannot be opened for task state: {exc}") from None

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self):
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, else rolled back."""
        return write_transaction(self._db, self.path)

    # -- values ----------------------------------------------------------------

    def get(self, task, key, default=None):
        """The value of ``task``'s ``key`` (JSON), or ``default``."""
        row = self._db.execute("SELECT value FROM task_values WHERE task = ? AND key = ?", (task, key)).fetchone()
        return default if row is None else json.loads(row[0])

    def values(self, task):
        """Every ``{key: value}`` of ``task``."""
        rows = self._db.execute("SELECT key, value FROM task_values WHERE task = ?", (task,)).fetchall()
        return {key: json.loads(value) for key, value in rows}

    def put(self, task, **values):
        """Set ``task``'s keys to ``values`` (JSON-serialisable), all in one transaction."""
        now = time.time()
        rows = [(task, key, json.dumps(value, sort_keys=True), now) for key, value in values.items()]
        with self._write() as db:
            db.executemany("INSERT INTO task_values (task, key, value, updated) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (task, key) DO UPDATE SET value = excluded.value, "
                           "updated = excluded.updated", rows)

    def last_run(self, task):
        """Unix time of ``task``'s last finished run, or None."""
        return self.get(task, "last_run")

    def mark_run(self, task, when=None):
        """Record that ``task`` finished a run now (or at ``when``)."""
        self.put(task, last_run=time.time() if when is None else float(when))

    def adopt_stamp(self, task, stamp):
        """Take ``task``'s last run from the file ``stamp`` (a Unix time, as the side files held), once.

        The file is deleted; a last run already recorded here wins.
        """
        try:
            with open(stamp, encoding="ascii") as fh:
                text = fh.read().strip()
        except OSError:
            return
        try:
            when = float(text)
        except ValueError:
            when = None
        if when is not None and self.last_run(task) is None:
            self.mark_run(task, when)
        _unlink(stamp)

    # -- locks -----------------------------------------------------------------

    def acquire(self, task, lease=LEASE):
        """Take ``task``'s lock: a token to :meth:`release` it with, or None when a live holder has it."""
        host, pid = socket.gethostname(), os.getpid()
        token = f"{host}:{pid}:{uuid.uuid4().hex}"
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT owner, host, pid, started, expires FROM task_locks WHERE task = ?",
                             (task,)).fetchone()
            if row is not None and _holds(row, host, now):
                return None
            if row is not None:
                log.warning("%s lock of %s (pid %s) taken over: its holder is gone", task, row[1], row[2])
            db.execute("INSERT OR REPLACE INTO task_locks (task, owner, host, pid, started, expires) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (task, token, host, pid, process_started(pid) or "", now + lease))
        return token

    def release(self, task, token):
        """Give ``task``'s lock back (only if ``token`` still holds it)."""
        with self._write() as db:
            db.execute("DELETE FROM task_locks WHERE task = ? AND owner = ?", (task, token))

    def holder(self, task):
        """``{"host", "pid", "expires"}`` of ``task``'s lock row, or None."""
        row = self._db.execute("SELECT host, pid, expires FROM task_locks WHERE task = ?", (task,)).fetchone()
        return None if row is None else {"host": row[0], "pid": row[1], "expires": row[2]}


def _holds(row, host, now):
    """Whether the lock row ``(owner, host, pid, started, expires)`` still has a live holder."""
    _, holder_host, pid, started, expires = row
    if holder_host != host:
        return now < expires
    current = process_started(pid)
    if current is None:
        return False  # the process is gone
    return not (started and current and current != started)  # else its pid now names another process


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot delete %s: %s", path, exc)


# -- one call each, for a task that needs nothing else ---------------------------------------


def last_run(path, task, stamp=None):
    """Unix time of ``task``'s last run in the registry file ``path``, or None (never; an in-memory registry).

    ``stamp``: the side file older releases kept it in, taken over once and
    deleted (:meth:`TaskState.adopt_stamp`).
    """
    path = os.fspath(path)
    if in_memory(path):
        return None
    with TaskState(path) as store:
        if stamp:
            store.adopt_stamp(task, stamp)
        return store.last_run(task)


def mark_run(path, task, when=None):
    """Record in the registry file ``path`` that ``task`` finished a run now (nothing for an in-memory registry)."""
    path = os.fspath(path)
    if not in_memory(path):
        with TaskState(path) as store:
            store.mark_run(task, when)


@contextlib.contextmanager
def lock(path, task, lease=LEASE, legacy=None):
    """Hold ``task``'s lock in the registry file ``path``; yields False when another run has it.

    An in-memory registry (tests) has no other process: always True.
    ``legacy``: the lock file older releases used beside the registry,
    deleted (no release reads it any more).
    """
    path = os.fspath(path)
    if in_memory(path):
        yield True
        return
    if legacy:
        _unlink(legacy)
    with TaskState(path) as state:
        token = state.acquire(task, lease)
    if token is None:
        yield False
        return
    try:
        yield True
    finally:
        with TaskState(path) as state:
            state.release(task, token)
