"""SQLite registry of virtual nodes: names, addresses, lifecycle, job map, audit.

One file on the master, shared by every runner process. The database runs in
WAL mode with a busy timeout, and every write is exactly one
``BEGIN IMMEDIATE`` transaction, so concurrent processes serialise on the
write lock and never hand out the same name or address.

History: a node row is never deleted. Releasing a node moves it to
state ``released``; name and address are unique only among rows that are not
``released`` (partial unique indexes), so both become free for reuse while
the old row, its audit trail and its reason stay for inspection. ``failed``
nodes keep their name and address (their instance may still exist) until
they are released.

Allocation from the pools' free slots is :mod:`vcluster.registry_pools`;
the schema, its migrations and the :class:`Node` row are in
:mod:`vcluster.registry_schema`; the state machine in :mod:`vcluster.nodestates`.
Only :mod:`vcluster.lifecycle` moves a node (:meth:`Registry.transition`).
"""

import contextlib
import fcntl
import os
import sqlite3
import time

from vcluster.errors import InvalidTransition, RegistryError
from vcluster.nodestates import ACTIVE_STATES, STATES, TRANSITIONS
from vcluster.registry_pools import PoolSlots
from vcluster.registry_schema import MIGRATIONS, SCHEMA_VERSION, Node, create_private, iso_utc

#: Columns :meth:`Registry.transition` and :meth:`Registry.update` may set.
MUTABLE_FIELDS = ("instance_id", "host", "address")

BUSY_TIMEOUT_MS = 30000
DEFAULT_ACTOR = "vcluster"
_COLUMNS = (
    "id, name, address, pool, profile, provider, instance_id, host, state, reason, "
    "request_id, membership, attrs, created, updated"
)


def _check_mutable(fields):
    """Refuse fields :meth:`Registry.update` may not set, naming them."""
    unknown = sorted(set(fields) - set(MUTABLE_FIELDS))
    if unknown:
        raise RegistryError(f"update cannot set {', '.join(unknown)}; settable: {', '.join(MUTABLE_FIELDS)}")

