"""The provider interface every backend (LXD, OpenStack, OpenNebula) implements.

A provider knows nothing of Slurm, Salt or the registry. It creates instances
from :class:`InstanceSpec` in as few API calls as its API allows, reports
them as :class:`Instance` with a normalised :class:`Status`, and offers the
primitives the engine needs (delete, list by cluster tag, suspend, resume,
migrate, host capacity). Every instance it creates carries the tags of its
spec so that ``list(cluster)`` finds the cluster's own instances and only
those.

Errors are raised as :mod:`vcluster.errors` exceptions with a message that
is safe to show (never a credential).
"""

import abc
import collections
import dataclasses
import enum
import time

from vcluster.errors import ProviderError, ProviderTimeout

#: Tag keys every instance carries (LXD: ``user.vcluster.<key>`` config,
#: OpenStack: server metadata ``vcluster_<key>``, OpenNebula: USER_TEMPLATE).
TAG_KEYS = ("cluster", "node", "profile", "registry_id")

#: The suspend modes, one vocabulary for the engine and every provider
#: (issue 15): name -> what happens to the instance. A provider declares the
#: ones it does in :attr:`Provider.suspend_modes`; docs/policy.md has the
#: table of which provider does which.
SUSPEND_MODES = {
    "freeze": "containers: the cgroup freezer stops every process; CPU freed, RAM kept",
    "pause": "virtual machines: the vCPUs are stopped; CPU freed, RAM kept",
    "save": "the state is written to disk and the hypervisor process ends: host RAM freed "
            "(libvirt managed save, Nova suspend, OpenNebula suspend)",
    "shelve": "idle nodes only: the instance leaves its host, its disks are kept "
              "(Nova shelve, OpenNebula undeploy)",
}
#: The names used before that vocabulary, still accepted (in pillar, on the
#: command line, by every provider's ``suspend``): old name -> the modes it
#: stands for, in order; a provider does the first one it has. ``suspend``
#: was the default: ``save`` on VMs, ``freeze`` on containers; ``pause`` on
#: a container provider was a freeze.
SUSPEND_ALIASES = {
    "suspend": ("save", "freeze"),
    "pause": ("pause", "freeze"),
}
#: Every name a suspend request may use: the vocabulary, then the old names it lacks.
SUSPEND_NAMES = tuple(SUSPEND_MODES) + tuple(n for n in SUSPEND_ALIASES if n not in SUSPEND_MODES)


def resolve_suspend_mode(mode, modes):
    """The mode of ``modes`` (names of :data:`SUSPEND_MODES`) that a request for ``mode`` means, or ``None``.

    A name of the vocabulary means itself; an old name
    (:data:`SUSPEND_ALIASES`) means the first of its modes found in ``modes``.
    """
    modes = tuple(modes)  # a SuspendModes' own `in` would accept the old names
    if not isinstance(mode, str):
        return None
    if mode in modes:
        return mode
    return next((m for m in SUSPEND_ALIASES.get(mode, ()) if m in modes), None)


class SuspendModes(tuple):
    """The suspend modes a provider does, in the vocabulary of :data:`SUSPEND_MODES`.

    Iterating, ``len`` and ``repr`` give only those names. ``in`` answers
    whether a *request* is accepted, old names included: ``"suspend" in
    SuspendModes(("freeze",))`` is true because the provider freezes when
    asked to suspend, so a caller that checks a requested name with ``in``
    accepts exactly what :meth:`Provider.suspend` accepts.
    """

    def __new__(cls, modes):
        modes = tuple(modes)
        unknown = [m for m in modes if m not in SUSPEND_MODES]
        if unknown:
            raise ValueError(f"not suspend modes of the vocabulary: {', '.join(unknown)}")
        return super().__new__(cls, modes)

    def __contains__(self, mode):
        return resolve_suspend_mode(mode, tuple(self)) is not None

    def described(self):
        """The modes for an error message, e.g. ``'freeze (old names accepted: suspend, pause)'``."""
        modes = tuple(self)
        old = [n for n in SUSPEND_ALIASES if n not in modes and resolve_suspend_mode(n, modes)]
        return ", ".join(modes) + (f" (old names accepted: {', '.join(old)})" if old else "")


class Status(str, enum.Enum):
    """Instance status, the same words for every provider."""

    BUILDING = "building"
    RUNNING = "running"
    SUSPENDED = "suspended"  # memory saved or frozen: LXD FROZEN, Nova SUSPENDED
    PAUSED = "paused"  # Nova PAUSED
    SHELVED = "shelved"  # Nova SHELVED(_OFFLOADED)
    STOPPED = "stopped"
    MIGRATING = "migrating"
    ERROR = "error"
    DELETED = "deleted"
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class BootFile:
    """A file the instance must hold before its first boot (minion config, key)."""

    path: str
    content: str = dataclasses.field(repr=False)  # may hold a private key
    mode: int = 0o644


