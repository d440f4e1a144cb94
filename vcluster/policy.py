"""Pillar ``vcluster:`` -> typed, validated policy objects.

:func:`load` turns the pillar dictionary into a frozen :class:`Policy`.
Every problem raises :class:`~vcluster.errors.PolicyError` with one sentence
that names the full key path and the offending value, for example
``vcluster:profiles:htc:cpus must be a positive integer, got 'two'``.

Each section accepts exactly the keys listed in its ``*_KEYS`` table below
(key -> (default, checker)); an unknown key is an error, so a typo never
passes silently. Adding a key later is one line in the table plus a field in
the dataclass. :func:`validate_request` checks an expand request against the
limits before any side effect.
"""

import collections.abc
import dataclasses
import difflib
import ipaddress
import re

import hostlist

from vcluster.errors import PolicyError

ROOT = "vcluster"
MEMBERSHIPS = ("dynamic", "static", "cloud")
DRIVERS = ("lxd", "openstack", "opennebula")
DEFAULT_REGISTRY = "/var/lib/vcluster/registry.sqlite"
MAX_POOL_ADDRESSES = 65536

#: Provider keys whose values are credentials: kept out of repr/str/as_dict.
SECRET_KEYS = frozenset({"password", "token", "key", "secret", "auth", "session", "trust_password"})
_SECRET_SUFFIXES = ("_password", "_token", "_secret", "_key")

_REQUIRED = object()

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MINION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FEATURE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


# -- small immutable mappings --------------------------------------------------


class FrozenMap(collections.abc.Mapping):
    """A read-only dict (frozen dataclasses hold these instead of dicts)."""

    def __init__(self, data=()):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return repr(self._data)


class Settings(FrozenMap):
    """Provider settings: values of secret keys never appear in repr or str."""

    def redacted(self):
        """A plain dict with every secret value replaced by ``<hidden>``."""
        return {k: "<hidden>" if is_secret(k) else v for k, v in self._data.items()}

    def __repr__(self):
        return repr(self.redacted())

    __str__ = __repr__


# -- the policy objects ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Limits:
    """Cluster-wide limits on virtual nodes."""

    max_nodes: int
    max_per_request: int


@dataclasses.dataclass(frozen=True)
class Reconcile:
    """How often and how patiently ``vcluster.reconcile`` repairs (see docs/reconcile.md)."""

    interval: float = 300  # seconds between scheduled runs; 0 turns the schedule off
    grace: float = 600  # seconds before an interrupted transition counts as stuck
    apply: bool = True  # scheduled runs repair (False: report only)


@dataclasses.dataclass(frozen=True)
class Faults:
    """Retries of provider calls and the pause of a profile that keeps failing."""

    create_attempts: int = 3  # provider create tries per expand
    create_backoff: float = 2.0  # seconds before the 2nd try, doubled after each
    create_deadline: float = 600  # seconds for all tries together
    failures: int = 3  # failed expand requests of one profile ...
    window: float = 600  # ... within this many seconds ...
    pause: float = 900  # ... refuse its expands for this many seconds (failures 0: never)


@dataclasses.dataclass(frozen=True)
class PowerSave:
    """Slurm power saving of cloud-membership nodes (slurm.conf Suspend*/Resume*)."""

    suspend_time: int = 600  # SuspendTime: seconds idle before SuspendProgram
    suspend_timeout: int = 120  # SuspendTimeout
    resume_timeout: int = 600  # ResumeTimeout: then ResumeFailProgram
    resume_rate: int = 0  # ResumeRate, nodes per minute (0: no limit)
    suspend_rate: int = 0  # SuspendRate, nodes per minute (0: no limit)
    exclude_nodes: tuple = ()  # SuspendExcNodes besides the bare-metal nodes
    exclude_partitions: tuple = ()  # SuspendExcParts


@dataclasses.dataclass(frozen=True)
class AutoscaleProfile:
    """Autoscaling bounds of one profile."""

    name: str
    min_nodes: int = 0  # kept ready (dynamic/static) even when idle
    max_nodes: int | None = None  # None: the profile's max_nodes, else limits:max_nodes
    idle_time: int = 600  # seconds a node may idle before it is retired
    warm_pool: int = 0  # nodes kept suspended (provider suspend) for a fast resume
    per_job: bool = False  # jobs flagged with autoscale:job_flag get their own nodes here


@dataclasses.dataclass(frozen=True)
class Autoscale:
    """The ``vcluster.autoscale`` runner and its periodic run (the ``vcluster_tasks`` engine)."""

    enabled: bool = False  # False: no periodic run; the runner only reports
    interval: int = 60  # seconds between scheduled runs
    job_flag: str = "vcluster-own"  # sbatch --comment=<flag>[:<profile>] asks for own nodes
    profiles: FrozenMap = dataclasses.field(default_factory=FrozenMap)

    def as_dict(self):
        return {"enabled": self.enabled, "interval": self.interval, "job_flag": self.job_flag,
                "profiles": {n: dataclasses.asdict(p) for n, p in self.profiles.items()}}


@dataclasses.dataclass(frozen=True)
class Liveness:
    """How vcluster, not slurmctld, decides that a node is dead (see docs/operations.md)."""

    enabled: bool = True  # False: the scheduled check only reports
    timeout: float = 30  # seconds a flagged node's minion may take to answer the closer look
    baremetal: bool = True  # also watch Slurm nodes that are minions but not vcluster nodes
    resume: bool = True  # undo vcluster's own DOWN once the node's slurmd answers again


