"""vcluster.policy: the pillar schema, its defaults and its error messages."""

import copy
import dataclasses
import pathlib
import re

import jinja2
import pytest
import yaml

from vcluster import policy
from vcluster.errors import PolicyError

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "pillar" / "vcluster.sls"


def render_example():
    """Render pillar/vcluster.sls the way Salt does (jinja|yaml) plus the site file."""
    data = yaml.safe_load(jinja2.Template(EXAMPLE.read_text()).render(grains={}, pillar={}, salt={}))
    site = yaml.safe_load("vcluster:\n  controller: ctl\n")  # /etc/vcluster/pillar/site.sls
    data["vcluster"].update(site["vcluster"])
    return data


def base():
    """A small valid policy (the value of ``vcluster:``)."""
    return {
        "cluster": "demo",
        "controller": "ctl",
        "master": "10.77.0.1",
        "pools": {
            "local": {"names": "vnode[001-064]", "addresses": "10.77.0.100-10.77.0.163", "gateway": "10.77.0.1"},
        },
        "providers": {"lxd": {"driver": "lxd", "network": "vcbr0", "storage_pool": "vcluster"}},
        "profiles": {
            "htc": {"provider": "lxd", "pool": "local", "image": "vcluster-node", "features": ["virtual", "htc"]},
        },
    }


def assert_one_sentence(msg):
    assert "\n" not in msg
    assert not re.search(r"[.!?]\s+[A-Z]", msg), msg


# -- the example and defaults ------------------------------------------------


def test_example_pillar_loads():
    pol = policy.load(render_example())
    assert pol.cluster == "demo"
    assert pol.controller == "ctl"
    assert pol.master == "10.77.0.1"
    assert pol.membership == "dynamic"
    assert pol.limits == policy.Limits(max_nodes=64, max_per_request=16)
    pool = pol.pools["local"]
    assert pool.names[0] == "vnode001" and pool.names[-1] == "vnode064" and len(pool.names) == 64
    assert pool.addresses[0] == "10.77.0.100" and pool.addresses[-1] == "10.77.0.163"
    assert pool.prefix == 24 and pool.gateway == "10.77.0.1"
    assert pol.providers["lxd"].driver == "lxd"
    assert dict(pol.providers["lxd"].options) == {"network": "vcbr0", "storage_pool": "vcluster"}
    htc, mem = pol.profiles["htc"], pol.profiles["mem"]
    assert (htc.cpus, htc.memory, htc.features, htc.partition) == (1, 1024, ("virtual", "htc"), "htc")
    assert (mem.cpus, mem.memory) == (2, 2048)
    assert htc.network == "vcbr0"
    assert pol.pools[htc.pool] is pool and pol.providers[htc.provider].name == "lxd"
    assert pol.membership_of("mem") == "dynamic"


def test_example_needs_the_site_controller():
    data = render_example()
    del data["vcluster"]["controller"]
    with pytest.raises(PolicyError, match=r"^vcluster:controller is required"):
        policy.load(data)


def test_defaults():
    data = {
        "cluster": "c1",
        "controller": "ctl.example.org",
        "master": "salt.example.org",
        "pools": {"p": {"names": "n[1-3]"}},
        "providers": {"lxd": {"network": "br0", "storage_pool": "default"}},
        "profiles": {"small": {"image": "img"}},
    }
    pol = policy.load(data)
    assert pol.registry == policy.DEFAULT_REGISTRY
    assert pol.membership == "dynamic"
    assert pol.limits.max_nodes == 3  # every name of every pool
    assert pol.limits.max_per_request == 16
    assert pol.providers["lxd"].driver == "lxd"  # named after its driver
    prof = pol.profiles["small"]
    assert (prof.provider, prof.pool) == ("lxd", "p")  # the only ones
    assert (prof.cpus, prof.memory, prof.features, prof.join_timeout) == (1, 1024, ("virtual",), 300)
    assert prof.sync_modules is False and prof.salt_mine is False
    assert prof.flavor is None and prof.partition is None and prof.max_nodes is None
    assert prof.membership == "dynamic"
    assert pol.pools["p"].addresses == () and pol.pools["p"].size == 3
    assert pol.pools["p"].names == ("n1", "n2", "n3")


def test_whole_pillar_or_section():
    assert policy.load({"vcluster": base(), "slurm": {"x": 1}}) == policy.load(base())


