"""libvirt provider, several hypervisors: the `hosts` option, placement and the migration rules that need no hypervisor."""

import re

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")

import libvirt  # noqa: E402

from vcluster.errors import PolicyError, ProviderError  # noqa: E402
from vcluster.policy import provider_options  # noqa: E402, F401 - the tables load
from vcluster.providers import libvirt_migrate as lm  # noqa: E402
from vcluster.providers.base import Host  # noqa: E402
from vcluster.providers.libvirt import LibvirtProvider  # noqa: E402
from vcluster.providers.libvirt_options import OPTIONS, hypervisor_uris  # noqa: E402

PATH = "vcluster:providers:v:hosts"


def test_hosts_take_a_uri_or_a_mapping():
    got = hypervisor_uris({"hv1": "qemu:///system", "hv2": {"uri": "qemu+ssh://root@hv2/system",
                                                            "migration_address": "10.0.0.2"}}, PATH)
    assert got == {"hv1": {"uri": "qemu:///system", "migration_address": None},
                   "hv2": {"uri": "qemu+ssh://root@hv2/system", "migration_address": "10.0.0.2"}}
    assert list(got) == ["hv1", "hv2"]  # the order of the pillar: the first is the default hypervisor


@pytest.mark.parametrize("value, message", [
    ([], "vcluster:providers:v:hosts must map hypervisor names to libvirt URIs"),
    ({}, "vcluster:providers:v:hosts must map hypervisor names to libvirt URIs"),
    ({"hv1": 3}, "vcluster:providers:v:hosts:hv1 must be a libvirt URI or a mapping with `uri`"),
    ({"hv1": {"migration_address": "10.0.0.1"}}, "hosts:hv1 must be a libvirt URI or a mapping with `uri`"),
    ({"hv1": {"uri": "qemu:///system", "port": 1}}, "hosts:hv1 takes only `uri` and `migration_address`, got 'port'"),
    ({"hv1": {"uri": "qemu:///system", "migration_address": "not an address!"}},
     "hosts:hv1:migration_address must be an IPv4 address or a DNS name"),
    ({"hv1": "qemu:///system", "hv2": "qemu:///system"},
     "hosts:hv2 names the same hypervisor as hv1 (one URI, two names), got 'qemu:///system'"),
    ({"bad name": "qemu:///system"}, "vcluster:providers:v:hosts"),
])
def test_hosts_are_refused_in_one_sentence(value, message):
    with pytest.raises(PolicyError, match=re.escape(message)) as err:
        hypervisor_uris(value, PATH)
    assert "\n" not in str(err.value)


def test_hosts_is_in_the_option_table_and_the_provider_refuses_uri_with_it():
    assert {"hosts", "shared_storage", "uri"} <= set(OPTIONS.options)
    assert OPTIONS.options["hosts"].check is hypervisor_uris
    with pytest.raises(PolicyError, match="gives both uri and hosts: name one hypervisor with uri or several"):
        LibvirtProvider("v", {"network": "n", "storage_pool": "p", "uri": "qemu:///system",
                              "hosts": {"hv1": "qemu:///system"}})
    prov = LibvirtProvider("v", {"network": "n", "storage_pool": "p",
                                 "hosts": {"hv1": "qemu+ssh://nobody@192.0.2.1/system", "hv2": "qemu:///x"}})
    assert prov.default_host == "hv1" and prov.uri == "qemu+ssh://nobody@192.0.2.1/system"
    assert prov.host_name == "hv1" and prov.calls["connect"] == 0  # named by the pillar, not asked


def test_one_hypervisor_cannot_migrate_and_says_how_to_name_more():
    prov = LibvirtProvider("v", {"network": "n", "storage_pool": "p", "uri": "qemu+ssh://nobody@192.0.2.254/system"})
    with pytest.raises(ProviderError, match=re.escape("cannot migrate n1: libvirt provider v has one hypervisor "
                                                      "(qemu+ssh://nobody@192.0.2.254/system); name two or more "
                                                      "under its hosts option to migrate")):
        prov.migrate("n1", host="hv2")
    assert prov.calls["connect"] == 0  # refused before any connection


def test_place_fills_the_freest_hypervisor_first():
    assert lm.place([1000, 1000, 1000], {"hv1": 3000, "hv2": 2500}) == ["hv1", "hv2", "hv1"]
    assert lm.place([500, 500], {"hv1": 1000, "hv2": 1000}) == ["hv1", "hv2"]  # ties: the first named
    assert lm.place([4000], {"hv1": 100, "hv2": 200}) == ["hv2"]  # fits nowhere: libvirt will say what is short
    with pytest.raises(ProviderError, match="no hypervisor is up"):
        lm.place([1], {})


def hosts(**free):
    return [Host(name=n, cpus_free=4, memory_free_mb=m if m >= 0 else 0, state="up" if m >= 0 else "down")
            for n, m in free.items()]


def test_choose_target_with_and_without_a_wanted_host():
    assert lm.choose_target("hv1", 600, hosts(hv1=9000, hv2=1000, hv3=2000)) == "hv3"
    assert lm.choose_target("hv1", 600, hosts(hv1=9000, hv2=1000, hv3=2000), wanted="hv2") == "hv2"
    with pytest.raises(ProviderError, match=r"'hv9' is not one of its hypervisors \(hv1, hv2\)"):
        lm.choose_target("hv1", 600, hosts(hv1=1, hv2=1), wanted="hv9")
    with pytest.raises(ProviderError, match="it already runs on hv1"):
        lm.choose_target("hv1", 600, hosts(hv1=1, hv2=1), wanted="hv1")
    with pytest.raises(ProviderError, match="hypervisor hv2 is down"):
        lm.choose_target("hv1", 600, hosts(hv1=1, hv2=-1), wanted="hv2")
    with pytest.raises(ProviderError, match=re.escape("no other hypervisor has 600 MiB free (hv2: 500 MiB)")):
        lm.choose_target("hv1", 600, hosts(hv1=9000, hv2=500, hv3=-1))  # hv3 is down
    with pytest.raises(ProviderError, match=re.escape("no other hypervisor has 600 MiB free (none is up)")):
        lm.choose_target("hv1", 600, hosts(hv1=9000, hv2=-1))


