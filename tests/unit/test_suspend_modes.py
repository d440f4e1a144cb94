"""One suspend vocabulary (freeze, pause, save, shelve), the old names, and who does what.

The providers' own ``suspend`` is exercised against real back-ends elsewhere
(LXD and Nova in tests/integration, OpenNebula's simulator here); this module
checks the declarations, the resolution of old names, the policy keys, and
that docs/policy.md's table says what the code does.
"""

import pathlib
import re
import time

import pytest

from tests.unit.opennebula.common import spec
from tests.unit.opennebula.simulator import OneSimulator
from vcluster import policy
from vcluster.errors import PolicyError, ProviderError
from vcluster.providers import base
from vcluster.providers.base import SUSPEND_ALIASES, SUSPEND_MODES, SUSPEND_NAMES, Status, SuspendModes
from vcluster.providers.lxd import LxdProvider
from vcluster.providers.opennebula import OpenNebulaProvider
from vcluster.providers.openstack import OpenStackProvider

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "policy.md"

#: docs/policy.md's columns -> the provider classes this module can check (libvirt's is H4's file).
PROVIDERS = {"LXD": LxdProvider, "OpenStack (Nova)": OpenStackProvider, "OpenNebula": OpenNebulaProvider}

#: What each provider does for each name a request may use (None: refused): the behaviour before
#: the vocabulary for the old names, which must not change.
EXPECTED = {
    LxdProvider: {"freeze": "freeze", "pause": "freeze", "save": None, "shelve": None, "suspend": "freeze"},
    OpenStackProvider: {"freeze": None, "pause": "pause", "save": "save", "shelve": "shelve", "suspend": "save"},
    OpenNebulaProvider: {"freeze": None, "pause": None, "save": "save", "shelve": "shelve", "suspend": "save"},
}


def test_the_vocabulary_and_the_old_names():
    assert tuple(SUSPEND_MODES) == ("freeze", "pause", "save", "shelve")
    assert SUSPEND_NAMES == ("freeze", "pause", "save", "shelve", "suspend")
    for old, modes in SUSPEND_ALIASES.items():
        assert modes and set(modes) <= set(SUSPEND_MODES), old


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.driver)
def test_each_provider_declares_modes_of_the_vocabulary(cls):
    assert isinstance(cls.suspend_modes, SuspendModes)
    assert set(cls.suspend_modes) == {m for m in EXPECTED[cls].values() if m}
    for name, mode in EXPECTED[cls].items():
        assert base.resolve_suspend_mode(name, tuple(cls.suspend_modes)) == mode, name
        # a caller that checks a request with `in` accepts exactly what the provider does
        assert (name in cls.suspend_modes) is (mode is not None), name
    assert "hibernate" not in cls.suspend_modes and None not in cls.suspend_modes
    assert base.resolve_suspend_mode("suspend", cls.suspend_modes) == EXPECTED[cls]["suspend"]


def test_suspend_modes_refuse_names_outside_the_vocabulary():
    with pytest.raises(ValueError, match="not suspend modes of the vocabulary: suspend"):
        SuspendModes(("save", "suspend"))
    assert SuspendModes(("freeze",)).described() == "freeze (old names accepted: suspend, pause)"
    assert SuspendModes(("save", "pause", "shelve")).described() == "save, pause, shelve (old names accepted: suspend)"


def test_lxd_refuses_a_mode_it_cannot_do_before_any_call():
    prov = LxdProvider("lxd", {"network": "vcbr0", "storage_pool": "vcluster", "endpoint": "/nonexistent.socket"})
    with pytest.raises(ProviderError) as err:
        prov.suspend("vn1", mode="save")
    assert str(err.value) == ("LXD can only freeze a container: suspend mode 'save' is not one of freeze "
                              "(old names accepted: suspend, pause)")
    assert not prov.calls  # refused before it connected


def test_openstack_refuses_a_mode_it_cannot_do_before_any_call():
    prov = OpenStackProvider("nova", {"cloud": "none"}, connection=object())
    with pytest.raises(PolicyError) as err:
        prov.suspend("server-id", mode="freeze")
    assert str(err.value) == ("suspend mode must be one of save, pause, shelve (old names accepted: suspend), "
                              "got 'freeze'")
    assert not prov.calls


def test_opennebula_modes_against_the_simulator():
    """save and the old suspend are OpenNebula suspend, shelve is undeploy; its own names still work."""
    sim = OneSimulator(steps_per_query=1)
    prov = OpenNebulaProvider("sim", {"endpoint": "http://sim.invalid:2633/RPC2", "session": "vcluster:vcluster-password"},
                              transport=sim.transport())
    made = prov.create([spec(f"vnode00{n}", f"10.99.0.{20 + n}", template=7) for n in range(1, 5)])
    ids = [i.id for i in made]

    def settle(iid, status):
        return prov.wait([iid], [status], time.monotonic() + 10, interval=0, cluster="demo")[0].status

    assert {settle(i, "running") for i in ids} == {Status.RUNNING}
    for iid, mode, status in zip(ids, ("save", "suspend", "shelve", "stop"),
                                 (Status.SUSPENDED, Status.SUSPENDED, Status.SHELVED, Status.SUSPENDED),
                                 strict=True):
        prov.suspend(iid, mode=mode)
        assert settle(iid, status.value) is status, mode
    assert [sim.vms[int(i)].state for i in ids] == ["SUSPENDED", "SUSPENDED", "UNDEPLOYED", "STOPPED"]
    with pytest.raises(ProviderError, match="suspend mode must be one of save, shelve .*got 'pause'"):
        prov.suspend(ids[0], mode="pause")


@pytest.mark.parametrize("key", ["suspend", "preemption"])
def test_policy_takes_the_job_keeping_modes_and_old_names(key):
    def load(mode):
        data = {
            "cluster": "demo", "controller": "ctl", "master": "10.77.0.1",
            "pools": {"local": {"names": "vnode[001-004]", "addresses": "10.77.0.100-10.77.0.103"}},
            "providers": {"lxd": {"driver": "lxd", "network": "vcbr0", "storage_pool": "vcluster"}},
            "profiles": {"htc": {"image": "vcluster-node", "partition": "htc"}},
            key: {"mode": mode},
        }
        return getattr(policy.load(data), key).mode

    assert load(None) == "suspend"  # the default is unchanged
    for mode in ("freeze", "pause", "save", "suspend"):
        assert load(mode) == mode
    with pytest.raises(PolicyError) as err:
        load("shelve")
    assert str(err.value) == f"vcluster:{key}:mode must be one of freeze | pause | save | suspend, got 'shelve'"


def test_the_docs_table_says_what_the_providers_do():
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Suspend modes", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    header = next(r for r in section.splitlines() if r.startswith("| mode |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    table = {}
    for row in rows[:len(SUSPEND_NAMES)]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        table[re.match(r"`([a-z]+)`", cells[0]).group(1)] = dict(zip(columns, cells, strict=True))
    assert tuple(table) == SUSPEND_NAMES
    for column, cls in PROVIDERS.items():
        for name, cells in table.items():
            refused = cells[column] == "refused"
            assert refused is (EXPECTED[cls][name] is None), f"docs/policy.md: {column}, {name}: {cells[column]}"