def test_membership_profile_override():
    data = base()
    data["membership"] = "static"
    # a cloud profile owns its pool: slurm.conf declares every name of it
    data["pools"]["burst"] = {"names": "b[1-4]"}
    data["profiles"]["burst"] = {"image": "img", "membership": "cloud", "pool": "burst"}
    pol = policy.load(data)
    assert pol.profiles["htc"].membership == "static"
    assert pol.profiles["burst"].membership == "cloud"


def test_cidr_excludes_network_broadcast_gateway():
    data = base()
    data["pools"]["local"] = {"names": "v[01-13]", "addresses": "10.9.0.0/28", "gateway": "10.9.0.1"}
    pool = policy.load(data).pools["local"]
    assert pool.prefix == 28
    assert pool.addresses == tuple(f"10.9.0.{i}" for i in range(2, 15))


def test_range_excludes_gateway_and_network_addresses():
    data = base()
    data["pools"]["local"] = {"names": "v[001-253]", "addresses": "10.9.0.0-10.9.0.255", "gateway": "10.9.0.1"}
    pool = policy.load(data).pools["local"]
    assert len(pool.addresses) == 253
    assert {"10.9.0.0", "10.9.0.1", "10.9.0.255"}.isdisjoint(pool.addresses)
    assert pool.addresses[0] == "10.9.0.2"


def test_lists_of_hostlists_and_ranges():
    data = base()
    data["pools"]["local"] = {"names": ["a[1-2]", "b1"], "addresses": ["10.9.0.20-10.9.0.21", "10.9.0.10"]}
    pool = policy.load(data).pools["local"]
    assert pool.names == ("a1", "a2", "b1")
    assert pool.addresses == ("10.9.0.10", "10.9.0.20", "10.9.0.21")
    assert pool.as_dict()["addresses"] == "10.9.0.10,10.9.0.20-10.9.0.21"
    assert pool.as_dict()["names"] == "a[1-2],b1"


def test_objects_are_frozen():
    pol = policy.load(base())
    with pytest.raises(dataclasses.FrozenInstanceError):
        pol.profiles["htc"].cpus = 4
    with pytest.raises(TypeError):
        pol.profiles["x"] = None


def test_secrets_never_in_repr_str_or_as_dict():
    data = base()
    data["providers"]["one"] = {
        "driver": "opennebula",
        "endpoint": "https://one.example.org:2633/RPC2",
        "session": "oneadmin:S3CRET-session",
    }
    data["providers"]["nova"] = {"driver": "openstack", "cloud": "hpc", "auth": {"password": "S3CRET-pw"}}
    data["providers"]["lxd"].update(key="S3CRET-key", cert="/etc/vcluster/lxd.crt")
    data["profiles"]["os"] = {"provider": "nova", "pool": "local", "image": "img", "flavor": "m1.small"}
    pol = policy.load(data)
    for text in (repr(pol), str(pol), repr(pol.providers), str(pol.providers["one"]),
                 repr(pol.providers["one"].options), str(pol.as_dict()), str(pol.providers["nova"].as_dict())):
        assert "S3CRET" not in text
    assert "<hidden>" in repr(pol.providers["one"])
    assert pol.providers["one"].options["session"] == "oneadmin:S3CRET-session"
    assert dict(pol.providers["nova"].options)["auth"] == {"password": "S3CRET-pw"}
    assert pol.providers["lxd"].secret_keys == ("key",)
    assert policy.is_secret("api_token") and policy.is_secret("password") and not policy.is_secret("key_name")


def test_profile_extra_passes_through():
    data = base()
    data["profiles"]["htc"]["extra"] = {"devices": {"scratch": {"type": "disk"}}}
    assert policy.load(data).profiles["htc"].extra["devices"] == {"scratch": {"type": "disk"}}


# -- invalid input: one sentence naming the key path and the value ----------------


def _set(path, value):
    def mutate(data):
        *parents, last = path.split(":")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _del(path):
    def mutate(data):
        *parents, last = path.split(":")
        node = data
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _add_pool(name, names, addresses):
    return _set(f"pools:{name}", {"names": names, "addresses": addresses})