def test_migration_params_and_job_summary():
    assert lm.migration_params(None) == {}
    assert lm.migration_params("127.0.0.1") == {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"}
    got = lm.job_summary({"downtime": 213, "time_elapsed": 2362, "memory_processed": 445845504,
                          "memory_iteration": 3})
    assert got == {"downtime_s": 0.213, "time_s": 2.362, "memory_mib": 425.2, "iterations": 3}
    assert lm.job_summary({}) == {"downtime_s": None, "time_s": None, "memory_mib": None, "iterations": None}
    # the definition moves with the guest, and a failure leaves the guest running on the source
    assert lm.BASE_FLAGS & libvirt.VIR_MIGRATE_PERSIST_DEST and lm.BASE_FLAGS & libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    assert lm.BASE_FLAGS & libvirt.VIR_MIGRATE_ABORT_ON_ERROR and not lm.BASE_FLAGS & libvirt.VIR_MIGRATE_UNSAFE


class SavedDomain:
    """A saved domain as the provider sees it (libvirt itself is what the integration tests use; this is the
    failure path they cannot provoke: the move failing between the restore and the destination's save)."""

    def __init__(self, fail_migrate=False, fail_save=False):
        self.fail_migrate, self.fail_save, self.calls = fail_migrate, fail_save, []

    def info(self):
        return [5, 600 * 1024, 600 * 1024, 1, 0]

    def createWithFlags(self, flags):  # noqa: N802 - libvirt's name
        self.calls.append(("restore", flags))

    def migrate3(self, dconn, params, flags):
        self.calls.append(("migrate", flags))
        if self.fail_migrate:
            raise libvirt.libvirtError("migration failed: destination hung up")
        self.arrived = SavedDomain(fail_save=self.fail_save)
        return self.arrived

    def managedSave(self, flags):  # noqa: N802 - libvirt's name
        self.calls.append(("save", flags))
        if self.fail_save:
            raise libvirt.libvirtError("save failed: disk full")

    def resume(self):
        self.calls.append(("run",))

    def suspend(self):
        self.calls.append(("pause",))

    def isActive(self):  # noqa: N802 - libvirt's name
        return True

    def jobStats(self, flags):  # noqa: N802 - libvirt's name
        return {"time_elapsed": 1500, "downtime": 120}


def saved_pair(monkeypatch, dom):
    prov = LibvirtProvider("v", {"network": "n", "storage_pool": "p", "shared_storage": True,
                                 "hosts": {"hv1": "qemu+ssh://nobody@192.0.2.1/system",
                                           "hv2": "qemu+ssh://nobody@192.0.2.2/system"}})
    monkeypatch.setattr(prov, "_find", lambda iid, what: ("hv1", dom))
    monkeypatch.setattr(prov, "_status", lambda d: lm.Status.SUSPENDED if d is dom else lm.Status.RUNNING)
    monkeypatch.setattr(prov, "hosts", lambda: [Host("hv1", 0, 100), Host("hv2", 2, 4000)])
    monkeypatch.setattr(prov, "conn_to", lambda key: object())
    monkeypatch.setattr(prov, "_pool", lambda key: type("Pool", (), {"refresh": lambda self, flags: 0})())
    monkeypatch.setattr(prov, "_meta", lambda d: {"tags": {}, "address": "10.0.0.5"})
    monkeypatch.setattr(prov, "_to_instance", lambda d, meta, host: (d, host))
    return prov


def test_a_saved_node_moves_saved_and_a_failed_move_leaves_it_saved_on_the_source(monkeypatch):
    save = libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE | libvirt.VIR_DOMAIN_SAVE_RUNNING
    dom = SavedDomain()
    new, host = saved_pair(monkeypatch, dom).migrate("n1", host="hv2")
    assert host == "hv2" and new is dom.arrived
    # restored paused (never run) on the source, moved paused (not live), saved on the destination
    assert dom.calls[0] == ("restore", libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_BYPASS_CACHE)
    assert dom.calls[1][0] == "migrate" and not dom.calls[1][1] & libvirt.VIR_MIGRATE_LIVE
    # run for the instant QEMU needs to take the arrived disks back (it aborts saving inactive ones), then saved
    assert new.calls == [("run",), ("save", save)]

    dom = SavedDomain(fail_migrate=True)
    prov = saved_pair(monkeypatch, dom)
    with pytest.raises(ProviderError, match="^migrate n1: "):  # libvirt's message (None for a bare libvirtError)
        prov.migrate("n1", host="hv2")
    assert [c[0] for c in dom.calls] == ["restore", "migrate", "save"] and dom.calls[2] == ("save", save)

    dom = SavedDomain(fail_save=True)  # moved, but not saved there: left paused on hv2, reported, not raised
    prov = saved_pair(monkeypatch, dom)
    new, host = prov.migrate("n1", host="hv2")
    assert host == "hv2" and prov.last_migration["save_error"].startswith("save n1 on hv2 after the move")
    assert prov.last_migration["saved"] and "save_s" not in prov.last_migration
    assert dom.arrived.calls == [("run",), ("save", save), ("pause",)]  # paused again, not left running
