"""slurm.conf lines and ``slurmd -Z --conf`` strings for virtual nodes, with validation.

Three renderings share one :class:`NodeSpec`:

* :func:`dynamic_conf`: ``CPUs=2 RealMemory=1000 Feature=virtual,htc`` for
  ``slurmd -Z --conf`` (dynamic mode) and for ``scontrol create``;
* :func:`node_line`: ``NodeName=vn1 NodeAddr=10.0.0.5 CPUs=2 ...`` (static
  and cloud modes);
* :func:`nodeset_line` / :func:`partition_line`: partitions of dynamic
  nodes. Slurm 22.05 refuses to start when a partition names a node that does
  not exist yet, so partitions of dynamic nodes select them by feature
  through a NodeSet (``NodeSet=htc Feature=htc`` + ``PartitionName=htc Nodes=htc``)
  or use ``Nodes=ALL``.

Invalid input raises :class:`vcluster.errors.SlurmError` with one sentence
naming the bad value.
"""

import dataclasses
import re

from vcluster.errors import SlurmError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_FEATURE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_GRES = re.compile(r"^[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+)?(:\d+[KMG]?)?$")
_WORD = re.compile(r"^[A-Za-z0-9_.:/@,\[\]-]+$")

#: States a node line may carry (``scontrol create`` accepts FUTURE and CLOUD only).
NODE_LINE_STATES = ("CLOUD", "FUTURE", "UNKNOWN", "IDLE", "DOWN", "DRAIN", "FAIL")
CREATE_STATES = ("FUTURE", "CLOUD")
PARTITION_STATES = ("UP", "DOWN", "DRAIN", "INACTIVE")