INVALID = [
    # (id, mutation, key path in the message, value shown in the message)
    ("cpus-word", _set("profiles:htc:cpus", "two"), "vcluster:profiles:htc:cpus", "'two'"),
    ("cpus-zero", _set("profiles:htc:cpus", 0), "vcluster:profiles:htc:cpus", "0"),
    ("cpus-bool", _set("profiles:htc:cpus", True), "vcluster:profiles:htc:cpus", "True"),
    ("cpus-float", _set("profiles:htc:cpus", 1.5), "vcluster:profiles:htc:cpus", "1.5"),
    ("memory-negative", _set("profiles:htc:memory", -5), "vcluster:profiles:htc:memory", "-5"),
    ("join-timeout-zero", _set("profiles:htc:join_timeout", 0), "vcluster:profiles:htc:join_timeout", "0"),
    ("join-timeout-text", _set("profiles:htc:join_timeout", "5m"), "vcluster:profiles:htc:join_timeout", "'5m'"),
    ("sync-modules-text", _set("profiles:htc:sync_modules", "yes"), "vcluster:profiles:htc:sync_modules", "'yes'"),
    ("salt-mine-number", _set("profiles:htc:salt_mine", 1), "vcluster:profiles:htc:salt_mine", "1"),
    ("profile-max-nodes", _set("profiles:htc:max_nodes", -1), "vcluster:profiles:htc:max_nodes", "-1"),
    ("membership", _set("membership", "elastic"), "vcluster:membership", "'elastic'"),
    ("profile-membership", _set("profiles:htc:membership", "dyn"), "vcluster:profiles:htc:membership", "'dyn'"),
    ("hostlist-syntax", _set("pools:local:names", "vnode[001-0x]"), "vcluster:pools:local:names", "'vnode[001-0x]'"),
    ("hostlist-unclosed", _set("pools:local:names", "vnode[1-4"), "vcluster:pools:local:names", "'vnode[1-4'"),
    ("hostname-upper", _set("pools:local:names", "Vnode[1-3]"), "vcluster:pools:local:names", "'Vnode1'"),
    ("hostname-underscore", _set("pools:local:names", "v_n[1-2]"), "vcluster:pools:local:names", "'v_n1'"),
    ("hostname-long", _set("pools:local:names", "a" * 64), "vcluster:pools:local:names", "'aaaa"),
    ("names-duplicate", _set("pools:local:names", "a[1-3],a2"), "vcluster:pools:local:names", "'a2'"),
    ("names-across-pools", _add_pool("more", "vnode[060-070]", "10.77.0.200-10.77.0.210"),
     "vcluster:pools:more:names", "'vnode060'"),
    ("addresses-overlap", _add_pool("more", "m[1-5]", "10.77.0.160-10.77.0.164"),
     "vcluster:pools:more:addresses", "'10.77.0.160'"),
    ("address-bad", _set("pools:local:addresses", "10.77.0.300-10.77.0.310"),
     "vcluster:pools:local:addresses", "'10.77.0.300-10.77.0.310'"),
    ("address-reversed", _set("pools:local:addresses", "10.77.0.163-10.77.0.100"),
     "vcluster:pools:local:addresses", "'10.77.0.163-10.77.0.100'"),
    ("address-cidr-host-bits", _set("pools:local:addresses", "10.77.0.5/24"),
     "vcluster:pools:local:addresses", "'10.77.0.5/24'"),
    ("address-ipv6", _set("pools:local:addresses", "fd00::/120"), "vcluster:pools:local:addresses", "'fd00::/120'"),
    ("addresses-too-few", _set("pools:local:addresses", "10.77.0.100-10.77.0.110"),
     "vcluster:pools:local:addresses", "(11) as names (64), got '10.77.0.100-10.77.0.110'"),
    ("addresses-cross-network", _set("pools:local:addresses", "10.77.0.250-10.77.1.60"),
     "vcluster:pools:local:addresses", "'10.77.0.250-10.77.1.60'"),
    ("gateway-outside", _set("pools:local:gateway", "10.78.0.1"), "vcluster:pools:local:gateway", "'10.78.0.1'"),
    ("gateway-not-ip", _set("pools:local:gateway", "router"), "vcluster:pools:local:gateway", "'router'"),
    ("prefix", _set("pools:local:prefix", 33), "vcluster:pools:local:prefix", "33"),
    ("pool-names-missing", _del("pools:local:names"), "vcluster:pools:local:names", "nothing"),
    ("unknown-provider", _set("profiles:htc:provider", "nova"), "vcluster:profiles:htc:provider", "'nova'"),
    ("unknown-pool", _set("profiles:htc:pool", "remote"), "vcluster:profiles:htc:pool", "'remote'"),
    ("features-string", _set("profiles:htc:features", "virtual,htc"), "vcluster:profiles:htc:features",
     "'virtual,htc'"),
    ("feature-word", _set("profiles:htc:features", ["virtual", "big mem"]), "vcluster:profiles:htc:features[1]",
     "'big mem'"),
    ("feature-operator", _set("profiles:htc:features", ["a&b"]), "vcluster:profiles:htc:features[0]", "'a&b'"),
    ("feature-duplicate", _set("profiles:htc:features", ["htc", "htc"]), "vcluster:profiles:htc:features[1]",
     "'htc'"),
    ("partition", _set("profiles:htc:partition", "htc long"), "vcluster:profiles:htc:partition", "'htc long'"),
    ("image-missing", _del("profiles:htc:image"), "vcluster:profiles:htc:image", "nothing"),
    ("image-empty", _set("profiles:htc:image", " "), "vcluster:profiles:htc:image", "' '"),
    ("typo-top", _set("membrship", "static"), "vcluster:membrship", "'membership'"),
    ("typo-profile", _set("profiles:htc:cpu", 2), "vcluster:profiles:htc:cpu", "'cpus'"),
    ("typo-pool", _set("pools:local:adresses", "10.0.0.1"), "vcluster:pools:local:adresses", "'addresses'"),
    ("typo-provider", _set("providers:lxd:netwrok", "br0"), "vcluster:providers:lxd:netwrok", "'network'"),
    ("typo-limits", _set("limits:max_node", 3), "vcluster:limits:max_node", "'max_nodes'"),
    ("future-key", _set("preempt", {"enabled": True}), "vcluster:preempt", "accepted keys are"),
    ("extra-key", _set("profiles:htc:extra", {"templates": "x"}), "vcluster:profiles:htc:extra:templates",
     "accepted keys are config, devices"),
    ("driver", _set("providers:lxd:driver", "vmware"), "vcluster:providers:lxd:driver", "'vmware'"),
    ("driver-missing", _set("providers:cloud", {"network": "x"}), "vcluster:providers:cloud:driver", "nothing"),
    ("lxd-network-missing", _del("providers:lxd:network"), "vcluster:providers:lxd:network", "nothing"),
    ("lxd-profiles-string", _set("providers:lxd:profiles", "default"), "vcluster:providers:lxd:profiles",
     "'default'"),
    ("controller-missing", _del("controller"), "vcluster:controller", "nothing"),
    ("controller-space", _set("controller", "ctl 1"), "vcluster:controller", "'ctl 1'"),
    ("master-bad", _set("master", "salt master!"), "vcluster:master", "'salt master!'"),
    ("master-in-pool", _set("master", "10.77.0.120"), "vcluster:master", "'10.77.0.120'"),
    ("cluster-name", _set("cluster", "my cluster"), "vcluster:cluster", "'my cluster'"),
    ("registry-relative", _set("registry", "registry.sqlite"), "vcluster:registry", "'registry.sqlite'"),
    ("max-nodes-zero", _set("limits:max_nodes", 0), "vcluster:limits:max_nodes", "0"),
    ("max-per-request-word", _set("limits:max_per_request", "ten"), "vcluster:limits:max_per_request", "'ten'"),
    ("limits-list", _set("limits", [16]), "vcluster:limits", "[16]"),
    ("pools-empty", _set("pools", {}), "vcluster:pools", "{}"),
    ("profiles-list", _set("profiles", ["htc"]), "vcluster:profiles", "['htc']"),
    ("profile-not-mapping", _set("profiles:htc", "big"), "vcluster:profiles:htc", "'big'"),
    ("profile-name", _set("profiles:big nodes", {"image": "x"}), "vcluster:profiles", "'big nodes'"),
    ("openstack-flavor", lambda d: (d["providers"].update(nova={"driver": "openstack", "cloud": "c"}),
                                    d["profiles"].update(os={"provider": "nova", "pool": "local", "image": "i"})),
     "vcluster:profiles:os:flavor", "nothing"),
    ("pool-required-when-several", lambda d: (d["pools"].update(b={"names": "b1"}), d["profiles"]["htc"].pop("pool")),
     "vcluster:profiles:htc:pool", "nothing"),
]


