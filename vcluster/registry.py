"""SQLite registry of virtual nodes: names, addresses, lifecycle, job map, audit.

One file on the master, shared by every runner process. The database runs in
WAL mode with a busy timeout, and every write is exactly one
``BEGIN IMMEDIATE`` transaction, so concurrent processes serialise on the
write lock and never hand out the same name or address.

History: a node row is never deleted. :meth:`Registry.release` moves it to
state ``released``; name and address are unique only among rows that are not
``released`` (partial unique indexes), so both become free for reuse while
the old row, its audit trail and its reason stay for inspection. ``failed``
nodes keep their name and address (their instance may still exist) until
they are released.

Allocation reads free names and addresses from ``slots`` (one row per name
or address of each pool, ``node_id`` set while an active node holds it), so
it costs O(count) and not O(active nodes). ``slots`` is rebuilt from the
nodes whenever a pool's definition (its digest) changes, and once more before
:class:`PoolExhausted` or a uniqueness conflict is reported, so the nodes
table stays the single source of truth.

Schema changes: bump ``SCHEMA_VERSION`` and append the statements that lead
from the previous version to ``MIGRATIONS``; ``PRAGMA user_version`` records
the version of a file.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import functools
import hashlib
import json
import os
import sqlite3
import time

from vcluster.errors import InvalidTransition, PoolExhausted, RegistryError

#: Allowed lifecycle moves: from state -> states it may go to.
TRANSITIONS = {
    "allocated": frozenset({"booting", "failed"}),
    "booting": frozenset({"joining", "failed"}),
    "joining": frozenset({"ready", "failed"}),
    "ready": frozenset({"draining", "suspending", "migrating"}),
    "draining": frozenset({"ready", "retiring"}),
    "retiring": frozenset({"released"}),
    "failed": frozenset({"released"}),
    # "ready" and "suspended" undo an interrupted suspend / resume (reconcile)
    "suspending": frozenset({"suspended", "ready"}),
    # "retiring": retire of a suspended node that holds no job (a warm-pool node)
    "suspended": frozenset({"resuming", "migrating", "retiring"}),
    "resuming": frozenset({"ready", "suspended"}),
    "migrating": frozenset({"ready", "suspended"}),
    "released": frozenset(),
}

STATES = frozenset(TRANSITIONS)
#: States that hold a name and an address (everything but ``released``).
ACTIVE_STATES = frozenset(STATES - {"released"})
#: Columns :meth:`Registry.transition` and :meth:`Registry.update` may set.
MUTABLE_FIELDS = ("instance_id", "host", "address")

SCHEMA_VERSION = 1
MIGRATIONS = {
    # version 0 (empty file) -> 1
    0: [
        """CREATE TABLE nodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            address TEXT,
            pool TEXT NOT NULL,
            profile TEXT NOT NULL,
            provider TEXT NOT NULL,
            instance_id TEXT,
            host TEXT,
            state TEXT NOT NULL,
            reason TEXT,
            request_id TEXT,
            membership TEXT,
            attrs TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            updated REAL NOT NULL)""",
        "CREATE UNIQUE INDEX nodes_active_name ON nodes(name) WHERE state != 'released'",
        "CREATE UNIQUE INDEX nodes_active_address ON nodes(address) "
        "WHERE state != 'released' AND address IS NOT NULL",
        "CREATE INDEX nodes_state ON nodes(state, profile)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            node TEXT NOT NULL,
            node_id INTEGER,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT,
            actor TEXT)""",
        "CREATE INDEX audit_node ON audit(node, id)",
        """CREATE TABLE jobs (
            node TEXT NOT NULL,
            job_id TEXT NOT NULL,
            since REAL NOT NULL,
            PRIMARY KEY (node, job_id))""",
        "CREATE INDEX jobs_job ON jobs(job_id)",
        # pools as last allocated from: one slot per name / address, node_id when held
        "CREATE TABLE pools (name TEXT PRIMARY KEY, digest TEXT NOT NULL, updated REAL NOT NULL)",
        """CREATE TABLE slots (
            pool TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('name', 'address')),
            idx INTEGER NOT NULL,
            value TEXT NOT NULL,
            node_id INTEGER,
            PRIMARY KEY (pool, kind, idx))""",
        "CREATE INDEX slots_free ON slots(pool, kind, idx) WHERE node_id IS NULL",
        "CREATE INDEX slots_value ON slots(kind, value)",
        "CREATE INDEX slots_node ON slots(node_id) WHERE node_id IS NOT NULL",
    ],
}

