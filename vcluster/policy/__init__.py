"""Pillar ``vcluster:`` -> typed, validated policy objects.

:func:`load` turns the pillar dictionary into a frozen :class:`Policy`.
Every problem raises :class:`~vcluster.errors.PolicyError` with one sentence
that names the full key path and the offending value, for example
``vcluster:profiles:htc:cpus must be a positive integer, got 'two'``.

Each section accepts exactly the keys of its schema section
(:mod:`vcluster.policy.sections`; each driver's options in its provider's
option module, loaded by :mod:`vcluster.policy.provider_options`): key, checker, default and one line
of meaning. An unknown key is an error, so a typo never passes silently.
Adding a key is one :class:`~vcluster.policy.schema.Key` in its section:
validation, the section's dataclass (flat sections) and the reference in
docs/policy.md (``python -m vcluster.policy --update docs/policy.md``) follow
from it. :func:`validate_request` checks an expand request against the
limits before any side effect.
"""

import collections.abc
import ipaddress

from vcluster.errors import PolicyError
from vcluster.policy import checks as _c
from vcluster.policy import sections as _s
from vcluster.policy.checks import ROOT
from vcluster.policy.maps import SECRET_KEYS, FrozenMap, Settings, is_secret
from vcluster.policy.objects import (
    Autoscale,
    AutoscaleProfile,
    Faults,
    Limits,
    Liveness,
    Metrics,
    Policy,
    Pool,
    PowerSave,
    Preemption,
    Profile,
    ProviderConfig,
    Reconcile,
    Suspend,
)
from vcluster.policy.provider_options import driver_options, extra_keys, provider_keys
from vcluster.policy.schema import REQUIRED, Key, Section, parse, unknown
from vcluster.policy.sections import DEFAULT_REGISTRY, MEMBERSHIPS, SUSPEND_MODES
from vcluster.providers import DRIVERS

__all__ = [
    "DEFAULT_REGISTRY", "DRIVERS", "MEMBERSHIPS", "REQUIRED", "ROOT", "SECRET_KEYS", "SUSPEND_MODES",
    "Autoscale", "AutoscaleProfile", "Faults", "FrozenMap", "Key", "Limits", "Liveness", "Metrics", "Policy",
    "PolicyError", "Pool", "PowerSave", "Preemption", "Profile", "ProviderConfig", "Reconcile", "Section",
    "Settings", "Suspend", "driver_options", "extra_keys", "is_secret", "load", "provider_keys",
    "validate_count", "validate_request",
]

MAX_POOL_ADDRESSES = 65536
_ADDRESS_HINT = "must be an IPv4 range 'a.b.c.d-a.b.c.e' or a CIDR network 'a.b.c.d/n'"
_fail, _join = _c.fail, _c.join


def _named(data, path, parse_item):
    """A non-empty mapping name -> item, each item parsed by ``parse_item(name, item, path)``."""
    if not isinstance(data, collections.abc.Mapping) or not data:
        raise _fail(path, "must be a non-empty mapping of names", data)
    out = {}
    for name, item in data.items():
        if not isinstance(name, str) or not _c.NAME.match(name):
            raise _fail(path, "keys must be names of letters, digits, '.', '-' or '_'", name)
        out[name] = parse_item(name, item, _join(path, name))
    return out


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
        raise _fail(path, _ADDRESS_HINT, spec) from None
    if last < first:
        raise _fail(path, "must be a range whose first address is not above its last", spec)
    return first, last, None