@pytest.mark.parametrize(("mutate", "path", "shown"), [p[1:] for p in INVALID], ids=[p[0] for p in INVALID])
def test_invalid(mutate, path, shown):
    data = copy.deepcopy(base())
    mutate(data)
    with pytest.raises(PolicyError) as err:
        policy.load(data)
    msg = str(err.value)
    assert msg.startswith(path + " ") or f"{path} " in msg, msg
    assert shown in msg, msg
    assert_one_sentence(msg)


def test_the_documented_message():
    data = base()
    data["profiles"]["htc"]["cpus"] = "two"
    with pytest.raises(PolicyError) as err:
        policy.load(data)
    assert str(err.value) == "vcluster:profiles:htc:cpus must be a positive integer, got 'two'"


def test_enough_invalid_cases():
    assert len(INVALID) >= 25


@pytest.mark.parametrize("data", [None, [], "vcluster", {}])
def test_not_a_policy(data):
    with pytest.raises(PolicyError, match=r"^vcluster must be a non-empty mapping"):
        policy.load(data)


# -- requests -------------------------------------------------------------------


@pytest.fixture
def pol():
    data = base()
    data["limits"] = {"max_nodes": 10, "max_per_request": 4}
    data["profiles"]["htc"]["max_nodes"] = 6
    data["profiles"]["mem"] = {"image": "img"}
    return policy.load(data)