@dataclasses.dataclass(frozen=True)
class Suspend:
    """Defaults of ``vcluster.suspend`` / ``vcluster.resume``."""

    mode: str = "suspend"  # suspend (Nova: memory to disk) | pause (memory kept); LXD: freeze
    resume_timeout: float = 120  # seconds for minion and slurmd to answer after the provider resume


@dataclasses.dataclass(frozen=True)
class Preemption:
    """Jobs of some partitions suspend the virtual nodes on their hypervisor host."""

    enabled: bool = False
    partitions: tuple = ()  # jobs in these Slurm partitions preempt
    preemptible: tuple = ()  # virtual nodes whose profile partition is listed here may be suspended
    mode: str = "suspend"  # suspend | pause
    migrate: bool = False  # on job end, move to a free host first when the provider can
    hypervisors: FrozenMap = dataclasses.field(default_factory=FrozenMap)  # Slurm node -> provider host

    def as_dict(self):
        data = dataclasses.asdict(self)
        data["partitions"], data["preemptible"] = list(self.partitions), list(self.preemptible)
        data["hypervisors"] = dict(self.hypervisors)
        return data


@dataclasses.dataclass(frozen=True)
class Pool:
    """Node names and IPv4 addresses, both in allocation order (lowest first)."""

    name: str
    names: tuple = dataclasses.field(repr=False)
    addresses: tuple = dataclasses.field(repr=False)
    prefix: int = 24
    gateway: str | None = None

    @property
    def size(self):
        """How many nodes the pool can hold (names, or addresses when fewer)."""
        return min(len(self.names), len(self.addresses)) if self.addresses else len(self.names)

    def as_dict(self):
        return {
            "names": hostlist.collect_hostlist(list(self.names)),
            "addresses": _compress_addresses(self.addresses),
            "size": self.size,
            "prefix": self.prefix,
            "gateway": self.gateway,
        }


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    """One provider: its driver and the driver's settings.

    ``options`` holds every key that is set, credentials included (pass
    ``dict(options)`` to the provider); its repr hides secret values.
    """

    name: str
    driver: str
    options: Settings = dataclasses.field(default_factory=Settings)

    @property
    def secret_keys(self):
        """Names of the options that hold credentials."""
        return tuple(sorted(k for k in self.options if is_secret(k)))

    def as_dict(self):
        """Driver and options, every secret value replaced by ``<hidden>``."""
        return dict(self.options.redacted(), driver=self.driver)


@dataclasses.dataclass(frozen=True)
class Profile:
    """What one kind of virtual node looks like and where it comes from."""

    name: str
    provider: str
    pool: str
    image: str
    cpus: int = 1
    memory: int = 1024
    flavor: str | None = None
    network: str | None = None
    features: tuple = ("virtual",)
    partition: str | None = None
    join_timeout: float = 300
    sync_modules: bool = False
    salt_mine: bool = False
    max_nodes: int | None = None
    membership: str = "dynamic"
    resume_timeout: int | None = None  # cloud: ResumeTimeout of its partition (else power_save's)
    extra: FrozenMap = dataclasses.field(default_factory=FrozenMap)

    def as_dict(self):
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["features"] = list(self.features)
        data["extra"] = dict(self.extra)
        return data


@dataclasses.dataclass(frozen=True)
class Policy:
    """The validated ``vcluster:`` pillar."""

    cluster: str
    controller: str
    master: str
    registry: str
    membership: str
    limits: Limits
    pools: FrozenMap
    providers: FrozenMap
    profiles: FrozenMap
    reconcile: Reconcile = dataclasses.field(default_factory=Reconcile)
    faults: Faults = dataclasses.field(default_factory=Faults)
    power_save: PowerSave = dataclasses.field(default_factory=PowerSave)
    autoscale: Autoscale = dataclasses.field(default_factory=Autoscale)
    liveness: Liveness = dataclasses.field(default_factory=Liveness)
    suspend: Suspend = dataclasses.field(default_factory=Suspend)
    preemption: Preemption = dataclasses.field(default_factory=Preemption)

    def profile(self, name):
        """The profile called ``name``; :class:`PolicyError` when undefined."""
        if not isinstance(name, str) or name not in self.profiles:
            raise PolicyError(
                "profile {} is not defined in {}:profiles (defined: {})".format(
                    _show(name), ROOT, ", ".join(sorted(self.profiles)) or "none"
                )
            )
        return self.profiles[name]

    def membership_of(self, profile):
        """The membership mode (dynamic|static|cloud) of a profile (name or object)."""
        prof = profile if isinstance(profile, Profile) else self.profile(profile)
        return prof.membership

    def pool_of(self, profile):
        """The :class:`Pool` of a profile (name or object)."""
        prof = profile if isinstance(profile, Profile) else self.profile(profile)
        return self.pools[prof.pool]

    def provider_of(self, profile):
        """The :class:`ProviderConfig` of a profile (name or object)."""
        prof = profile if isinstance(profile, Profile) else self.profile(profile)
        return self.providers[prof.provider]

    def as_dict(self):
        """Plain data for runner returns; secrets are replaced by ``<hidden>``."""
        return {
            "cluster": self.cluster,
            "controller": self.controller,
            "master": self.master,
            "registry": self.registry,
            "membership": self.membership,
            "limits": dataclasses.asdict(self.limits),
            "pools": {n: p.as_dict() for n, p in self.pools.items()},
            "providers": {n: p.as_dict() for n, p in self.providers.items()},
            "profiles": {n: p.as_dict() for n, p in self.profiles.items()},
            "reconcile": dataclasses.asdict(self.reconcile),
            "faults": dataclasses.asdict(self.faults),
            "power_save": dataclasses.asdict(self.power_save),
            "autoscale": self.autoscale.as_dict(),
            "liveness": dataclasses.asdict(self.liveness),
            "suspend": dataclasses.asdict(self.suspend),
            "preemption": self.preemption.as_dict(),
        }


