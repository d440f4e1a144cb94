"""Parsers of Slurm 22.05 output into plain dataclasses.

Sources: ``scontrol show -o node|job|partition`` (one ``Key=Value`` record per
line), ``squeue --json`` and ``sinfo --json`` (OpenAPI v0.0.38 schema). Each
record type has a ``to_dict()`` for Salt returns. Output that cannot be read
raises :class:`vcluster.errors.SlurmError`.
"""

import dataclasses
import json
import re

from vcluster.errors import SlurmError
from vcluster.slurm import hostlist, states

#: Start of a ``Key=`` in a ``scontrol -o`` line (keys like ``CPUs/Task``, ``ReqB:S:C:T``).
_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=")

#: ``reason text [user@2024-01-01T00:00:00]`` as scontrol shows node reasons.
_REASON = re.compile(r"^(?P<text>.*?)\s*\[(?P<user>[^@\]]*)@(?P<time>[^\]]*)\]$")

#: Lines scontrol prints instead of records when there are none.
_EMPTY = re.compile(r"^No \w+ in the system$")

_NULLS = ("", "(null)", "N/A", "None", "Unknown", "n/a", "n/s")


@dataclasses.dataclass
class Node:
    """One Slurm node."""

    name: str
    state: list  # words, base state first: ["IDLE", "DRAIN"]
    addr: str = ""
    hostname: str = ""
    cpus: int = 0
    cpus_alloc: int = 0
    memory: int = 0  # RealMemory, MiB
    memory_alloc: int = 0
    features: list = dataclasses.field(default_factory=list)
    active_features: list = dataclasses.field(default_factory=list)
    gres: str = ""
    reason: str = ""
    reason_user: str = ""
    partitions: list = dataclasses.field(default_factory=list)
    dynamic: bool = False
    version: str = ""

    def to_dict(self):
        """Plain dict (Salt return)."""
        return dataclasses.asdict(self)

    def is_in(self, wanted):
        """Whether the node is in any of ``wanted`` (see :func:`vcluster.slurm.states.matches`)."""
        return states.matches(self.state, wanted)