def test_request_ok(pol):
    assert policy.validate_request(pol, "htc", 4, {"htc": 2, "mem": 3}).name == "htc"
    assert policy.validate_request(pol, "mem", 1).name == "mem"


@pytest.mark.parametrize(
    ("profile", "count", "counts", "pattern"),
    [
        ("gpu", 1, {}, r"^profile 'gpu' is not defined in vcluster:profiles \(defined: htc, mem\)$"),
        (None, 1, {}, r"^profile None is not defined"),
        ("htc", 0, {}, r"^count must be a positive integer, got 0$"),
        ("htc", "8", {}, r"^count must be a positive integer, got '8'$"),
        ("htc", True, {}, r"^count must be a positive integer, got True$"),
        ("htc", 5, {}, r"^count 5 exceeds vcluster:limits:max_per_request \(4\)$"),
        ("mem", 3, {"htc": 5, "mem": 3}, r"^count 3 would bring the cluster to 11 .*max_nodes \(10\) with 8 active$"),
        ("htc", 2, {"htc": 5},
         r"^count 2 would bring profile 'htc' to 7 .*profiles:htc:max_nodes \(6\) with 5 active$"),
        ("htc", 1, {"gone": 10}, r"cluster to 11 virtual nodes"),  # nodes of a removed profile still count
    ],
)
def test_request_refused(pol, profile, count, counts, pattern):
    with pytest.raises(PolicyError, match=pattern):
        policy.validate_request(pol, profile, count, counts)


def test_openstack_provider_keys_the_driver_reads_are_accepted():
    """Every setting vcluster/providers/openstack.py reads passes policy and reaches the provider."""
    from vcluster.providers.openstack import OpenStackProvider

    data = base()
    data["providers"]["nova"] = {
        "driver": "openstack", "cloud": "vcluster-testbed", "clouds_yaml": "/var/lib/t/clouds.yaml",
        "region_name": "RegionOne", "interface": "public", "cacert": "/etc/ssl/ca.pem", "auth_type": "password",
        "networks": "none", "boot_timeout": 120, "action_timeout": 90, "poll_interval": 0.5,
        "multi_create": False, "max_batch": 10, "api_retries": 2, "api_retry_deadline": 30,
        "api_retry_backoff": 0.2, "api_concurrency": 4, "minion_start": "systemctl start salt-minion",
    }
    data["profiles"]["os-htc"] = {
        "provider": "nova", "pool": "local", "image": "vcluster-node", "flavor": "m1.tiny",
        "extra": {"server_group_policy": "anti-affinity", "server_group": "g", "config_drive": True,
                  "networks": "none", "boot_timeout": 60, "runcmd": [["true"]]},
    }
    pol = policy.load(data)
    options = pol.providers["nova"].options
    assert options["networks"] == "none" and options["clouds_yaml"] == "/var/lib/t/clouds.yaml"
    prov = OpenStackProvider("nova", options)
    assert (prov.poll_interval, prov.boot_timeout, prov.multi_create, prov.max_batch) == (0.5, 120, False, 10)
    assert prov.default_networks == "none" and prov.concurrency == 4
    assert pol.profiles["os-htc"].extra["server_group_policy"] == "anti-affinity"
    data["providers"]["nova"]["networks"] = "some-net"
    with pytest.raises(PolicyError, match=r"vcluster:providers:nova:networks must be one of auto \| none"):
        policy.load(data)
