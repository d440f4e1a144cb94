"""Parsers of Slurm output (22.05 to 25.11) into plain dataclasses.

Sources: ``scontrol show -o node|job|partition`` (one ``Key=Value`` record per
line; the keys vcluster reads are the same in every supported release) and
``squeue --json`` / ``sinfo --json``, whose shape depends on the release's
data_parser (v0.0.38 in 22.05 ... v0.0.44 in 25.11; see
:mod:`vcluster.slurm.versions`):

* ``job_state``: one word up to 23.02, a list of words from 23.11
  (``["PENDING", "REQUEUED"]``); :attr:`Job.state` is always the one word
  ``scontrol`` shows (:func:`vcluster.slurm.states.job_state`).
* Numbers (``priority``, ``cpus``, ``node_count``, ``array_job_id``...) are
  plain from 22.05 and ``{"set", "infinite", "number"}`` objects from 23.02.
* ``sinfo --json`` has a ``nodes`` list (one record per node) in 22.05 and a
  ``sinfo`` list (one record per node group and partition) from 23.02.

The JSON parsers take the :class:`~vcluster.slurm.versions.Release` the
client read from the controller; without one they use the release the
output names in its ``meta``. Output of another shape than the release's
is refused. Each record type has a ``to_dict()`` for Salt returns. Output
that cannot be read raises :class:`vcluster.errors.SlurmError`.
"""

import dataclasses
import json
import re

from vcluster.errors import SlurmError
from vcluster.slurm import hostlist, states, versions

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
    instance_id: str = ""  # 23.11+ (InstanceId=), empty when unset
    instance_type: str = ""
    extra: str = ""

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
    node_count: int = 0
    comment: str = ""

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
    """``'500'`` -> 500; null-like values -> ``default``; garbage -> SlurmError.

    Also reads data_parser number objects (23.02+): ``{"set": true,
    "infinite": false, "number": 5}`` -> 5; unset or infinite -> ``default``.
    """
    if isinstance(value, dict):
        if "number" not in value or "set" not in value:
            raise SlurmError(f"{what} should be a number, got {value!r}")
        if not value.get("set") or value.get("infinite"):
            return default
        value = value["number"]
    if isinstance(value, bool):
        raise SlurmError(f"{what} should be a number, got {value!r}")
    if isinstance(value, int):
        return value
    if _null(value):
        return default
    text = str(value).strip()
    if text.endswith("M") and text[:-1].isdigit():
        text = text[:-1]
    if re.fullmatch(r"\d+-\d+", text):  # NumNodes=1-1 (min-max) of a pending job
        text = text.split("-", 1)[0]
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


def nodes_from_scontrol(text, release=None):  # noqa: ARG001 - same keys in every release
    """``scontrol show -o node`` -> list of :class:`Node`."""
    return [node_from_record(r) for r in parse_records(text, "NodeName")]


def node_from_record(r):
    """One ``NodeName=`` record of :func:`parse_records` -> :class:`Node`."""
    name = r["NodeName"]
    if "State" not in r:
        raise SlurmError(f"node {name} has no State in scontrol output")
    words, dynamic = states.split(r["State"])
    reason, user = _split_reason(r.get("Reason"))
    return Node(
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
        instance_id=_text(r.get("InstanceId")), instance_type=_text(r.get("InstanceType")),
        extra=_text(r.get("Extra")),
    )


def _user(value):
    """``'root(0)'`` -> ``'root'``."""
    return _text(value).split("(", 1)[0]


def jobs_from_scontrol(text, release=None):  # noqa: ARG001 - same keys in every release
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
            node_count=_int(r.get("NumNodes"), f"job {jid} NumNodes"),
            comment=_text(r.get("Comment")),
        ))
    return out


def partitions_from_scontrol(text, release=None):  # noqa: ARG001 - same keys in every release
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

