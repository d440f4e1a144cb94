"""Node definitions for ``slurmd -Z --conf`` and ``scontrol create``, with validation.

One :class:`NodeSpec` (CPUs, memory, features, gres, weight) gives
:func:`dynamic_conf` (``CPUs=2 RealMemory=1000 Feature=virtual,htc``, what a
dynamic node's slurmd and ``scontrol create`` take) and :func:`create_args`
(the arguments of ``scontrol create`` for one node). slurm.conf itself is
written by the state tree (``salt/slurm/files/slurm.conf.jinja``), not here.

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

#: States ``scontrol create`` accepts for a new node.
CREATE_STATES = ("FUTURE", "CLOUD")


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


def _choice(value, allowed, what):
    if str(value).upper() not in allowed:
        raise SlurmError(f"{what} {value!r} is invalid: use one of {', '.join(allowed)}")
    return str(value).upper()


def _word(value, what):
    if not isinstance(value, str) or not _WORD.match(value):
        raise SlurmError(f"{what} {value!r} is invalid: it must be one word without spaces or '='")
    return value
