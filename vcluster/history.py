"""The registry's audit log, read for people: ``salt-run vcluster.history``.

Every lifecycle transition of a node is one row of the registry's ``audit``
table (time, node, from state, to state, reason, actor). This module reads
it through a read-only SQLite connection of its own (``mode=ro``): reading
the history never takes the registry's write lock and cannot change it.
"""

import datetime
import re
import sqlite3
import time

from vcluster.errors import PolicyError, RegistryError

#: Rows returned when no ``limit`` is given, and the most one call returns.
DEFAULT_LIMIT = 50
MAX_LIMIT = 10000
#: ``since`` as an age: a number and a unit.
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Columns of :func:`rows`, in order.
COLUMNS = ("time", "node", "from", "to", "actor", "reason")


def parse_since(value, now=None):
    """Unix time of ``since``: an age (``90s``, ``30m``, ``2h``, ``1d``, ``1w``), an ISO 8601 time or a Unix time.

    An ISO time without a zone is UTC. Raises PolicyError naming the value otherwise.
    """
    now = time.time() if now is None else now
    if isinstance(value, bool) or value is None or value == "":
        raise PolicyError(f"since must be an age such as 2h, an ISO 8601 time or a Unix time, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.datetime):
        return _aware(value).timestamp()
    if isinstance(value, datetime.date):
        return _aware(datetime.datetime(value.year, value.month, value.day)).timestamp()
    text = str(value).strip()
    match = _AGE.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return _aware(datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))).timestamp()
    except ValueError:
        raise PolicyError(
            f"since must be an age such as 2h, an ISO 8601 time or a Unix time, got {value!r}") from None


def _aware(moment):
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


def _limit(value):
    if value is None:
        return DEFAULT_LIMIT
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not 1 <= number <= MAX_LIMIT:
        raise PolicyError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return number


def connect(path):
    """A read-only connection to the registry file at ``path``; RegistryError if it cannot be read."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("SELECT 1 FROM audit LIMIT 1")
    except sqlite3.Error as exc:
        raise RegistryError(f"registry {path} cannot be read: {exc}") from None
    return db


def read(path, node=None, since=None, limit=None, now=None):
    """Audit rows of the registry at ``path``, oldest first: the newest ``limit`` ones matching.

    ``node`` keeps one node's rows; ``since`` (see :func:`parse_since`) the
    rows from then on. Each row: ``time`` (ISO 8601 UTC), ``ts``, ``node``,
    ``from`` (None for the first), ``to``, ``reason``, ``actor``.
    """
    if node is not None and (not isinstance(node, str) or not node.strip()):
        raise PolicyError(f"node must be a node name, got {node!r}")
    start = None if since is None else parse_since(since, now)
    limit = _limit(limit)
    sql = "SELECT id, ts, node, from_state, to_state, reason, actor FROM audit WHERE 1 = 1"
    args = []
    if node is not None:
        sql += " AND node = ?"
        args.append(node.strip())
    if start is not None:
        sql += " AND ts >= ?"
        args.append(start)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    db = connect(path)
    try:
        found = list(db.execute(sql, args))
    except sqlite3.Error as exc:
        raise RegistryError(f"registry {path} cannot be read: {exc}") from None
    finally:
        db.close()
    out = []
    for r in reversed(found):
        out.append({
            "time": datetime.datetime.fromtimestamp(r["ts"], datetime.UTC).isoformat(timespec="seconds"),
            "ts": r["ts"], "node": r["node"], "from": r["from_state"], "to": r["to_state"],
            "reason": r["reason"], "actor": r["actor"],
        })
    return out


def history(path, node=None, since=None, limit=None, now=None):
    """The runner's return: ``events`` (see :func:`read`), ``count`` and a comment saying what was asked."""
    events = read(path, node=node, since=since, limit=limit, now=now)
    what = f"node {node}" if node else "all nodes"
    if since is not None:
        what += f" since {datetime.datetime.fromtimestamp(parse_since(since, now), datetime.UTC).isoformat(timespec='seconds')}"
    comment = f"{len(events)} transition(s) of {what}"
    if len(events) == _limit(limit):
        comment += f" (the newest {len(events)}; raise limit for more)"
    if not events and node:
        comment += f"; the registry has no record of {node}"
    return {"result": True, "comment": comment, "count": len(events), "events": events}


def line(event):
    """One event as a sentence: ``2026-12-06T15:01:02+00:00 vnode001 booting -> joining by reactor (why)``."""
    text = f"{event['time']} {event['node']} {event['from'] or '(new)'} -> {event['to']} by {event['actor']}"
    return text + (f": {event['reason']}" if event.get("reason") else "")


def rows(ret):
    """A :func:`history` return as table rows: a header, then one list of strings per event."""
    out = [[c.upper() for c in COLUMNS]]
    for e in ret.get("events") or []:
        out.append([e["time"], e["node"], e["from"] or "-", e["to"], e["actor"] or "-", e["reason"] or "-"])
    return out