@dataclasses.dataclass
class Job:
    """One Slurm job (an array job's pending tasks are one record)."""

    id: int
    name: str
    state: str  # RUNNING, PENDING, SUSPENDED, COMPLETED...
    nodes: list = dataclasses.field(default_factory=list)
    partition: str = ""
    user: str = ""
    priority: int = 0
    reason: str = ""
    array_job_id: int = 0
    array_tasks: str = ""  # "1-3" for pending tasks, "2" for one task, "" if no array
    cpus: int = 0

    def to_dict(self):
        """Plain dict (Salt return)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Partition:
    """One Slurm partition."""

    name: str
    state: str
    nodes: list = dataclasses.field(default_factory=list)
    nodesets: list = dataclasses.field(default_factory=list)
    default: bool = False
    max_time: str = ""
    priority_tier: int = 1
    total_cpus: int = 0
    total_nodes: int = 0

    def to_dict(self):
        """Plain dict (Salt return)."""
        return dataclasses.asdict(self)


# -- scalar helpers -----------------------------------------------------------

def _null(value):
    return value is None or str(value).strip() in _NULLS


def _int(value, what, default=0):
    """``'500'`` -> 500; null-like values -> ``default``; garbage -> SlurmError."""
    if isinstance(value, bool):
        raise SlurmError(f"{what} should be a number, got {value!r}")
    if isinstance(value, int):
        return value
    if _null(value):
        return default
    text = str(value).strip()
    if text.endswith("M") and text[:-1].isdigit():
        text = text[:-1]
    try:
        return int(text)
    except ValueError:
        raise SlurmError(f"{what} should be a number, got {value!r}") from None


def _list(value, sep=","):
    if _null(value):
        return []
    return [v for v in str(value).split(sep) if v]


def _text(value):
    return "" if _null(value) else str(value).strip()


def _split_reason(raw):
    """``('vcluster retire', 'root')`` from ``'vcluster retire [root@2026-...]'``."""
    raw = _text(raw)
    match = _REASON.match(raw)
    if match:
        return match.group("text"), match.group("user")
    return raw, ""


# -- scontrol show -o ---------------------------------------------------------

def parse_record(line):
    """One ``scontrol show -o`` line as an ordered ``{key: value}`` dict.

    A value runs up to the next whitespace-preceded ``Key=``, so values with
    spaces (``OS=Linux 6.1 #1 SMP``, ``Reason=maintenance window [root@...]``)
    stay whole.
    """
    line = line.strip()
    keys = list(_KEY.finditer(line))
    if not keys or keys[0].start() != 0:
        raise SlurmError(f"scontrol output line is not Key=Value records: {line[:80]!r}")
    record = {}
    for i, match in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        record.setdefault(match.group(1), line[match.end():end].strip())
    return record


def parse_records(text, first_key):
    """Every record of a ``scontrol show -o`` output; each must start with ``first_key``."""
    records = []
    for line in (text or "").splitlines():
        if not line.strip() or _EMPTY.match(line.strip()):
            continue
        record = parse_record(line)
        if next(iter(record)) != first_key:
            raise SlurmError(f"expected a {first_key}= record, got {line[:80]!r}")
        records.append(record)
    return records


def nodes_from_scontrol(text):
    """``scontrol show -o node`` -> list of :class:`Node`."""
    out = []
    for r in parse_records(text, "NodeName"):
        name = r["NodeName"]
        if "State" not in r:
            raise SlurmError(f"node {name} has no State in scontrol output")
        words, dynamic = states.split(r["State"])
        reason, user = _split_reason(r.get("Reason"))
        out.append(Node(
            name=name, state=words, dynamic=dynamic,
            addr=_text(r.get("NodeAddr")), hostname=_text(r.get("NodeHostName")),
            cpus=_int(r.get("CPUTot"), f"{name} CPUTot"),
            cpus_alloc=_int(r.get("CPUAlloc"), f"{name} CPUAlloc"),
            memory=_int(r.get("RealMemory"), f"{name} RealMemory"),
            memory_alloc=_int(r.get("AllocMem"), f"{name} AllocMem"),
            features=_list(r.get("AvailableFeatures")),
            active_features=_list(r.get("ActiveFeatures")),
            gres=_text(r.get("Gres")), reason=reason, reason_user=user,
            partitions=_list(r.get("Partitions")), version=_text(r.get("Version")),
        ))
    return out


def _user(value):
    """``'root(0)'`` -> ``'root'``."""
    return _text(value).split("(", 1)[0]


def jobs_from_scontrol(text):
    """``scontrol show -o job`` -> list of :class:`Job`."""
    out = []
    for r in parse_records(text, "JobId"):
        jid = _int(r["JobId"], "JobId")
        if "JobState" not in r:
            raise SlurmError(f"job {jid} has no JobState in scontrol output")
        out.append(Job(
            id=jid, name=_text(r.get("JobName")), state=r["JobState"],
            nodes=hostlist.expand(_text(r.get("NodeList"))),
            partition=_text(r.get("Partition")), user=_user(r.get("UserId")),
            priority=_int(r.get("Priority"), f"job {jid} Priority"),
            reason=_text(r.get("Reason")),
            array_job_id=_int(r.get("ArrayJobId"), f"job {jid} ArrayJobId"),
            array_tasks=_text(r.get("ArrayTaskId")),
            cpus=_int(r.get("NumCPUs"), f"job {jid} NumCPUs"),
        ))
    return out


def partitions_from_scontrol(text):
    """``scontrol show -o partition`` -> list of :class:`Partition`."""
    out = []
    for r in parse_records(text, "PartitionName"):
        name = r["PartitionName"]
        out.append(Partition(
            name=name, state=_text(r.get("State")),
            nodes=hostlist.expand(_text(r.get("Nodes"))),
            nodesets=_list(r.get("NodeSets")),
            default=_text(r.get("Default")).upper() == "YES",
            max_time=_text(r.get("MaxTime")),
            priority_tier=_int(r.get("PriorityTier"), f"partition {name} PriorityTier", 1),
            total_cpus=_int(r.get("TotalCPUs"), f"partition {name} TotalCPUs"),
            total_nodes=_int(r.get("TotalNodes"), f"partition {name} TotalNodes"),
        ))
    return out


# -- squeue / sinfo --json -------------------------------------------------------

def _json(text, key, command):
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise SlurmError(f"{command} did not print JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise SlurmError(f"{command} JSON has no {key!r} list")
    errors = data.get("errors") or []
    if errors:
        first = errors[0]
        text = first.get("description") or first.get("error") if isinstance(first, dict) else first
        raise SlurmError(f"{command} reported an error: {text}")
    return data[key]


def _field(obj, key, command):
    if not isinstance(obj, dict) or key not in obj:
        raise SlurmError(f"{command} entry without {key!r}: {str(obj)[:80]}")
    return obj[key]


def jobs_from_squeue_json(text):
    """``squeue --json`` -> list of :class:`Job`."""
    out = []
    for j in _json(text, "jobs", "squeue --json"):
        jid = _int(_field(j, "job_id", "squeue --json"), "job_id")
        array_task = j.get("array_task_id")
        out.append(Job(
            id=jid, name=_text(j.get("name")), state=_field(j, "job_state", "squeue --json"),
            nodes=hostlist.expand(_text(j.get("nodes"))), partition=_text(j.get("partition")),
            user=_text(j.get("user_name")), priority=_int(j.get("priority"), f"job {jid} priority"),
            reason=_text(j.get("state_reason")),
            array_job_id=_int(j.get("array_job_id"), f"job {jid} array_job_id"),
            array_tasks=_text(j.get("array_task_string")) or ("" if array_task is None else str(array_task)),
            cpus=_int(j.get("cpus"), f"job {jid} cpus"),
        ))
    return out


def nodes_from_sinfo_json(text):
    """``sinfo --json`` -> list of :class:`Node` (sinfo does not list FUTURE nodes)."""
    out = []
    for n in _json(text, "nodes", "sinfo --json"):
        name = _field(n, "name", "sinfo --json")
        words, dynamic = states.split(_field(n, "state", "sinfo --json"), n.get("state_flags") or ())
        out.append(Node(
            name=name, state=words, dynamic=dynamic, addr=_text(n.get("address")),
            hostname=_text(n.get("hostname")), cpus=_int(n.get("cpus"), f"{name} cpus"),
            cpus_alloc=_int(n.get("alloc_cpus"), f"{name} alloc_cpus"),
            memory=_int(n.get("real_memory"), f"{name} real_memory"),
            memory_alloc=_int(n.get("alloc_memory"), f"{name} alloc_memory"),
            features=_list(n.get("features")), active_features=_list(n.get("active_features")),
            gres=_text(n.get("gres")), reason=_text(n.get("reason")),
            reason_user=_text(n.get("reason_set_by_user")),
            partitions=[str(p) for p in n.get("partitions") or []],
            version=_text(n.get("slurmd_version")),
        ))
    return out