@dataclasses.dataclass
class InstanceSpec:
    """What to create: one virtual node.

    ``name`` is the node name, hostname and Salt minion id at once.
    ``address`` is the IPv4 address allocated from the pool (``None`` lets the
    provider choose, for clouds without a fixed-address network).
    ``size`` holds provider specific sizing (``flavor`` for OpenStack,
    ``cpus``/``memory_mb`` for LXD and OpenNebula); providers read what they
    understand.
    """

    name: str
    address: str | None
    image: str
    cpus: int
    memory_mb: int
    boot_files: list[BootFile]
    tags: dict[str, str]
    flavor: str | None = None
    network: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Instance:
    """What exists at the provider."""

    id: str
    name: str
    status: Status
    address: str | None = None
    host: str | None = None  # hypervisor / compute host / cluster member
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    fault: str | None = None  # provider's reason for ERROR

    def as_dict(self):
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data


@dataclasses.dataclass
class Host:
    """A hypervisor and its free capacity."""

    name: str
    cpus_free: int
    memory_free_mb: int
    instances: int = 0
    state: str = "up"


class Provider(abc.ABC):
    """Base of every backend.

    Subclasses set ``driver`` and implement the abstract methods. ``calls``
    counts API calls by kind (``create``, ``list``, ``get``, ``delete``...)
    so benchmarks and tests can check batching.
    """

    driver = "base"
    #: The suspend modes :meth:`suspend` does, a :class:`SuspendModes` of
    #: names of :data:`SUSPEND_MODES` (``None``: not declared). ``mode in
    #: suspend_modes`` also accepts the old names that resolve to one of them;
    #: ``vcluster.suspend`` refuses any other before it drains a node or
    #: suspends a job.
    suspend_modes = None

    def __init__(self, name, config):
        self.name = name
        self.config = dict(config)
        self.calls = collections.Counter()

    # -- lifecycle --------------------------------------------------------

    @abc.abstractmethod
    def create(self, specs):
        """Create instances for ``specs`` and start them.

        Returns one :class:`Instance` per spec, in the same order. Either all
        are created or none: on error the provider deletes what it created in
        this call before raising.
        """

    @abc.abstractmethod
    def delete(self, instance_ids):
        """Delete instances; ids that do not exist any more are ignored."""

    @abc.abstractmethod
    def list(self, cluster):
        """Every instance tagged with ``cluster``, in one call if possible."""

    def get(self, instance_id):
        """One instance, or ``None`` when it does not exist."""
        for inst in self.list_all():
            if inst.id == instance_id:
                return inst
        return None

    def list_all(self):
        """Every instance this provider can see that carries vcluster tags."""
        raise NotImplementedError

    def wait(self, instance_ids, statuses, deadline, interval=0.5, cluster=None):
        """Poll until every instance is in one of ``statuses``.

        One ``list`` call per round (not one GET per instance). Raises
        :class:`ProviderTimeout` naming the laggards when ``deadline`` (a
        ``time.monotonic()`` value) passes, and returns the instances
        otherwise. An instance in ERROR ends the wait early with its fault.
        """
        wanted = {Status(s) for s in statuses}
        pending = set(instance_ids)
        seen = {}
        while True:
            found = {i.id: i for i in (self.list(cluster) if cluster else self.list_all())}
            for iid in list(pending):
                inst = found.get(iid)
                if inst is None:
                    continue
                seen[iid] = inst
                if inst.status in wanted:
                    pending.discard(iid)
                elif inst.status is Status.ERROR:
                    pending.discard(iid)
            if not pending:
                return [seen[i] for i in instance_ids if i in seen]
            if time.monotonic() >= deadline:
                raise ProviderTimeout(
                    "instances {} did not reach {} before the deadline".format(
                        ", ".join(sorted(pending)), "/".join(sorted(s.value for s in wanted))
                    )
                )
            time.sleep(interval)

    # -- primitives used by suspend / resume / migrate --------------------

    def suspend_mode(self, mode):
        """The mode of :attr:`suspend_modes` that a request for ``mode`` means (an old name resolved), or ``None``."""
        return resolve_suspend_mode(mode, tuple(self.suspend_modes or ()))

    def suspend(self, instance_id, mode="suspend"):
        """Stop an instance using CPU (and memory, or its host, where the mode does): see :data:`SUSPEND_MODES`.

        ``mode`` is a name of :data:`SUSPEND_MODES` or an old name of
        :data:`SUSPEND_ALIASES`; :meth:`suspend_mode` says which mode it means.
        """
        raise NotImplementedError(f"{self.driver} provider cannot suspend")

    def resume(self, instance_id):
        """Undo :meth:`suspend`."""
        raise NotImplementedError(f"{self.driver} provider cannot resume")

    def migrate(self, instance_id, host=None, live=True):
        """Move an instance to ``host`` (or the scheduler's choice)."""
        raise NotImplementedError(f"{self.driver} provider cannot migrate")

    def hosts(self):
        """Hypervisors with their free capacity, as :class:`Host`."""
        raise NotImplementedError(f"{self.driver} provider cannot list hosts")

    def close(self):  # noqa: B027 - not abstract: a provider without connections has nothing to close
        """Release connections."""


def spec_names(specs):
    """The names of a create request, in order; a name given twice is refused."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ProviderError(f"duplicate instance names in one create request: {', '.join(names)}")
    return names