# -- error helpers --------------------------------------------------------------


def _show(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(path, what, value):
    return PolicyError(f"{path} {what}, got {_show(value)}")


def _join(path, key):
    return f"{path}:{key}"


# -- value checkers: (value, path) -> normalised value -----------------------------


def _positive_int(value, path):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(path, "must be a positive integer", value)
    return value


def _int(value, path):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, "must be an integer", value)
    return value


def _bool(value, path):
    if not isinstance(value, bool):
        raise _fail(path, "must be true or false", value)
    return value


def _positive_number(value, path):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail(path, "must be a positive number", value)
    if value == float("inf"):
        raise _fail(path, "must be a finite number", value)
    return value


def _non_negative_number(value, path):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise _fail(path, "must be a number of seconds, zero or more", value)
    if value == float("inf"):
        raise _fail(path, "must be a finite number", value)
    return value


def _non_negative_int(value, path):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(path, "must be a whole number, zero or more", value)
    return value


def _string(value, path):
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, "must be a non-empty string", value)
    return value


def _bool_or_string(value, path):
    if isinstance(value, bool):
        return value
    return _string(value, path)


def _slug(value, path):
    if not isinstance(value, str) or not _SLUG.match(value):
        raise _fail(path, "must be a name of letters, digits, '-' or '_' (at most 63 characters)", value)
    return value


def _name(value, path):
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(path, "must be a name of letters, digits, '.', '-' or '_' (at most 63 characters)", value)
    return value


def _minion_id(value, path):
    if not isinstance(value, str) or not _MINION_ID.match(value):
        raise _fail(path, "must be a Salt minion id (letters, digits, '.', '-', '_')", value)
    return value


def _host_or_address(value, path):
    if isinstance(value, str):
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            pass
        labels = value.rstrip(".").split(".")
        if len(value) <= 253 and not value.replace(".", "").isdigit() and all(_DNS_LABEL.match(x) for x in labels):
            return value
    raise _fail(path, "must be an IPv4 address or a DNS name", value)


def _ipv4(value, path):
    if isinstance(value, str):
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            pass
    raise _fail(path, "must be an IPv4 address", value)


def _abs_path(value, path):
    if not isinstance(value, str) or not value.startswith("/"):
        raise _fail(path, "must be an absolute path", value)
    return value


def _choice(options):
    def check(value, path):
        if value not in options:
            raise _fail(path, "must be one of {}".format(" | ".join(options)), value)
        return value

    return check


def _string_list(value, path):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _fail(path, "must be a list of strings", value)
    for i, item in enumerate(value):
        _string(item, f"{path}[{i}]")
    return tuple(value)


def _mapping(value, path):
    if not isinstance(value, collections.abc.Mapping):
        raise _fail(path, "must be a mapping", value)
    return dict(value)


def _features(value, path):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _fail(path, "must be a list of Slurm feature words", value)
    seen = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _FEATURE.match(item):
            raise _fail(
                f"{path}[{i}]", "must be a Slurm feature word (letters, digits, '_', '.', '-')", item
            )
        if item in seen:
            raise _fail(f"{path}[{i}]", "repeats a feature already listed", item)
        seen.add(item)
    return tuple(value)


def _slurm_word(value, path):
    if not isinstance(value, str) or not _FEATURE.match(value):
        raise _fail(path, "must be a Slurm partition name (letters, digits, '_', '.', '-')", value)
    return value


def _prefix(value, path):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise _fail(path, "must be an integer netmask length from 1 to 32", value)
    return value


# -- accepted keys per section: key -> (default, checker) -----------------------------
# A checker of None means the section parser handles the value itself.

TOP_KEYS = {
    "cluster": (_REQUIRED, _slug),
    "controller": (_REQUIRED, _minion_id),
    "master": (_REQUIRED, _host_or_address),
    "registry": (DEFAULT_REGISTRY, _abs_path),
    "membership": ("dynamic", _choice(MEMBERSHIPS)),
    "limits": ({}, None),
    "reconcile": ({}, None),
    "faults": ({}, None),
    "power_save": ({}, None),
    "autoscale": ({}, None),
    "liveness": ({}, None),
    "suspend": ({}, None),
    "preemption": ({}, None),
    "pools": (_REQUIRED, None),
    "providers": (_REQUIRED, None),
    "profiles": (_REQUIRED, None),
}

LIMITS_KEYS = {
    "max_nodes": (None, _positive_int),  # None: every name of every pool
    "max_per_request": (16, _positive_int),
}

RECONCILE_KEYS = {
    "interval": (Reconcile.interval, _non_negative_number),
    "grace": (Reconcile.grace, _positive_number),
    "apply": (Reconcile.apply, _bool),
}

