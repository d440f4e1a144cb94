"""The registry's file: its schema, its migrations, how it is created, and the node row type.

Schema changes: bump ``SCHEMA_VERSION`` and append the statements that lead
from the previous version to ``MIGRATIONS``; ``PRAGMA user_version`` records
the version of a file (:class:`vcluster.registry.Registry` migrates on open).
"""

import dataclasses
import datetime
import json
import os

from vcluster.nodestates import ACTIVE_STATES

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


def iso_utc(ts):
    """Unix time ``ts`` as ISO 8601 UTC (seconds), or None."""
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
        data["created"] = iso_utc(self.created)
        data["updated"] = iso_utc(self.updated)
        return data


def create_private(path):
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