@contextlib.contextmanager
def write_transaction(db, path):
    """One ``BEGIN IMMEDIATE`` transaction on ``db`` (the registry file ``path``): committed, or rolled back."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise RegistryError(f"registry {path} is not writable: {exc}") from None
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class Registry(PoolSlots):
    """The registry in one SQLite file; open one per process (or thread).

    ``synchronous="NORMAL"`` (WAL): a commit survives a crash of the process
    but the last commits may be lost on power failure (never corruption);
    reconcile finds instances whose node the registry lost. Pass ``"FULL"``
    to fsync every commit (slower by the disk's fsync time).
    ``lock_file=True`` queues writers on ``<path>.lock`` (``flock``) before
    ``BEGIN IMMEDIATE``: waiting writers wake as soon as the lock is free
    instead of SQLite's sleep-and-retry, which doubles throughput under
    contention. The SQLite write lock stays the guarantee of correctness.
    """

    def __init__(self, path, busy_timeout_ms=BUSY_TIMEOUT_MS, synchronous="NORMAL", lock_file=True):
        self.path = os.fspath(path)
        memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self._lock = None
        self._db = None
        try:
            if not memory:
                create_private(self.path)
            if lock_file and not memory:
                self._lock = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._db.execute(f"PRAGMA synchronous = {synchronous}")
            with self._locked():
                self._db.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise RegistryError(f"registry {self.path} cannot be opened: {exc}") from None
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _locked(self):
        if self._lock is None:
            yield
            return
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _write(self):
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, else rolled back."""
        with self._locked(), write_transaction(self._db, self.path) as db:
            yield db

    def _migrate(self):
        if self._version() == SCHEMA_VERSION:
            return
        with self._write() as db:
            version = self._version()
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"registry {self.path} has schema version {version}, newer than this vcluster's {SCHEMA_VERSION}"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _version(self):
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    @staticmethod
    def _active_row(db, name):
        row = db.execute(
            f"SELECT {_COLUMNS} FROM nodes WHERE name = ? AND state != 'released'", (name,)
        ).fetchone()
        if row is None:
            raise RegistryError(f"node {name!r} is not an active node of the registry")
        return Node._from_row(row)

    @staticmethod
    def _audit(db, ts, node, from_state, to_state, reason, actor):
        db.execute(
            "INSERT INTO audit (ts, node, node_id, from_state, to_state, reason, actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ts, node.name, node.id, from_state, to_state, reason, actor or DEFAULT_ACTOR),
        )

    # -- lifecycle --------------------------------------------------------

    def transition(self, name, to_state, reason=None, expect=None, actor=None, **fields):
        """Move node ``name`` to ``to_state`` in one transaction; return the new :class:`Node`.

        ``expect`` (a state or several) makes it a compare-and-set: the move
        happens only if the node is in one of them. ``fields`` may set
        ``instance_id``, ``host`` or ``address``. The node's ``reason`` is set
        when one is given and cleared on reaching ``ready``.
        """
        unknown = sorted(set(fields) - set(MUTABLE_FIELDS))
        if unknown:
            raise RegistryError(f"transition cannot set {', '.join(unknown)}; settable: {', '.join(MUTABLE_FIELDS)}")
        if to_state not in STATES:
            raise InvalidTransition(f"{to_state!r} is not a node state (states: {', '.join(sorted(STATES))})")
        expected = {expect} if isinstance(expect, str) else set(expect) if expect is not None else None
        with self._write() as db:
            return self._transition(db, name, to_state, reason, expected, actor, fields)

    def transition_many(self, names, to_state, reason=None, expect=None, actor=None):
        """:meth:`transition` of every one of ``names`` in one transaction; the new :class:`Node` list.

        All or none: one name that is not active or not in ``expect`` (or
        cannot go to ``to_state``) rolls back the others and raises as
        :meth:`transition` does. An expand's nodes go to ``booting`` together
        (one writer lock and one commit for a burst of 32, not 32).
        """
        names = list(names)
        if len(set(names)) != len(names):
            raise RegistryError(f"transition_many takes each node once; got {', '.join(names)}")
        if to_state not in STATES:
            raise InvalidTransition(f"{to_state!r} is not a node state (states: {', '.join(sorted(STATES))})")
        expected = {expect} if isinstance(expect, str) else set(expect) if expect is not None else None
        with self._write() as db:
            return [self._transition(db, name, to_state, reason, expected, actor, {}) for name in names]

    def _transition(self, db, name, to_state, reason, expected, actor, fields):
        """One node's move inside the caller's transaction (see :meth:`transition`)."""
        node = self._active_row(db, name)
        if expected is not None and node.state not in expected:
            raise InvalidTransition(
                f"node {name} is {node.state}, not {'|'.join(sorted(expected))}, so it does not go to {to_state}"
            )
        if to_state not in TRANSITIONS[node.state]:
            allowed = "|".join(sorted(TRANSITIONS[node.state])) or "nothing"
            raise InvalidTransition(
                f"node {name} cannot go from {node.state} to {to_state} (allowed: {allowed})"
            )
        from_state, old_address = node.state, node.address
        node.state = to_state
        node.updated = time.time()
        if reason is not None:
            node.reason = reason
        elif to_state == "ready":
            node.reason = None
        for key, value in fields.items():
            setattr(node, key, value)
        self._save(db, node, old_address)
        self._audit(db, node.updated, node, from_state, to_state, reason, actor)
        if to_state == "released":
            db.execute("UPDATE slots SET node_id = NULL WHERE node_id = ?", (node.id,))
            db.execute("DELETE FROM jobs WHERE node = ?", (name,))
        return node

    def update(self, name, **fields):
        """Set ``instance_id``/``host``/``address`` of an active node without a state change."""
        _check_mutable(fields)
        with self._write() as db:
            node = self._active_row(db, name)
            self._set_fields(db, node, fields)
        return node

    def update_many(self, changes):
        """:meth:`update` of several nodes in one transaction: ``{name: {field: value}}``.

        A name no longer active (released meanwhile, say by its join
        handler) is skipped, not an error: the others are still written,
        and the skipped names are returned (a set) so the caller can undo
        what it made for them (an expand deletes their instances).
        """
        for fields in changes.values():
            _check_mutable(fields)
        gone = set()
        with self._write() as db:
            for name, fields in changes.items():
                try:
                    node = self._active_row(db, name)
                except RegistryError:
                    gone.add(name)
                    continue
                self._set_fields(db, node, fields)
        return gone

    def _set_fields(self, db, node, fields):
        old_address = node.address
        for key, value in fields.items():
            setattr(node, key, value)
        node.updated = time.time()
        self._save(db, node, old_address)

    def _save(self, db, node, old_address):
        try:
            db.execute(
                "UPDATE nodes SET state = ?, reason = ?, instance_id = ?, host = ?, address = ?, "
                "updated = ? WHERE id = ?",
                (node.state, node.reason, node.instance_id, node.host, node.address, node.updated, node.id),
            )
        except sqlite3.IntegrityError:
            raise RegistryError(f"address {node.address} is already held by another active node") from None
        if node.address != old_address:
            db.execute("UPDATE slots SET node_id = NULL WHERE node_id = ? AND kind = 'address'", (node.id,))
            if node.address is not None:
                self._hold(db, node.id, "address", node.address)

    # -- queries ----------------------------------------------------------

    def get(self, name, include_released=False):
        """The active node called ``name``; else its latest released row if asked; else ``None``."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM nodes WHERE name = ? AND state != 'released'", (name,)
        ).fetchone()
        if row is None and include_released:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM nodes WHERE name = ? ORDER BY id DESC LIMIT 1", (name,)
            ).fetchone()
        return Node._from_row(row) if row is not None else None

    def nodes(self, states=None, profile=None, pool=None, request_id=None):
        """Nodes ordered by name; ``states=None`` means the active states."""
        states = ACTIVE_STATES if states is None else {states} if isinstance(states, str) else set(states)
        sql = f"SELECT {_COLUMNS} FROM nodes WHERE state IN ({', '.join('?' * len(states))})"
        args = sorted(states)
        for column, value in (("profile", profile), ("pool", pool), ("request_id", request_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        return [Node._from_row(r) for r in self._db.execute(sql + " ORDER BY name, id", args)]

    def counts(self, by="profile"):
        """Active nodes per ``profile`` (or per ``pool`` / ``state``)."""
        if by not in ("profile", "pool", "state"):
            raise RegistryError(f"counts by {by!r} is not supported (profile, pool, state)")
        rows = self._db.execute(
            f"SELECT {by}, COUNT(*) FROM nodes WHERE state != 'released' GROUP BY {by} ORDER BY {by}"
        )
        return {key: n for key, n in rows}

    def audit(self, name=None, limit=100):
        """Audit rows, newest first, as dicts (``ts`` as ISO 8601 UTC)."""
        sql = "SELECT id, ts, node, node_id, from_state, to_state, reason, actor FROM audit"
        args = []
        if name is not None:
            sql += " WHERE node = ?"
            args.append(name)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(int(limit))
        out = []
        for row in self._db.execute(sql, args):
            item = dict(row)
            item["ts"] = iso_utc(item["ts"])
            out.append(item)
        return out

    def failed_requests(self, profile, since, exclude=None):
        """Requests of ``profile`` with a node that went ``failed`` at or after ``since``.

        Returns ``[(first failure ts, request_id, reason)]``, oldest first, one
        per request (from the audit log; nodes without a request id count
        one each). Failures whose reason contains ``exclude`` are skipped.
        Used to pause a profile that keeps failing (:mod:`vcluster.retry`).
        """
        sql = (
            "SELECT MIN(a.ts), COALESCE(n.request_id, 'node:' || n.id), MIN(a.reason) "
            "FROM audit a JOIN nodes n ON n.id = a.node_id "
            "WHERE a.to_state = 'failed' AND a.ts >= ? AND n.profile = ?"
        )
        args = [float(since), profile]
        if exclude:
            sql += " AND COALESCE(a.reason, '') NOT LIKE ?"
            args.append("%" + exclude.replace("%", "") + "%")
        sql += " GROUP BY 2 ORDER BY 1"
        return [(r[0], r[1], r[2]) for r in self._db.execute(sql, args)]

    # -- job <-> node map ---------------------------------------------------

    def map_jobs(self, node, job_ids, replace=True):
        """Record the Slurm jobs running on active node ``node``.

        ``replace=True`` makes ``job_ids`` the complete list (others are
        dropped); ``False`` adds to it. Returns ``{"added": [...], "removed": [...]}``.
        """
        wanted = [str(j) for j in job_ids]
        with self._write() as db:
            self._active_row(db, node)
            current = {r[0] for r in db.execute("SELECT job_id FROM jobs WHERE node = ?", (node,))}
            added = [j for j in dict.fromkeys(wanted) if j not in current]
            removed = sorted(current - set(wanted)) if replace else []
            now = time.time()
            db.executemany("INSERT INTO jobs (node, job_id, since) VALUES (?, ?, ?)", [(node, j, now) for j in added])
            db.executemany("DELETE FROM jobs WHERE node = ? AND job_id = ?", [(node, j) for j in removed])
        return {"added": added, "removed": removed}

    def jobs_on(self, node):
        """Job ids on ``node``, oldest first."""
        rows = self._db.execute("SELECT job_id FROM jobs WHERE node = ? ORDER BY since, job_id", (node,))
        return [r[0] for r in rows]