FAULTS_KEYS = {
    "create_attempts": (Faults.create_attempts, _positive_int),
    "create_backoff": (Faults.create_backoff, _non_negative_number),
    "create_deadline": (Faults.create_deadline, _positive_number),
    "failures": (Faults.failures, _non_negative_int),
    "window": (Faults.window, _positive_number),
    "pause": (Faults.pause, _non_negative_number),
}

POWER_SAVE_KEYS = {
    "suspend_time": (PowerSave.suspend_time, _positive_int),
    "suspend_timeout": (PowerSave.suspend_timeout, _positive_int),
    "resume_timeout": (PowerSave.resume_timeout, _positive_int),
    "resume_rate": (PowerSave.resume_rate, _non_negative_int),
    "suspend_rate": (PowerSave.suspend_rate, _non_negative_int),
    "exclude_nodes": (None, None),  # Slurm hostlist (or a list of them)
    "exclude_partitions": (None, None),  # list of partition names
}

AUTOSCALE_KEYS = {
    "enabled": (Autoscale.enabled, _bool),
    "interval": (Autoscale.interval, _positive_int),
    "job_flag": (Autoscale.job_flag, None),
    "profiles": ({}, None),
}

AUTOSCALE_PROFILE_KEYS = {
    "min_nodes": (0, _non_negative_int),
    "max_nodes": (None, _positive_int),
    "idle_time": (600, _positive_int),
    "warm_pool": (0, _non_negative_int),
    "per_job": (False, _bool),
}

SUSPEND_MODES = ("suspend", "pause")

LIVENESS_KEYS = {
    "enabled": (Liveness.enabled, _bool),
    "timeout": (Liveness.timeout, _positive_number),
    "baremetal": (Liveness.baremetal, _bool),
    "resume": (Liveness.resume, _bool),
}

SUSPEND_KEYS = {
    "mode": (Suspend.mode, _choice(SUSPEND_MODES)),
    "resume_timeout": (Suspend.resume_timeout, _positive_number),
}

PREEMPTION_KEYS = {
    "enabled": (Preemption.enabled, _bool),
    "partitions": ((), None),  # list of Slurm partition names
    "preemptible": ((), None),  # list of Slurm partition names
    "mode": (Preemption.mode, _choice(SUSPEND_MODES)),
    "migrate": (Preemption.migrate, _bool),
    "hypervisors": ({}, None),  # Slurm node name -> provider host name
}

POOL_KEYS = {
    "names": (_REQUIRED, None),
    "addresses": (None, None),
    "prefix": (None, _prefix),  # None: the CIDR's own length, else 24
    "gateway": (None, _ipv4),
}

PROFILE_KEYS = {
    "provider": (None, _name),  # None: the only provider, when there is one
    "pool": (None, _name),  # None: the only pool, when there is one
    "image": (_REQUIRED, _string),
    "cpus": (1, _positive_int),
    "memory": (1024, _positive_int),
    "flavor": (None, _string),
    "network": (None, _string),  # None: the provider's network
    "features": (("virtual",), _features),
    "partition": (None, _slurm_word),
    "join_timeout": (300, _positive_number),
    # the node's highstate syncs _modules, _states, ... from file_roots
    # (Salt's autoload_dynamic_modules); vcluster's node states need none
    "sync_modules": (False, _bool),
    # the node's minion runs Salt's mine.update at start and every
    # mine_interval; vcluster's states read no mine data
    "salt_mine": (False, _bool),
    "max_nodes": (None, _positive_int),
    "membership": (None, _choice(MEMBERSHIPS)),  # None: the cluster's
    "resume_timeout": (None, _positive_int),  # cloud: its partition's ResumeTimeout
    "extra": (None, _mapping),  # provider specific, keys checked against EXTRA_KEYS
}

PROVIDER_COMMON_KEYS = {
    "driver": (_REQUIRED, _choice(DRIVERS)),
}

PROVIDER_KEYS = {
    # keys vcluster/providers/lxd.py reads
    "lxd": {
        "network": (_REQUIRED, _string),  # managed bridge
        "storage_pool": (_REQUIRED, _string),
        "endpoint": (None, _string),  # https URL or unix socket path; None: local socket
        "project": (None, _string),
        "profiles": (None, _string_list),
        "privileged": (None, _bool),
        "timeout": (None, _positive_number),
        "parallel": (None, _positive_int),
        "verify": (None, _bool_or_string),
        "cert": (None, _string),
        "key": (None, _string),
    },
    # keys vcluster/providers/opennebula.py reads
    "opennebula": {
        "endpoint": (_REQUIRED, _string),  # XML-RPC URL
        "credentials_file": (None, _abs_path),  # file with "user:password", mode 0600
        "session": (None, _string),  # "user:password" inline (prefer credentials_file)
        "network": (None, _string),  # default virtual network of its profiles
        "timeout": (None, _positive_number),
        "verify_tls": (None, _bool_or_string),
        "pool_filter": (None, _int),
        "cpu_factor": (None, _positive_number),
        "enforce_capacity": (None, _bool),
        "boot": (None, _choice(("start_script", "cloud_init"))),
        "start_command": (None, _string),
        "context": (None, _mapping),
        "template": (None, _string),
        "network_owner": (None, _string),
    },
    "openstack": {
        "cloud": (None, _string),  # clouds.yaml entry on the master
        "auth": (None, _mapping),  # inline auth (prefer clouds.yaml)
        "region": (None, _string),
        "network": (None, _string),  # default network of its profiles
        "availability_zone": (None, _string),
        "security_groups": (None, _string_list),
        "key_name": (None, _string),
        "verify": (None, _bool_or_string),
        "timeout": (None, _positive_number),
        # keys vcluster/providers/openstack.py reads (see docs/openstack.md)
        "clouds_yaml": (None, _abs_path),  # clouds.yaml holding 'cloud'
        "region_name": (None, _string),
        "interface": (None, _string),
        "cacert": (None, _abs_path),
        "auth_type": (None, _string),
        "networks": (None, _choice(("auto", "none"))),  # servers without a network
        "boot_timeout": (None, _positive_number),
        "action_timeout": (None, _positive_number),
        "poll_interval": (None, _positive_number),
        "multi_create": (None, _bool),
        "max_batch": (None, _positive_int),
        "api_retries": (None, _int),
        "api_retry_deadline": (None, _positive_number),
        "api_retry_backoff": (None, _positive_number),
        "api_concurrency": (None, _positive_int),
        "minion_start": (None, _string),
    },
}

