"""vcluster's metrics in the Prometheus text exposition format (version 0.0.4).

Everything is read from the registry, through a read-only connection
(:func:`vcluster.history.connect`): the nodes table for what exists now, the
audit log for what happened. So the numbers survive master restarts and
need no daemon of their own; counters count from the registry's creation.

==========================================  =========  =====================================
metric                                      type       labels / meaning
==========================================  =========  =====================================
``vcluster_nodes``                          gauge      ``profile``, ``state``: active nodes
``vcluster_expand_duration_seconds``        histogram  ``profile``: allocation to ``ready``
``vcluster_join_duration_seconds``          histogram  ``profile``: ``joining`` to ``ready``
``vcluster_node_failures_total``            counter    ``profile``: nodes that went ``failed``
``vcluster_suspended_seconds_total``        counter    ``profile``: time nodes spent suspended
``vcluster_metrics_generated_timestamp_seconds``  gauge  when this text was made
==========================================  =========  =====================================

:func:`write` replaces a file atomically (a temporary file in the same
directory, fsync, rename), as node_exporter's textfile collector requires.
"""

import math
import os
import tempfile
import time

from vcluster import history
from vcluster.errors import PolicyError, RegistryError
from vcluster.registry import ACTIVE_STATES

#: Histogram bucket upper bounds, seconds (a join takes tens of seconds, a slow one minutes).
BUCKETS = (10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value):
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        if value.is_integer():
            return str(int(value))
        return repr(round(value, 3))
    return str(value)


class _Family:
    def __init__(self, name, kind, text):
        self.name, self.kind, self.help = name, kind, text
        self.samples = []  # (suffix, labels, value)

    def add(self, labels, value, suffix=""):
        self.samples.append((suffix, labels, value))

    def render(self):
        lines = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            lines.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")
        return lines


def _histogram(family, labels, values):
    values = sorted(values)
    i = 0
    for bound in BUCKETS:
        while i < len(values) and values[i] <= bound:
            i += 1
        family.add(dict(labels, le=_number(float(bound))), i, "_bucket")
    family.add(dict(labels, le="+Inf"), len(values), "_bucket")
    family.add(labels, float(sum(values)), "_sum")
    family.add(labels, len(values), "_count")


def collect(path, profiles=(), now=None):
    """The numbers of the registry at ``path``: a dict of what :func:`render` prints.

    ``profiles``: profile names to report even with no node (policy's profiles).
    """
    now = time.time() if now is None else now
    db = history.connect(path)
    try:
        nodes = {r["id"]: (r["profile"], r["created"]) for r in db.execute("SELECT id, profile, created FROM nodes")}
        counts = {}
        for r in db.execute("SELECT profile, state, COUNT(*) AS n FROM nodes WHERE state != 'released' "
                            "GROUP BY profile, state"):
            counts[(r["profile"], r["state"])] = r["n"]
        audit = list(db.execute("SELECT node_id, ts, from_state, to_state FROM audit "
                                "WHERE node_id IS NOT NULL ORDER BY node_id, id"))
    except Exception as exc:  # sqlite3.Error: a registry of another shape
        raise RegistryError(f"registry {path} cannot be read: {exc}") from None
    finally:
        db.close()
    known = sorted(set(profiles) | {p for p, _ in nodes.values()})
    expand = {p: [] for p in known}
    join = {p: [] for p in known}
    failures = dict.fromkeys(known, 0)
    suspended = dict.fromkeys(known, 0.0)
    joining_at, ready_seen, suspended_at = {}, set(), {}
    for row in audit:
        node_id, ts, to = row["node_id"], row["ts"], row["to_state"]
        if node_id not in nodes:
            continue
        profile, created = nodes[node_id]
        if node_id in suspended_at and to != "suspended":
            suspended[profile] += max(0.0, ts - suspended_at.pop(node_id))
        if to == "joining":
            joining_at[node_id] = ts
        elif to == "ready" and row["from_state"] == "joining" and node_id not in ready_seen:
            ready_seen.add(node_id)
            expand[profile].append(max(0.0, ts - created))
            if node_id in joining_at:
                join[profile].append(max(0.0, ts - joining_at[node_id]))
        elif to == "failed":
            failures[profile] += 1
        elif to == "suspended":
            suspended_at.setdefault(node_id, ts)
    for node_id, since in suspended_at.items():  # still suspended
        suspended[nodes[node_id][0]] += max(0.0, now - since)
    return {"counts": counts, "profiles": known, "expand": expand, "join": join,
            "failures": failures, "suspended": suspended, "now": now}


def render(data):
    """The exposition text of :func:`collect`'s ``data`` (ends with a newline)."""
    fams = []
    nodes = _Family("vcluster_nodes", "gauge", "Virtual nodes held in the registry, by profile and lifecycle state.")
    states = sorted(ACTIVE_STATES)
    for profile in data["profiles"]:
        for state in states:
            nodes.add({"profile": profile, "state": state}, data["counts"].get((profile, state), 0))
    fams.append(nodes)
    expand = _Family("vcluster_expand_duration_seconds", "histogram",
                     "Seconds from a node's allocation to ready in Slurm, per node that joined.")
    join = _Family("vcluster_join_duration_seconds", "histogram",
                   "Seconds from a node's minion start (joining) to ready in Slurm, per node that joined.")
    failures = _Family("vcluster_node_failures_total", "counter",
                       "Nodes that went failed (did not join, create failed, ...).")
    suspended = _Family("vcluster_suspended_seconds_total", "counter",
                        "Seconds virtual nodes spent suspended (frozen with their jobs or in a warm pool).")
    for profile in data["profiles"]:
        _histogram(expand, {"profile": profile}, data["expand"][profile])
        _histogram(join, {"profile": profile}, data["join"][profile])
        failures.add({"profile": profile}, data["failures"][profile])
        suspended.add({"profile": profile}, float(data["suspended"][profile]))
    fams += [expand, join, failures, suspended]
    stamp = _Family("vcluster_metrics_generated_timestamp_seconds", "gauge",
                    "Unix time at which vcluster wrote these metrics.")
    stamp.add({}, float(round(data["now"], 3)))
    fams.append(stamp)
    lines = []
    for fam in fams:
        lines += fam.render()
    return "\n".join(lines) + "\n"


def text(path, profiles=(), now=None):
    """The exposition text of the registry at ``path``."""
    return render(collect(path, profiles=profiles, now=now))


def check_path(path):
    """``path`` if it can take the metrics file: absolute, ``*.prom``, in an existing directory."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise PolicyError(f"path must be an absolute file path ending in .prom, got {path!r}")
    if not path.endswith(".prom") or os.path.basename(path) == ".prom":
        raise PolicyError(f"path must end in .prom (node_exporter's textfile collector reads only those), "
                          f"got {path!r}")
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise PolicyError(f"path must be in an existing directory; {directory!r} of {path!r} is not one")
    if os.path.isdir(path):
        raise PolicyError(f"path must be a file, but {path!r} is a directory")
    return path


def write(path, body):
    """Replace ``path`` with ``body`` atomically (mode 0644); returns ``path``."""
    check_path(path)
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def export(registry_path, path=None, profiles=(), now=None):
    """The runner's work: the text, written to ``path`` when given. A dict for the return."""
    if path is not None:
        check_path(path)
    body = text(registry_path, profiles=profiles, now=now)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    if path is None:
        return {"result": True, "comment": f"{samples} sample(s)", "metrics": body}
    write(path, body)
    return {"result": True, "comment": f"wrote {samples} sample(s) to {path}", "path": path, "samples": samples}