def _parse_addresses(value, path, prefix, gateway):
    """Expand the pool's address specs; returns (addresses, prefix)."""
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, (list, tuple)) or not specs:
        raise _fail(path, _ADDRESS_HINT, value)
    parsed = []
    for spec in specs:
        if not isinstance(spec, str):
            raise _fail(path, _ADDRESS_HINT, spec)
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
    fields = _s.POOL.parse(data, path)
    names = _c.hostnames(fields["names"], _join(path, "names"))
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
    driver = parse({"driver": data.get("driver")}, path, _s.PROVIDER_COMMON)["driver"]
    fields = parse(data, path, dict(_s.PROVIDER_COMMON, **provider_keys(driver)))
    fields.pop("driver")
    options = {k: v for k, v in fields.items() if v is not None}
    return ProviderConfig(name=name, driver=driver, options=Settings(options))


def _pick(value, key, path, defined, kind):
    """Resolve a profile's reference to a pool or provider."""
    if value is None:
        if len(defined) == 1:
            return next(iter(defined))
        raise PolicyError(
            f"{_join(path, key)} is required when more than one {kind} is defined, got nothing"
        )
    if value not in defined:
        raise _fail(
            _join(path, key),
            "must name a {} defined in {}:{}s ({})".format(kind, ROOT, kind, ", ".join(sorted(defined))),
            value,
        )
    return value


def _parse_profile(name, data, path, pools, providers, membership):
    fields = _s.PROFILE.parse(data, path)
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
        if key not in extra_keys(driver):
            raise unknown(_join(path, "extra"), key, extra_keys(driver))
    fields["extra"] = FrozenMap(extra)
    if fields["resume_timeout"] is not None:
        if fields["membership"] != "cloud":
            raise _fail(_join(path, "resume_timeout"), "applies to cloud membership only", fields["resume_timeout"])
        if fields["resume_timeout"] <= fields["join_timeout"]:
            raise _fail(_join(path, "resume_timeout"),
                        f"must exceed the profile's join_timeout ({fields['join_timeout']:g} s)",
                        fields["resume_timeout"])
    table = driver_options()[driver]
    for key in table.profile_requires:
        if fields[key] is None:
            raise PolicyError(
                f"{_join(path, key)} is required for {table.label or driver} provider {fields['provider']!r}, "
                "got nothing"
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


def _parse_power_save(data, profiles):
    path = f"{ROOT}:power_save"
    fields = _s.POWER_SAVE.parse(data, path)
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
    fields = _s.AUTOSCALE.parse(data, path)
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
        sub = _s.AUTOSCALE_PROFILE.parse(item, ppath)
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
    return Autoscale(**dict(fields, profiles=FrozenMap(out)))


def _parse_preemption(data, profiles):
    path = f"{ROOT}:preemption"
    fields = _s.PREEMPTION.parse(data, path)
    both = sorted(set(fields["partitions"]) & set(fields["preemptible"]))
    if both:
        raise _fail(_join(path, "preemptible"), "must not list a partition that also preempts", both[0])
    fields["hypervisors"] = FrozenMap(fields["hypervisors"])
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
    top = _s.TOP.parse(data, ROOT)
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
    limit_fields = _s.LIMITS.parse(top["limits"], f"{ROOT}:limits")
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
        reconcile=Reconcile(**_s.RECONCILE.parse(top["reconcile"], f"{ROOT}:reconcile")),
        power_save=_parse_power_save(top["power_save"], profiles),
        autoscale=_parse_autoscale(top["autoscale"], profiles, limit_fields["max_nodes"]),
        faults=Faults(**_s.FAULTS.parse(top["faults"], f"{ROOT}:faults")),
        liveness=Liveness(**_s.LIVENESS.parse(top["liveness"], f"{ROOT}:liveness")),
        suspend=Suspend(**_s.SUSPEND.parse(top["suspend"], f"{ROOT}:suspend")),
        preemption=_parse_preemption(top["preemption"], profiles),
        metrics=Metrics(**_s.METRICS.parse(top["metrics"], f"{ROOT}:metrics")),
    )


# -- request checks -------------------------------------------------------------


def validate_count(policy, count):
    """``count`` must be a positive int not above ``limits.max_per_request``."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise PolicyError(f"count must be a positive integer, got {_c.show(count)}")
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