#: Keys a profile's ``extra`` mapping may hold, per driver (passed as ``InstanceSpec.extra``).
EXTRA_KEYS = {
    "lxd": ("config", "devices"),
    "opennebula": (
        "template", "context", "boot", "start_command", "cpu_factor", "network_owner", "sched_requirements",
    ),
    "openstack": (
        "scheduler_hints", "availability_zone", "security_groups", "key_name", "metadata",
        "server_group_policy", "server_group", "config_drive", "networks", "boot_timeout", "runcmd",
    ),
}


def is_secret(key):
    """True for provider keys holding credentials."""
    return key in SECRET_KEYS or key.endswith(_SECRET_SUFFIXES)


# -- section parsing ------------------------------------------------------------


def _section(data, path, spec):
    """Check ``data`` against ``spec``; return {key: value or default}."""
    if data is None:
        data = {}
    if not isinstance(data, collections.abc.Mapping):
        raise _fail(path, "must be a mapping", data)
    for key in data:
        if key not in spec:
            raise _unknown(path, key, spec)
    out = {}
    for key, (default, check) in spec.items():
        value = data.get(key)
        if value is None:
            if default is _REQUIRED:
                raise PolicyError(f"{_join(path, key)} is required, got nothing")
            out[key] = default
        else:
            out[key] = check(value, _join(path, key)) if check else value
    return out


def _unknown(path, key, spec):
    accepted = sorted(spec)
    hint = difflib.get_close_matches(str(key), accepted, n=1)
    hint = f" (did you mean {hint[0]!r}?)" if hint else ""
    return PolicyError(
        "{} is not a known key{}, accepted keys are {}".format(_join(path, key), hint, ", ".join(accepted))
    )


def _named(data, path, parse):
    """A non-empty mapping name -> item, each item parsed by ``parse(name, item, path)``."""
    if not isinstance(data, collections.abc.Mapping) or not data:
        raise _fail(path, "must be a non-empty mapping of names", data)
    out = {}
    for name, item in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(path, "keys must be names of letters, digits, '.', '-' or '_'", name)
        out[name] = parse(name, item, _join(path, name))
    return out


def _parse_names(value, path):
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, (list, tuple)) or not specs:
        raise _fail(path, "must be a Slurm hostlist such as 'vnode[001-064]'", value)
    names = []
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise _fail(path, "must be a Slurm hostlist such as 'vnode[001-064]'", spec)
        try:
            names.extend(hostlist.expand_hostlist(spec, allow_duplicates=True))
        except hostlist.BadHostlist:
            raise _fail(path, "is not a valid Slurm hostlist", spec) from None
    if not names:
        raise _fail(path, "must name at least one node", value)
    seen = set()
    for name in names:
        if not _HOSTNAME.match(name) or name.isdigit():
            raise _fail(
                path,
                "must expand to hostnames of lowercase letters, digits and '-' (at most 63 characters)",
                name,
            )
        if name in seen:
            raise _fail(path, "lists a node name twice", name)
        seen.add(name)
    return tuple(names)


def _parse_address_spec(spec, path):
    """One 'a.b.c.d-a.b.c.e', CIDR or single address -> (first, last, network or None)."""
    try:
        if "/" in spec:
            net = ipaddress.IPv4Network(spec.strip(), strict=True)
            return net.network_address, net.broadcast_address, net
        if "-" in spec:
            first, last = (ipaddress.IPv4Address(p.strip()) for p in spec.split("-", 1))
        else:
            first = last = ipaddress.IPv4Address(spec.strip())
    except (ValueError, TypeError):
        raise _fail(
            path, "must be an IPv4 range 'a.b.c.d-a.b.c.e' or a CIDR network 'a.b.c.d/n'", spec
        ) from None
    if last < first:
        raise _fail(path, "must be a range whose first address is not above its last", spec)
    return first, last, None


