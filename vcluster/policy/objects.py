"""The frozen objects :func:`vcluster.policy.load` returns.

The flat sections' classes are made from their schema sections (one field
per key, the key's default), so a key added to a section is a field here
without a second declaration.
"""

import dataclasses
import ipaddress

import hostlist

from vcluster.errors import PolicyError
from vcluster.policy import sections as s
from vcluster.policy.checks import ROOT, show
from vcluster.policy.maps import FrozenMap, Settings, is_secret


def _autoscale_as_dict(self):
    return {"enabled": self.enabled, "interval": self.interval, "job_flag": self.job_flag,
            "profiles": {n: dataclasses.asdict(p) for n, p in self.profiles.items()}}


def _preemption_as_dict(self):
    data = dataclasses.asdict(self)
    data["partitions"], data["preemptible"] = list(self.partitions), list(self.preemptible)
    data["hypervisors"] = dict(self.hypervisors)
    return data


def _profile_as_dict(self):
    data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    data["features"] = list(self.features)
    data["extra"] = dict(self.extra or {})
    return data


Limits = s.LIMITS.dataclass("Limits", "Cluster-wide limits on virtual nodes.")
Reconcile = s.RECONCILE.dataclass("Reconcile", "How often and how patiently ``vcluster.reconcile`` repairs.")
Faults = s.FAULTS.dataclass("Faults", "Retries of provider calls and the pause of a profile that keeps failing.")
PowerSave = s.POWER_SAVE.dataclass("PowerSave", "Slurm power saving of cloud-membership nodes.")
AutoscaleProfile = s.AUTOSCALE_PROFILE.dataclass("AutoscaleProfile", "Autoscaling bounds of one profile.",
                                                 lead=("name",))
Autoscale = s.AUTOSCALE.dataclass("Autoscale", "The ``vcluster.autoscale`` runner and its periodic run.",
                                  namespace={"as_dict": _autoscale_as_dict})
Liveness = s.LIVENESS.dataclass("Liveness", "How vcluster, not slurmctld, decides that a node is dead.")
Metrics = s.METRICS.dataclass("Metrics", "The Prometheus text file the master's engine keeps fresh.")
Suspend = s.SUSPEND.dataclass("Suspend", "Defaults of ``vcluster.suspend`` / ``vcluster.resume``.")
Preemption = s.PREEMPTION.dataclass("Preemption", "Jobs of some partitions suspend the virtual nodes on "
                                    "their hypervisor host.", namespace={"as_dict": _preemption_as_dict})
#: ``provider`` and ``pool`` hold the resolved names, ``membership`` and
#: ``network`` the inherited values, ``extra`` a :class:`FrozenMap`.
Profile = s.PROFILE.dataclass("Profile", "What one kind of virtual node looks like and where it comes from.",
                              lead=("name",), namespace={"as_dict": _profile_as_dict}, kw_only=True)


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
            "addresses": compress_addresses(self.addresses),
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
    metrics: Metrics = dataclasses.field(default_factory=Metrics)

    def profile(self, name):
        """The profile called ``name``; :class:`PolicyError` when undefined."""
        if not isinstance(name, str) or name not in self.profiles:
            raise PolicyError(
                "profile {} is not defined in {}:profiles (defined: {})".format(
                    show(name), ROOT, ", ".join(sorted(self.profiles)) or "none"
                )
            )
        return self.profiles[name]

    def membership_of(self, profile):
        """The membership mode (dynamic|static|cloud) of a profile (name or object)."""
        prof = profile if isinstance(profile, Profile) else self.profile(profile)
        return prof.membership


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
            "metrics": dataclasses.asdict(self.metrics),
        }


def compress_addresses(addresses):
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
