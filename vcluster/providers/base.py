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
    #: Modes :meth:`suspend` accepts; ``vcluster.suspend`` refuses any other
    #: before it drains a node or suspends a job (``None``: not declared).
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

    def suspend(self, instance_id, mode="suspend"):
        """Freeze an instance so that it uses no CPU (and no memory where possible)."""
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