def _load(text, command):
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise SlurmError(f"{command} did not print JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SlurmError(f"{command} JSON is not an object")
    errors = data.get("errors") or []
    if errors:
        first = errors[0]
        text = (first.get("description") or first.get("error")) if isinstance(first, dict) else first
        raise SlurmError(f"{command} reported an error: {text}")
    return data


def _release_of(data, release, command):
    """The release whose shape ``data`` must have: ``release``, checked against the output's own meta."""
    try:
        found = versions.detect_json(data)
    except SlurmError as exc:
        raise SlurmError(f"{command} output: {exc}") from None
    if release is None:
        return found
    release = versions.release(release)
    if found is not None and found.series != release.series:
        raise SlurmError(f"{command} printed Slurm {found.series} output, but the controller's "
                         f"Slurm is {release.series}")
    return release


def _list_of(data, key, command):
    if not isinstance(data.get(key), list):
        raise SlurmError(f"{command} JSON has no {key!r} list")
    return data[key]


def _field(obj, key, command):
    if not isinstance(obj, dict) or key not in obj:
        raise SlurmError(f"{command} entry without {key!r}: {str(obj)[:80]}")
    return obj[key]


def _job_state(value, release, jid):
    """``(state word, all words)`` of a ``job_state`` as ``release`` prints it."""
    as_list = isinstance(value, list)
    if release is not None and as_list != release.job_state_list:
        shape = "a list" if release.job_state_list else "one word"
        raise SlurmError(f"squeue --json gave job {jid} the job_state {value!r}, but Slurm "
                         f"{release.series} prints {shape}")
    words = [str(w).strip().upper() for w in (value if as_list else [value]) if str(w or "").strip()]
    if not words:
        raise SlurmError(f"squeue --json gave job {jid} an empty job_state")
    return states.job_state(words), words


def jobs_from_squeue_json(text, release=None):
    """``squeue --json`` -> list of :class:`Job`.

    ``release``: the :class:`~vcluster.slurm.versions.Release` (or version
    string) of the controller; without it, the one the output names.
    """
    command = "squeue --json"
    data = _load(text, command)
    release = _release_of(data, release, command)
    out = []
    for j in _list_of(data, "jobs", command):
        jid = _int(_field(j, "job_id", command), "job_id")
        state, _ = _job_state(_field(j, "job_state", command), release, jid)
        array_task = _int(j.get("array_task_id"), f"job {jid} array_task_id", None)
        out.append(Job(
            id=jid, name=_text(j.get("name")), state=state,
            nodes=hostlist.expand(_text(j.get("nodes"))), partition=_text(j.get("partition")),
            user=_text(j.get("user_name")), priority=_int(j.get("priority"), f"job {jid} priority"),
            reason=_text(j.get("state_reason")),
            array_job_id=_int(j.get("array_job_id"), f"job {jid} array_job_id"),
            array_tasks=_text(j.get("array_task_string")) or ("" if array_task is None else str(array_task)),
            cpus=_int(j.get("cpus"), f"job {jid} cpus"),
            node_count=_int(j.get("node_count"), f"job {jid} node_count"),
            comment=_text(j.get("comment")),
        ))
    return out


#: ``squeue --format`` of :func:`jobs_from_squeue_text`: fields split by US (0x1f), the job name last.
SQUEUE_TEXT_FORMAT = "\x1f".join(("%A", "%T", "%P", "%N", "%F", "%K", "%C", "%D", "%u", "%Q", "%r", "%k", "%j"))


def jobs_from_squeue_text(text):
    """``squeue --noheader --format=<SQUEUE_TEXT_FORMAT>`` -> list of :class:`Job`.

    squeue's text format is the same in every supported release (22.05's
    ``--json`` ignores squeue's filters, its text form does not), so this
    parser takes no release.
    """
    jobs = []
    for line in text.splitlines():
        f = line.split("\x1f", 12)
        if len(f) != 13 or not f[0].isdigit():
            raise SlurmError(f"squeue --nodelist printed an unexpected line: {line[:120]!r}")
        array = f[5] not in ("N/A", "")

        def number(value):
            return int(value) if value.isdigit() else 0

        jobs.append(Job(
            id=int(f[0]), name=f[12], state=f[1], nodes=hostlist.expand(f[3]) if f[3] else [],
            partition=f[2], user=f[8], priority=number(f[9]), reason="" if f[10] == "None" else f[10],
            array_job_id=number(f[4]) if array else 0, array_tasks=f[5] if array else "",
            cpus=number(f[6]), node_count=number(f[7]), comment="" if f[11] == "(null)" else f[11]))
    return jobs


def nodes_from_sinfo_json(text, release=None):
    """``sinfo --json`` -> list of :class:`Node` (sinfo does not list FUTURE nodes).

    From 23.02 sinfo prints node groups: a node in several partitions
    appears once per partition (merged here), and one record may hold
    nodes whose features, CPUs or memory differ (24.11 put vn1 with
    ``htc`` and vn8-vn9 with ``mpi`` in one record naming ``htc``). So a
    group of several nodes gives only names, state and partitions; the
    other fields come from one-node groups only (``scontrol show node``
    has them for every node). 24.11 prints no addresses
    (``hostnames``/``addresses`` are empty lists).
    """
    command = "sinfo --json"
    data = _load(text, command)
    release = _release_of(data, release, command)
    key = release.sinfo_key if release is not None else ("sinfo" if "sinfo" in data else "nodes")
    records = _list_of(data, key, command)
    if key == "nodes":
        return [_sinfo_node(n, command) for n in records]
    merged = {}
    for group in records:
        for node in _sinfo_group(group, command):
            if node.name in merged:
                for part in node.partitions:
                    if part not in merged[node.name].partitions:
                        merged[node.name].partitions.append(part)
            else:
                merged[node.name] = node
    return list(merged.values())


def _sinfo_node(n, command):
    """One record of 22.05's ``nodes`` list."""
    name = _field(n, "name", command)
    words, dynamic = states.split(_field(n, "state", command), n.get("state_flags") or ())
    return Node(
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
    )


def _sub(obj, key, command):
    value = _field(obj, key, command)
    if not isinstance(value, dict):
        raise SlurmError(f"{command} entry has {key!r} that is not an object: {str(value)[:80]}")
    return value


def _sinfo_group(g, command):
    """The nodes of one record of the ``sinfo`` list (23.02+)."""
    group = _sub(g, "nodes", command)
    names = group.get("nodes")
    if isinstance(names, str):
        names = hostlist.expand(names)
    if not names:
        return []  # a partition without nodes
    raw = _field(_sub(g, "node", command), "state", command)
    words, dynamic = states.split("+".join(raw) if isinstance(raw, list) else raw)
    cpus, memory = _sub(g, "cpus", command), _sub(g, "memory", command)
    part = (g.get("partition") or {}).get("name")
    partitions = [str(part)] if part else []
    if len(names) > 1:
        return [Node(name=name, state=list(words), dynamic=dynamic, partitions=list(partitions))
                for name in names]
    features, gres, reason = g.get("features") or {}, g.get("gres") or {}, g.get("reason") or {}
    text = _text(reason.get("description"))
    name = names[0]

    def first(values):
        return _text(values[0]) if isinstance(values, list) and values else ""

    return [Node(
        name=name, state=words, dynamic=dynamic,
        addr=first(group.get("addresses")), hostname=first(group.get("hostnames")),
        cpus=_int(cpus.get("total"), f"{name} cpus"),
        cpus_alloc=_int(cpus.get("allocated"), f"{name} cpus allocated"),
        memory=_int(memory.get("minimum"), f"{name} memory"),
        memory_alloc=_int(memory.get("allocated"), f"{name} memory allocated"),
        features=_list(features.get("total")), active_features=_list(features.get("active")),
        gres=_text(gres.get("total")), reason=text,
        reason_user=_text(reason.get("user")) if text else "",
        partitions=partitions,
    )]