def _parse_addresses(value, path, prefix, gateway):
    """Expand the pool's address specs; returns (addresses, prefix)."""
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, (list, tuple)) or not specs:
        raise _fail(path, "must be an IPv4 range 'a.b.c.d-a.b.c.e' or a CIDR network 'a.b.c.d/n'", value)
    parsed = []
    for spec in specs:
        if not isinstance(spec, str):
            raise _fail(path, "must be an IPv4 range 'a.b.c.d-a.b.c.e' or a CIDR network 'a.b.c.d/n'", spec)
        parsed.append((spec,) + _parse_address_spec(spec, path))
    if prefix is None:
        cidrs = [net for _, _, _, net in parsed if net is not None]
        prefix = cidrs[0].prefixlen if len(parsed) == 1 and cidrs else 24
    network = ipaddress.IPv4Network((parsed[0][1], prefix), strict=False)
    excluded = {network.network_address, network.broadcast_address} if prefix < 31 else set()
    if gateway is not None:
        excluded.add(gateway)
    addresses, seen = [], set()
    for spec, first, last, net in parsed:
        if first not in network or last not in network:
            raise _fail(path, f"must lie inside one /{prefix} network ({network})", spec)
        if int(last) - int(first) + 1 > MAX_POOL_ADDRESSES:
            raise _fail(path, f"must hold at most {MAX_POOL_ADDRESSES} addresses", spec)
        if net is not None and net.prefixlen < 31:
            excluded_here = excluded | {net.network_address, net.broadcast_address}
        else:
            excluded_here = excluded
        for number in range(int(first), int(last) + 1):
            addr = ipaddress.IPv4Address(number)
            if addr in excluded_here:
                continue
            if addr in seen:
                raise _fail(path, "lists an address twice", str(addr))
            seen.add(addr)
            addresses.append(addr)
    if not addresses:
        raise _fail(path, "must leave at least one usable address", value)
    return tuple(str(a) for a in sorted(addresses)), prefix


def _parse_pool(name, data, path):
    fields = _section(data, path, POOL_KEYS)
    names = _parse_names(fields["names"], _join(path, "names"))
    gateway = fields["gateway"]
    addresses, prefix = (), fields["prefix"] or 24
    if fields["addresses"] is not None:
        addresses, prefix = _parse_addresses(fields["addresses"], _join(path, "addresses"), fields["prefix"], gateway)
        if len(addresses) < len(names):
            raise _fail(
                _join(path, "addresses"),
                f"must hold at least as many usable addresses ({len(addresses)}) as names ({len(names)})",
                fields["addresses"],
            )
    if gateway is not None and addresses:
        network = ipaddress.IPv4Network((addresses[0], prefix), strict=False)
        if gateway not in network:
            raise _fail(_join(path, "gateway"), f"must lie inside the pool's network {network}", str(gateway))
    return Pool(
        name=name,
        names=names,
        addresses=addresses,
        prefix=prefix,
        gateway=str(gateway) if gateway is not None else None,
    )


def _parse_provider(name, data, path):
    if data is not None and not isinstance(data, collections.abc.Mapping):
        raise _fail(path, "must be a mapping", data)
    data = dict(data or {})
    if data.get("driver") is None and name in DRIVERS:
        data["driver"] = name  # a provider called 'lxd' defaults to driver lxd
    driver = _section({"driver": data.get("driver")}, path, PROVIDER_COMMON_KEYS)["driver"]
    spec = dict(PROVIDER_COMMON_KEYS, **PROVIDER_KEYS[driver])
    fields = _section(data, path, spec)
    fields.pop("driver")
    options = {k: v for k, v in fields.items() if v is not None}
    return ProviderConfig(name=name, driver=driver, options=Settings(options))


def _pick(value, key, path, defined, kind):
    """Resolve a profile's reference to a pool or provider."""
    if value is None:
        if len(defined) == 1:
            return next(iter(defined))
        raise PolicyError(
            "{} is required when more than one {} is defined, got nothing".format(_join(path, key), kind)
        )
    if value not in defined:
        raise _fail(
            _join(path, key),
            "must name a {} defined in {}:{}s ({})".format(kind, ROOT, kind, ", ".join(sorted(defined))),
            value,
        )
    return value


def _parse_profile(name, data, path, pools, providers, membership):
    fields = _section(data, path, PROFILE_KEYS)
    fields["provider"] = _pick(fields["provider"], "provider", path, providers, "provider")
    fields["pool"] = _pick(fields["pool"], "pool", path, pools, "pool")
    if fields["membership"] is None:
        fields["membership"] = membership
    provider = providers[fields["provider"]]
    driver = provider.driver
    if fields["network"] is None:
        fields["network"] = provider.options.get("network")
    extra = fields["extra"] or {}
    for key in extra:
        if key not in EXTRA_KEYS[driver]:
            raise _unknown(_join(path, "extra"), key, dict.fromkeys(EXTRA_KEYS[driver]))
    fields["extra"] = FrozenMap(extra)
    if fields["resume_timeout"] is not None:
        if fields["membership"] != "cloud":
            raise _fail(_join(path, "resume_timeout"), "applies to cloud membership only", fields["resume_timeout"])
        if fields["resume_timeout"] <= fields["join_timeout"]:
            raise _fail(_join(path, "resume_timeout"),
                        f"must exceed the profile's join_timeout ({fields['join_timeout']:g} s)",
                        fields["resume_timeout"])
    if driver == "openstack" and fields["flavor"] is None:
        raise PolicyError(
            "{} is required for OpenStack provider {!r}, got nothing".format(
                _join(path, "flavor"), fields["provider"]
            )
        )
    return Profile(name=name, **fields)


