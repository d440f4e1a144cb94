"""The registry's pools: free names and addresses, and the allocation that takes them.

Allocation reads free names and addresses from ``slots`` (one row per name
or address of each pool, ``node_id`` set while an active node holds it), so
it costs O(count) and not O(active nodes). ``slots`` is rebuilt from the
nodes whenever a pool's definition (its digest) changes, and once more before
:class:`PoolExhausted` or a uniqueness conflict is reported, so the nodes
table stays the single source of truth. :class:`PoolSlots` is a part of
:class:`vcluster.registry.Registry` (its transaction and audit helpers).
"""

import functools
import hashlib
import json
import sqlite3
import time

from vcluster.errors import PoolExhausted, RegistryError
from vcluster.registry_schema import Node


@functools.lru_cache(maxsize=64)
def _pool_digest(pool):
    data = "\n".join(pool.names) + "\0" + "\n".join(pool.addresses)
    return hashlib.sha256(data.encode()).hexdigest()


def _attrs_json(attrs):
    """``attrs`` as the JSON a node row stores; RegistryError when it is not JSON data."""
    try:
        return json.dumps(attrs or {}, sort_keys=True)
    except (TypeError, ValueError):
        raise RegistryError(f"attrs must be JSON data, got {attrs!r}") from None


class PoolSlots:
    """Allocation of :class:`vcluster.registry.Registry`: nodes made from a pool's free slots."""

    def allocate(self, pool, profile, provider, count, request_id, membership=None, actor=None, attrs=None):
        """Allocate ``count`` nodes from ``pool`` (a :class:`vcluster.policy.Pool`).

        Takes the lowest free names and the lowest free addresses (pool
        order) in one transaction; raises :class:`PoolExhausted` and
        allocates nothing when the pool has too few. ``attrs`` (JSON-able
        dict, e.g. cpus/memory/features/partition of the profile) is stored
        with every node as created, for consumers without the policy.
        """
        row = (profile, provider, request_id, membership, _attrs_json(attrs))
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise RegistryError(f"count must be a positive integer, got {count!r}")
        return self._allocating(pool, count, row, actor, f"request {request_id}")

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
        row = (profile, provider, request_id, membership, _attrs_json(attrs))
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
            raise RegistryError(f"names must be a non-empty list of node names, got {names!r}")
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            raise RegistryError(f"names must not repeat a name, got {names!r}")
        members = set(pool.names)
        foreign = [n for n in names if n not in members]
        if foreign:
            raise RegistryError(f"node name {foreign[0]!r} is not in pool {pool.name!r}")
        return self._allocating(pool, names, row, actor, f"request {request_id} (named)")

    def _allocating(self, pool, wanted, row, actor, note):
        """One transaction taking ``wanted`` (a count, or the names) of ``pool``.

        The slots are synced with the pool first; a conflict or a short pool
        rebuilds them from the nodes (file edited by hand?) and tries once more.
        """
        with self._write() as db:
            self._sync_pool(db, pool)
            try:
                db.execute("SAVEPOINT allocate")
                nodes = self._take(db, pool, wanted, row, actor, note)
            except (sqlite3.IntegrityError, PoolExhausted):
                db.execute("ROLLBACK TO allocate")
                self._sync_pool(db, pool, force=True)
                nodes = self._take(db, pool, wanted, row, actor, note)
            db.execute("RELEASE allocate")
        return nodes

    def _take(self, db, pool, wanted, row, actor, note):
        """Names and addresses for ``wanted`` inside the transaction, then the node rows."""
        free_sql = "SELECT value FROM slots WHERE pool = ? AND kind = ? AND node_id IS NULL ORDER BY idx LIMIT ?"
        if isinstance(wanted, int):
            count = wanted
            names = [r[0] for r in db.execute(free_sql, (pool.name, "name", count))]
        else:
            names, count = wanted, len(wanted)
            held_sql = "SELECT node_id FROM slots WHERE pool = ? AND kind = 'name' AND value = ?"
            for name in names:
                found = db.execute(held_sql, (pool.name, name)).fetchone()
                if found is None or found[0] is not None:
                    raise PoolExhausted(f"node name {name!r} of pool {pool.name!r} is held by an active node")
        if pool.addresses:
            addresses = [r[0] for r in db.execute(free_sql, (pool.name, "address", count))]
        else:
            addresses = [None] * len(names)
        if len(names) < count or len(addresses) < count:
            if not isinstance(wanted, int):
                raise PoolExhausted(f"pool {pool.name!r} has {len(addresses)} free addresses, wanted {count}")
            count_sql = "SELECT COUNT(*) FROM slots WHERE pool = ? AND kind = ? AND node_id IS NULL"
            free = db.execute(count_sql, (pool.name, "name")).fetchone()[0]
            if pool.addresses:
                free = min(free, db.execute(count_sql, (pool.name, "address")).fetchone()[0])
            raise PoolExhausted(f"pool {pool.name!r} has {free} free nodes, wanted {count}")
        profile, provider, request_id, membership, attrs_json = row
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
            self._audit(db, now, node, None, "allocated", note, actor)
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