def validate_name(name, what="node name"):
    """Return ``name`` if it is a valid node/partition/nodeset name, else raise SlurmError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SlurmError(f"{what} {name!r} is invalid: use a letter then up to 62 letters, "
                         "digits, '-' or '_'")
    return name


def validate_feature(feature):
    """Return ``feature`` if Slurm accepts it as a node feature, else raise SlurmError."""
    if not isinstance(feature, str) or not _FEATURE.match(feature):
        raise SlurmError(f"node feature {feature!r} is invalid: use letters, digits, '_', '.' or '-'")
    return feature


def validate_features(features):
    """``'a,b'`` or ``['a', 'b']`` -> validated list without duplicates."""
    if features is None:
        return []
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    out = []
    for feature in features:
        if validate_feature(feature) not in out:
            out.append(feature)
    return out


def validate_gres(gres):
    """Return ``gres`` (``gpu:2``, ``gpu:a100:1``; several comma-separated) or raise SlurmError."""
    if gres in (None, ""):
        return ""
    for item in str(gres).split(","):
        if not _GRES.match(item):
            raise SlurmError(f"gres {item!r} is invalid: use name[:type][:count], e.g. gpu:2")
    return str(gres)


def _positive(value, what):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SlurmError(f"{what} must be a positive integer, got {value!r}")
    return value


@dataclasses.dataclass
class NodeSpec:
    """What a virtual node offers to Slurm."""

    cpus: int
    memory: int  # RealMemory in MiB
    features: list = dataclasses.field(default_factory=list)
    gres: str = ""
    weight: int = 0  # 0: leave Slurm's default

    def __post_init__(self):
        self.cpus = _positive(self.cpus, "cpus")
        self.memory = _positive(self.memory, "memory (MiB)")
        self.features = validate_features(self.features)
        self.gres = validate_gres(self.gres)
        if self.weight:
            self.weight = _positive(self.weight, "weight")

    @classmethod
    def from_dict(cls, data):
        """Build from ``{'cpus': .., 'memory': .., 'features': .., 'gres': .., 'weight': ..}``."""
        unknown = set(data) - {"cpus", "memory", "features", "gres", "weight"}
        if unknown:
            raise SlurmError(f"unknown node resource {sorted(unknown)[0]!r}: use cpus, memory, "
                             "features, gres, weight")
        missing = [k for k in ("cpus", "memory") if k not in data]
        if missing:
            raise SlurmError(f"node resources need {missing[0]!r}")
        return cls(**data)


def dynamic_conf(spec):
    """``slurmd -Z --conf`` / ``scontrol create`` string: ``CPUs=2 RealMemory=1000 Feature=a,b``."""
    parts = [f"CPUs={spec.cpus}", f"RealMemory={spec.memory}"]
    if spec.features:
        parts.append("Feature=" + ",".join(spec.features))
    if spec.gres:
        parts.append(f"Gres={spec.gres}")
    if spec.weight:
        parts.append(f"Weight={spec.weight}")
    return " ".join(parts)


def node_line(name, spec, addr=None, state=None, hostname=None):
    """A slurm.conf ``NodeName=`` line for one node."""
    parts = [f"NodeName={validate_name(name)}"]
    if addr:
        _word(addr, "node address")
        parts.append(f"NodeAddr={addr}")
    if hostname:
        parts.append(f"NodeHostname={validate_name(hostname, 'node hostname')}")
    parts.append(dynamic_conf(spec))
    if state:
        parts.append(f"State={_choice(state, NODE_LINE_STATES, 'node state')}")
    return " ".join(parts)


def create_args(name, spec=None, conf=None, addr=None, state="FUTURE"):
    """Arguments after ``scontrol create`` for a dynamic node (``State=FUTURE`` by default).

    ``conf`` is an extra ``Key=Value ...`` string appended verbatim after
    validation of its shape; ``spec`` a :class:`NodeSpec`.
    """
    args = [f"NodeName={validate_name(name)}"]
    if addr:
        args.append(f"NodeAddr={_word(addr, 'node address')}")
    if spec is not None:
        args += dynamic_conf(spec).split()
    if conf:
        args += conf_tokens(conf)
    if not any(a.lower().startswith("state=") for a in args):
        args.append(f"State={_choice(state, CREATE_STATES, 'state of a created node')}")
    return args


def conf_tokens(conf):
    """Split ``'CPUs=2 RealMemory=100'`` into tokens, each of the form ``Key=Value``."""
    tokens = str(conf).split()
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not re.match(r"^[A-Za-z]+$", key) or not value:
            raise SlurmError(f"node conf item {token!r} is not Key=Value")
        if key.lower() == "nodename":
            raise SlurmError(f"node conf item {token!r} must not name the node")
        if key.lower() == "state":
            _choice(value, CREATE_STATES, "state of a created node")
    return tokens


def nodeset_line(name, feature=None, nodes=None):
    """``NodeSet=htc Feature=htc`` (dynamic nodes) or ``NodeSet=x Nodes=vn[1-4]``."""
    if (feature is None) == (nodes is None):
        raise SlurmError(f"nodeset {name!r} needs exactly one of feature and nodes")
    line = f"NodeSet={validate_name(name, 'nodeset name')}"
    if feature is not None:
        return f"{line} Feature={validate_feature(feature)}"
    return f"{line} Nodes={_word(nodes, 'nodeset nodes')}"


def partition_line(name, nodes="ALL", default=False, max_time=None, state="UP", **extra):
    """``PartitionName=htc Nodes=htc Default=NO MaxTime=1-00:00:00 State=UP [Key=Value...]``.

    ``extra`` keys are written as given (``PriorityTier=2``); values must be
    single words.
    """
    parts = [f"PartitionName={validate_name(name, 'partition name')}",
             f"Nodes={_word(nodes, 'partition nodes')}",
             f"Default={'YES' if default else 'NO'}"]
    if max_time is not None:
        parts.append(f"MaxTime={_word(str(max_time), 'partition MaxTime')}")
    parts.append(f"State={_choice(state, PARTITION_STATES, 'partition state')}")
    for key, value in extra.items():
        if not re.match(r"^[A-Za-z]+$", key):
            raise SlurmError(f"partition option {key!r} is not a slurm.conf key")
        parts.append(f"{key}={_word(str(value), f'partition {key}')}")
    return " ".join(parts)


def _choice(value, allowed, what):
    if str(value).upper() not in allowed:
        raise SlurmError(f"{what} {value!r} is invalid: use one of {', '.join(allowed)}")
    return str(value).upper()


def _word(value, what):
    if not isinstance(value, str) or not _WORD.match(value):
        raise SlurmError(f"{what} {value!r} is invalid: it must be one word without spaces or '='")
    return value