def _check_pools_disjoint(pools):
    owner_name, owner_addr = {}, {}
    for pool in pools.values():
        for node in pool.names:
            if node in owner_name:
                raise _fail(
                    f"{ROOT}:pools:{pool.name}:names",
                    f"must not reuse a name of {ROOT}:pools:{owner_name[node]}:names",
                    node,
                )
            owner_name[node] = pool.name
        for addr in pool.addresses:
            if addr in owner_addr:
                raise _fail(
                    f"{ROOT}:pools:{pool.name}:addresses",
                    f"must not overlap {ROOT}:pools:{owner_addr[addr]}:addresses",
                    addr,
                )
            owner_addr[addr] = pool.name
    return owner_addr


def _check_cloud_pools(profiles):
    """A pool of a cloud profile belongs to that profile alone (Slurm declares its names once)."""
    owner = {}
    for prof in profiles.values():
        if prof.membership != "cloud":
            continue
        for other in profiles.values():
            if other.name != prof.name and other.pool == prof.pool:
                first, second = sorted((prof.name, other.name))
                raise _fail(
                    f"{ROOT}:profiles:{second}:pool",
                    f"must not share the pool of cloud profile {first!r} (cloud pool names are declared "
                    "in slurm.conf with one profile's sizes)",
                    prof.pool,
                )
        owner[prof.pool] = prof.name
    return owner


def _parse_power_save(data, profiles):
    path = f"{ROOT}:power_save"
    fields = _section(data, path, POWER_SAVE_KEYS)
    if fields["exclude_nodes"] is None:
        fields["exclude_nodes"] = ()
    else:
        fields["exclude_nodes"] = _parse_names(fields["exclude_nodes"], _join(path, "exclude_nodes"))
    parts = fields["exclude_partitions"]
    if parts is None:
        fields["exclude_partitions"] = ()
    else:
        if isinstance(parts, str) or not isinstance(parts, (list, tuple)):
            raise _fail(_join(path, "exclude_partitions"), "must be a list of Slurm partition names", parts)
        fields["exclude_partitions"] = tuple(
            _slurm_word(p, f"{path}:exclude_partitions[{i}]") for i, p in enumerate(parts)
        )
    for prof in sorted(profiles.values(), key=lambda p: p.name):
        if prof.membership == "cloud" and prof.resume_timeout is None and fields["resume_timeout"] <= prof.join_timeout:
            raise _fail(
                _join(path, "resume_timeout"),
                f"must exceed the join_timeout of cloud profile {prof.name!r} ({prof.join_timeout} s)",
                fields["resume_timeout"],
            )
    return PowerSave(**fields)


def _parse_autoscale(data, profiles, max_total):
    path = f"{ROOT}:autoscale"
    fields = _section(data, path, AUTOSCALE_KEYS)
    flag = fields["job_flag"]
    if not isinstance(flag, str) or not _SLUG.match(flag):
        raise _fail(_join(path, "job_flag"), "must be a word of letters, digits, '-' or '_'", flag)
    items = fields["profiles"] or {}
    if not isinstance(items, collections.abc.Mapping):
        raise _fail(_join(path, "profiles"), "must be a mapping of profile names", items)
    out = {}
    for name, item in items.items():
        ppath = f"{path}:profiles:{name}"
        if name not in profiles:
            raise _fail(
                f"{path}:profiles",
                "keys must name profiles defined in {}:profiles ({})".format(ROOT, ", ".join(sorted(profiles))),
                name,
            )
        sub = _section(item, ppath, AUTOSCALE_PROFILE_KEYS)
        prof = profiles[name]
        ceiling = prof.max_nodes or max_total
        if sub["max_nodes"] is not None and sub["max_nodes"] > ceiling:
            raise _fail(_join(ppath, "max_nodes"), f"must not exceed the profile's limit ({ceiling})", sub["max_nodes"])
        top = sub["max_nodes"] or ceiling
        if sub["min_nodes"] > top:
            raise _fail(_join(ppath, "min_nodes"), f"must not exceed max_nodes ({top})", sub["min_nodes"])
        if sub["min_nodes"] + sub["warm_pool"] > top:
            raise _fail(
                _join(ppath, "warm_pool"),
                f"plus min_nodes ({sub['min_nodes']}) must not exceed max_nodes ({top})",
                sub["warm_pool"],
            )
        if prof.membership == "cloud" and sub["min_nodes"]:
            raise _fail(
                _join(ppath, "min_nodes"),
                "must be 0 for a cloud profile (Slurm's power saving decides which names run)",
                sub["min_nodes"],
            )
        out[name] = AutoscaleProfile(name=name, **sub)
    return Autoscale(enabled=fields["enabled"], interval=fields["interval"], job_flag=flag, profiles=FrozenMap(out))


def _partition_list(value, path):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _fail(path, "must be a list of Slurm partition names", value)
    return tuple(_slurm_word(v, f"{path}[{i}]") for i, v in enumerate(value))