BUSY_TIMEOUT_MS = 30000
DEFAULT_ACTOR = "vcluster"
_COLUMNS = (
    "id, name, address, pool, profile, provider, instance_id, host, state, reason, "
    "request_id, membership, attrs, created, updated"
)


@functools.lru_cache(maxsize=64)
def _pool_digest(pool):
    data = "\n".join(pool.names) + "\0" + "\n".join(pool.addresses)
    return hashlib.sha256(data.encode()).hexdigest()


def _iso(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


@dataclasses.dataclass
class Node:
    """One registry row. ``id`` is the ``registry_id`` tag of its instance."""

    id: int
    name: str
    address: str | None
    pool: str
    profile: str
    provider: str
    instance_id: str | None
    host: str | None
    state: str
    reason: str | None
    request_id: str | None
    membership: str | None
    attrs: dict
    created: float
    updated: float

    @classmethod
    def _from_row(cls, row):
        data = dict(row)
        data["attrs"] = json.loads(data["attrs"] or "{}")
        return cls(**data)

    @property
    def active(self):
        return self.state in ACTIVE_STATES

    def as_dict(self):
        """Plain data; ``created``/``updated`` as ISO 8601 UTC strings."""
        data = dataclasses.asdict(self)
        data["created"] = _iso(self.created)
        data["updated"] = _iso(self.updated)
        return data


def _create_private(path):
    """Create the registry file (and missing parent directories) for the master's user only.

    The registry names every node, address and instance, and its audit log
    who did what: 0600 in a 0700 directory when vcluster creates them.
    SQLite creates the ``-wal`` and ``-shm`` files with the database file's
    mode. An existing file keeps its mode (the site chose it).
    """
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass


def _check_mutable(fields):
    """Refuse fields :meth:`Registry.update` may not set, naming them."""
    unknown = sorted(set(fields) - set(MUTABLE_FIELDS))
    if unknown:
        raise RegistryError(f"update cannot set {', '.join(unknown)}; settable: {', '.join(MUTABLE_FIELDS)}")

class Registry:
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
                _create_private(self.path)
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
        with self._locked():
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RegistryError(f"registry {self.path} is not writable: {exc}") from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

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

    # -- allocation -------------------------------------------------------

    def allocate(self, pool, profile, provider, count, request_id, membership=None, actor=None, attrs=None):
        """Allocate ``count`` nodes from ``pool`` (a :class:`vcluster.policy.Pool`).

        Takes the lowest free names and the lowest free addresses (pool
        order) in one transaction; raises :class:`PoolExhausted` and
        allocates nothing when the pool has too few. ``attrs`` (JSON-able
        dict, e.g. cpus/memory/features/partition of the profile) is stored
        with every node as created, for consumers without the policy.
        """
        try:
            attrs_json = json.dumps(attrs or {}, sort_keys=True)
        except (TypeError, ValueError):
            raise RegistryError(f"attrs must be JSON data, got {attrs!r}") from None
        args = (pool, profile, provider, count, request_id, membership, actor, attrs_json)
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise RegistryError(f"count must be a positive integer, got {count!r}")
        with self._write() as db:
            self._sync_pool(db, pool)
            try:
                db.execute("SAVEPOINT allocate")
                nodes = self._allocate(db, *args)
            except (sqlite3.IntegrityError, PoolExhausted):
                # make sure the slots agree with the nodes (file edited by hand?): rebuild, retry once
                db.execute("ROLLBACK TO allocate")
                self._sync_pool(db, pool, force=True)
                nodes = self._allocate(db, *args)
            db.execute("RELEASE allocate")
        return nodes

    def _allocate(self, db, pool, profile, provider, count, request_id, membership, actor, attrs_json):
        free_sql = "SELECT value FROM slots WHERE pool = ? AND kind = ? AND node_id IS NULL ORDER BY idx LIMIT ?"
        names = [r[0] for r in db.execute(free_sql, (pool.name, "name", count))]
        if pool.addresses:
            addresses = [r[0] for r in db.execute(free_sql, (pool.name, "address", count))]
        else:
            addresses = [None] * len(names)
        if len(names) < count or len(addresses) < count:
            count_sql = "SELECT COUNT(*) FROM slots WHERE pool = ? AND kind = ? AND node_id IS NULL"
            free = db.execute(count_sql, (pool.name, "name")).fetchone()[0]
            if pool.addresses:
                free = min(free, db.execute(count_sql, (pool.name, "address")).fetchone()[0])
            raise PoolExhausted(f"pool {pool.name!r} has {free} free nodes, wanted {count}")
        now = time.time()
        nodes = []
        for name, address in zip(names, addresses, strict=True):
            cur = db.execute(
                "INSERT INTO nodes (name, address, pool, profile, provider, state, request_id, "
                "membership, attrs, created, updated) VALUES (?, ?, ?, ?, ?, 'allocated', ?, ?, ?, ?, ?)",
                (name, address, pool.name, profile, provider, request_id, membership, attrs_json, now, now),
            )
            node = Node(
                id=cur.lastrowid, name=name, address=address, pool=pool.name, profile=profile,
                provider=provider, instance_id=None, host=None, state="allocated", reason=None,
                request_id=request_id, membership=membership, attrs=json.loads(attrs_json),
                created=now, updated=now,
            )
            self._hold(db, node.id, "name", name)
            if address is not None:
                self._hold(db, node.id, "address", address)
            self._audit(db, now, node, None, "allocated", f"request {request_id}", actor)
            nodes.append(node)
        return nodes

    def allocate_named(self, pool, profile, provider, names, request_id, membership=None, actor=None,
                       attrs=None):
        """Allocate the nodes called ``names`` (all of them) from ``pool``.

        For callers that do not choose the name, e.g. Slurm's power saving
        resuming specific CLOUD nodes. Every name must belong to the pool
        and be free; addresses are the lowest free ones. One ``BEGIN
        IMMEDIATE`` transaction: either every name is taken or none is
        (:class:`RegistryError` for a foreign or repeated name,
        :class:`PoolExhausted` when a name is held or addresses run out).
        """
        try:
            attrs_json = json.dumps(attrs or {}, sort_keys=True)
        except (TypeError, ValueError):
            raise RegistryError(f"attrs must be JSON data, got {attrs!r}") from None
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
            raise RegistryError(f"names must be a non-empty list of node names, got {names!r}")
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            raise RegistryError(f"names must not repeat a name, got {names!r}")
        members = set(pool.names)
        foreign = [n for n in names if n not in members]
        if foreign:
            raise RegistryError(f"node name {foreign[0]!r} is not in pool {pool.name!r}")
        args = (pool, profile, provider, names, request_id, membership, actor, attrs_json)
        with self._write() as db:
            self._sync_pool(db, pool)
            try:
                db.execute("SAVEPOINT allocate_named")
                nodes = self._allocate_named(db, *args)
            except (sqlite3.IntegrityError, PoolExhausted):
                db.execute("ROLLBACK TO allocate_named")
                self._sync_pool(db, pool, force=True)
                nodes = self._allocate_named(db, *args)
            db.execute("RELEASE allocate_named")
        return nodes

    def _allocate_named(self, db, pool, profile, provider, names, request_id, membership, actor, attrs_json):
        held_sql = "SELECT node_id FROM slots WHERE pool = ? AND kind = 'name' AND value = ?"
        for name in names:
            row = db.execute(held_sql, (pool.name, name)).fetchone()
            if row is None or row[0] is not None:
                raise PoolExhausted(f"node name {name!r} of pool {pool.name!r} is held by an active node")
        count = len(names)
        if pool.addresses:
            free_sql = ("SELECT value FROM slots WHERE pool = ? AND kind = 'address' AND node_id IS NULL "
                        "ORDER BY idx LIMIT ?")
            addresses = [r[0] for r in db.execute(free_sql, (pool.name, count))]
            if len(addresses) < count:
                raise PoolExhausted(f"pool {pool.name!r} has {len(addresses)} free addresses, wanted {count}")
        else:
            addresses = [None] * count
        now = time.time()
        nodes = []
        for name, address in zip(names, addresses, strict=True):
            cur = db.execute(
                "INSERT INTO nodes (name, address, pool, profile, provider, state, request_id, "
                "membership, attrs, created, updated) VALUES (?, ?, ?, ?, ?, 'allocated', ?, ?, ?, ?, ?)",
                (name, address, pool.name, profile, provider, request_id, membership, attrs_json, now, now),
            )
            node = Node(
                id=cur.lastrowid, name=name, address=address, pool=pool.name, profile=profile,
                provider=provider, instance_id=None, host=None, state="allocated", reason=None,
                request_id=request_id, membership=membership, attrs=json.loads(attrs_json),
                created=now, updated=now,
            )
            self._hold(db, node.id, "name", name)
            if address is not None:
                self._hold(db, node.id, "address", address)
            self._audit(db, now, node, None, "allocated", f"request {request_id} (named)", actor)
            nodes.append(node)
        return nodes

    @staticmethod
    def _hold(db, node_id, kind, value):
        """Mark ``value`` held by ``node_id`` in every pool that lists it."""
        db.execute("UPDATE slots SET node_id = ? WHERE kind = ? AND value = ?", (node_id, kind, value))

    def _sync_pool(self, db, pool, force=False):
        """Make the slot rows of ``pool`` match its definition (only when it changed)."""
        digest = _pool_digest(pool)
        row = db.execute("SELECT digest FROM pools WHERE name = ?", (pool.name,)).fetchone()
        if row is not None and row[0] == digest and not force:
            return
        db.execute("DELETE FROM slots WHERE pool = ?", (pool.name,))
        db.executemany(
            "INSERT INTO slots (pool, kind, idx, value) VALUES (?, ?, ?, ?)",
            [(pool.name, "name", i, v) for i, v in enumerate(pool.names)]
            + [(pool.name, "address", i, v) for i, v in enumerate(pool.addresses)],
        )
        for kind, column in (("name", "name"), ("address", "address")):
            db.execute(
                f"UPDATE slots SET node_id = (SELECT id FROM nodes WHERE state != 'released' "
                f"AND nodes.{column} = slots.value) WHERE pool = ? AND kind = ?",
                (pool.name, kind),
            )
        db.execute(
            "INSERT INTO pools (name, digest, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
            (pool.name, digest, time.time()),
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

    def release(self, name, reason, actor=None, expect=None):
        """End node ``name`` in ``released``: its name and address become free."""
        return self.transition(name, "released", reason=reason, expect=expect, actor=actor)

    def fail(self, name, reason, actor=None, expect=None):
        """Mark node ``name`` ``failed`` with ``reason`` (it keeps name and address until released)."""
        return self.transition(name, "failed", reason=reason, expect=expect, actor=actor)

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
            item["ts"] = _iso(item["ts"])
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

    def unmap_jobs(self, job_ids, node=None):
        """Forget jobs (e.g. on job end), on ``node`` or on every node; returns how many rows went."""
        ids = [str(j) for j in job_ids]
        with self._write() as db:
            if node is None:
                cur = db.executemany("DELETE FROM jobs WHERE job_id = ?", [(j,) for j in ids])
            else:
                cur = db.executemany("DELETE FROM jobs WHERE node = ? AND job_id = ?", [(node, j) for j in ids])
            return cur.rowcount

    def jobs_on(self, node):
        """Job ids on ``node``, oldest first."""
        rows = self._db.execute("SELECT job_id FROM jobs WHERE node = ? ORDER BY since, job_id", (node,))
        return [r[0] for r in rows]

    def node_of_job(self, job_id):
        """The node running ``job_id`` (the lowest name for a multi-node job), or ``None``."""
        row = self._db.execute(
            "SELECT node FROM jobs WHERE job_id = ? ORDER BY node LIMIT 1", (str(job_id),)
        ).fetchone()
        return row[0] if row else None
