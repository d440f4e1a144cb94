"""Each driver owns its option table; loading the tables loads no cloud SDK."""

import ast
import importlib
import json
import pathlib
import subprocess
import sys

import pytest

from vcluster import policy, providers
from vcluster.policy import sections
from vcluster.policy.provider_options import driver_options
from vcluster.policy.schema import DriverOptions

#: The client libraries of the drivers: validating a pillar must not import any of them.
SDKS = ("openstack", "keystoneauth1", "pyone", "pylxd", "libvirt", "libvirt_qemu")

#: Runs in a fresh interpreter: everything policy does with provider options, then the loaded modules.
_PROBE = r"""
import json, sys
from vcluster import policy
from vcluster.policy import reference
pillar = {
    "cluster": "demo", "controller": "ctl", "master": "10.77.0.1",
    "pools": {"local": {"names": "vnode[001-004]", "addresses": "10.77.0.100-10.77.0.103"}},
    "providers": {
        "lxd": {"driver": "lxd", "network": "vcbr0", "storage_pool": "vcluster"},
        "nova": {"driver": "openstack", "cloud": "c"},
        "one": {"driver": "opennebula", "endpoint": "https://one:2633/RPC2"},
        "virt": {"driver": "libvirt", "network": "n", "storage_pool": "p"},
    },
    "profiles": {
        "a": {"image": "i", "provider": "lxd", "extra": {"config": {}}},
        "b": {"image": "i", "provider": "nova", "flavor": "m1.small", "extra": {"key_name": "k"}},
        "c": {"image": "i", "provider": "one", "extra": {"template": "t"}},
        "d": {"image": "i", "provider": "virt", "extra": {"machine": "pc"}},
    },
}
pol = policy.load(pillar)
assert sorted(pol.providers) == ["lxd", "nova", "one", "virt"]
reference.reference()
for driver in ("lxd", "openstack", "opennebula", "libvirt"):
    __import__("vcluster.providers." + driver + "_options")
before = sorted(sys.modules)
import vcluster.providers.lxd  # the provider itself does load its SDK
print(json.dumps({"before": before, "after": sorted(sys.modules)}))
"""


def test_loading_the_option_tables_imports_no_sdk():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    modules = json.loads(out)
    before = set(modules["before"])
    loaded = sorted(m for m in before if m.split(".")[0] in SDKS)
    assert loaded == [], f"validating a policy imported {loaded}"
    # the option modules and the interface (base: the suspend vocabulary, stdlib only) are all it may load
    providers_loaded = sorted(m for m in before if m.startswith("vcluster.providers.")
                              and not m.endswith("_options") and m != "vcluster.providers.base")
    assert providers_loaded == [], f"validating a policy imported provider modules {providers_loaded}"
    # the probe sees an SDK when one is imported: the LXD provider's pylxd
    assert "pylxd" in set(modules["after"])


def test_drivers_are_defined_once_and_each_owns_its_table():
    tables = driver_options()
    assert list(tables) == list(providers.DRIVERS)
    assert policy.DRIVERS is providers.DRIVERS
    assert sections.PROVIDER_COMMON["driver"].type_text == " \\| ".join(f"`{d}`" for d in providers.DRIVERS)
    for driver, table in tables.items():
        assert isinstance(table, DriverOptions) and table.driver == driver
        module = importlib.import_module(providers.DRIVERS[driver].options)
        assert module.OPTIONS is table
        assert module.__name__ == f"vcluster.providers.{driver}_options"
        assert table.options.path == f"vcluster:providers:<name> (driver: {driver})"
        assert table.extra.path == f"vcluster:profiles:<name>:extra (driver: {driver})"


def test_a_table_filed_under_the_wrong_driver_is_refused(monkeypatch):
    monkeypatch.setitem(providers.DRIVERS, "lxd", providers.Driver(
        providers.DRIVERS["lxd"].provider, providers.DRIVERS["openstack"].options))
    with pytest.raises(ValueError, match="is for driver 'openstack', not 'lxd'"):
        providers.option_table("lxd")


def test_unknown_driver_names_the_drivers():
    with pytest.raises(policy.PolicyError) as err:
        providers.get("p", "vmware", {})
    assert str(err.value) == ("vcluster:providers:p:driver must be one of libvirt, lxd, opennebula, openstack, "
                              "got 'vmware'")


def test_policy_code_has_no_driver_specific_rule():
    """What a driver requires lives in its table (e.g. OpenStack's profile_requires), not in a branch of policy."""
    root = pathlib.Path(policy.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in providers.DRIVERS:
                pytest.fail(f"{path.name}:{node.lineno} names driver {node.value!r}")
    assert driver_options()["openstack"].profile_requires == ("flavor",)
    data = {"cluster": "demo", "controller": "ctl", "master": "10.77.0.1",
            "pools": {"local": {"names": "vnode[001-004]", "addresses": "10.77.0.100-10.77.0.103"}},
            "providers": {"nova": {"driver": "openstack", "cloud": "c"}}, "profiles": {"os": {"image": "i"}}}
    with pytest.raises(policy.PolicyError) as err:
        policy.load(data)
    assert str(err.value) == "vcluster:profiles:os:flavor is required for OpenStack provider 'nova', got nothing"