def _parse_preemption(data, profiles):
    path = f"{ROOT}:preemption"
    fields = _section(data, path, PREEMPTION_KEYS)
    fields["partitions"] = _partition_list(fields["partitions"], _join(path, "partitions"))
    fields["preemptible"] = _partition_list(fields["preemptible"], _join(path, "preemptible"))
    both = sorted(set(fields["partitions"]) & set(fields["preemptible"]))
    if both:
        raise _fail(_join(path, "preemptible"), "must not list a partition that also preempts", both[0])
    hyps = fields["hypervisors"]
    if not isinstance(hyps, collections.abc.Mapping):
        raise _fail(_join(path, "hypervisors"), "must be a mapping of Slurm node name to provider host name", hyps)
    for node, host in hyps.items():
        _name(node, f"{path}:hypervisors")
        _string(host, f"{path}:hypervisors:{node}")
    fields["hypervisors"] = FrozenMap(hyps)
    if fields["enabled"]:
        if not fields["partitions"]:
            raise PolicyError(f"{path}:partitions must name at least one partition when preemption is enabled, got nothing")
        if not fields["preemptible"]:
            raise PolicyError(f"{path}:preemptible must name at least one partition when preemption is enabled, got nothing")
        known = {p.partition for p in profiles.values() if p.partition}
        for i, part in enumerate(fields["preemptible"]):
            if part not in known:
                raise _fail(
                    f"{path}:preemptible[{i}]",
                    "must be the partition of some profile ({})".format(", ".join(sorted(known)) or "none has one"),
                    part,
                )
    return Preemption(**fields)


def load(data):
    """Validate the ``vcluster:`` pillar and return a :class:`Policy`.

    ``data`` is the value of the ``vcluster`` key; a whole pillar holding a
    ``vcluster`` mapping is accepted too.
    """
    if isinstance(data, collections.abc.Mapping) and isinstance(data.get(ROOT), collections.abc.Mapping):
        data = data[ROOT]
    if not isinstance(data, collections.abc.Mapping) or not data:
        raise _fail(ROOT, "must be a non-empty mapping", data)
    top = _section(data, ROOT, TOP_KEYS)
    pools = _named(top["pools"], f"{ROOT}:pools", _parse_pool)
    owner_addr = _check_pools_disjoint(pools)
    if top["master"] in owner_addr:
        raise _fail(
            f"{ROOT}:master",
            f"must not be an address of {ROOT}:pools:{owner_addr[top['master']]}:addresses",
            top["master"],
        )
    providers = _named(top["providers"], f"{ROOT}:providers", _parse_provider)
    profiles = _named(
        top["profiles"],
        f"{ROOT}:profiles",
        lambda n, d, p: _parse_profile(n, d, p, pools, providers, top["membership"]),
    )
    _check_cloud_pools(profiles)
    limit_fields = _section(top["limits"], f"{ROOT}:limits", LIMITS_KEYS)
    if limit_fields["max_nodes"] is None:
        limit_fields["max_nodes"] = sum(p.size for p in pools.values())
    return Policy(
        cluster=top["cluster"],
        controller=top["controller"],
        master=top["master"],
        registry=top["registry"],
        membership=top["membership"],
        limits=Limits(**limit_fields),
        pools=FrozenMap(pools),
        providers=FrozenMap(providers),
        profiles=FrozenMap(profiles),
        reconcile=Reconcile(**_section(top["reconcile"], f"{ROOT}:reconcile", RECONCILE_KEYS)),
        power_save=_parse_power_save(top["power_save"], profiles),
        autoscale=_parse_autoscale(top["autoscale"], profiles, limit_fields["max_nodes"]),
        faults=Faults(**_section(top["faults"], f"{ROOT}:faults", FAULTS_KEYS)),
        liveness=Liveness(**_section(top["liveness"], f"{ROOT}:liveness", LIVENESS_KEYS)),
        suspend=Suspend(**_section(top["suspend"], f"{ROOT}:suspend", SUSPEND_KEYS)),
        preemption=_parse_preemption(top["preemption"], profiles),
    )


# -- request checks -------------------------------------------------------------


def validate_count(policy, count):
    """``count`` must be a positive int not above ``limits.max_per_request``."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise PolicyError(f"count must be a positive integer, got {_show(count)}")
    if count > policy.limits.max_per_request:
        raise PolicyError(
            f"count {count} exceeds {ROOT}:limits:max_per_request ({policy.limits.max_per_request})"
        )
    return count


def validate_request(policy, profile, count, counts=None):
    """Check an expand request; return the :class:`Profile`.

    ``counts`` maps profile name -> active nodes (``Registry.counts()``);
    every active node counts against ``limits.max_nodes``, the profile's own
    against ``profiles:<name>:max_nodes``.
    """
    prof = policy.profile(profile)
    validate_count(policy, count)
    counts = dict(counts or {})
    total = sum(counts.values())
    if total + count > policy.limits.max_nodes:
        raise PolicyError(
            f"count {count} would bring the cluster to {total + count} virtual nodes, "
            f"over {ROOT}:limits:max_nodes ({policy.limits.max_nodes}) with {total} active"
        )
    mine = counts.get(prof.name, 0)
    if prof.max_nodes is not None and mine + count > prof.max_nodes:
        raise PolicyError(
            f"count {count} would bring profile {prof.name!r} to {mine + count} nodes, "
            f"over {ROOT}:profiles:{prof.name}:max_nodes ({prof.max_nodes}) with {mine} active"
        )
    return prof


def _compress_addresses(addresses):
    """['10.0.0.1', '10.0.0.2', '10.0.0.5'] -> '10.0.0.1-10.0.0.2,10.0.0.5'."""
    numbers = [int(ipaddress.IPv4Address(a)) for a in addresses]
    runs, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            first, last = ipaddress.IPv4Address(start), ipaddress.IPv4Address(n)
            runs.append(str(first) if start == n else f"{first}-{last}")
            start = None
    return ",".join(runs) or None
