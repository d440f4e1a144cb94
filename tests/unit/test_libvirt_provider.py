"""libvirt provider: what needs no hypervisor (XML, metadata, input checks)."""

import re
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")

from vcluster.errors import PolicyError, ProviderError  # noqa: E402
from vcluster.providers import libvirt_xml as lx  # noqa: E402
from vcluster.providers.base import BootFile, InstanceSpec  # noqa: E402
from vcluster.providers.libvirt import LibvirtProvider  # noqa: E402


def spec(**kw):
    data = dict(name="vcl-virt-n1", address="10.82.0.5", image="vcluster-node", cpus=2, memory_mb=768,
                boot_files=[BootFile("/etc/salt/minion.d/vcluster.conf", "id: vcl-virt-n1\n")],
                tags={"cluster": "c<&>", "node": "vcl-virt-n1", "profile": "p", "registry_id": "7"})
    data.update(kw)
    return InstanceSpec(**data)


def test_metadata_round_trips_tags_with_markup_characters():
    text = lx.metadata(spec().tags, "52:54:00:aa:bb:cc", "10.82.0.5", "r1")
    assert lx.parse_metadata(text) == {"tags": spec().tags, "mac": "52:54:00:aa:bb:cc",
                                       "address": "10.82.0.5", "request": "r1"}


def test_domain_xml_sizes_disks_and_network():
    xml = lx.domain_xml(spec(), "qemu", "pool", {"kernel": "/k", "initrd": "/i", "disk": "d.qcow2",
                                                 "seed": "s.iso"}, "net", "52:54:00:aa:bb:cc", "r1")
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu" and root.findtext("name") == "vcl-virt-n1"
    assert root.findtext("memory") == "768" and root.findtext("vcpu") == "2"
    assert root.findtext("os/kernel") == "/k" and "root=/dev/vda" in root.findtext("os/cmdline")
    sources = [d.find("source").get("volume") for d in root.findall("devices/disk")]
    assert sources == ["d.qcow2", "s.iso"] and root.find("devices/disk/readonly") is not None
    assert root.find("devices/interface/source").get("network") == "net"


# The <secmodel> part of `virsh capabilities` on Debian 12's libvirt 9.0 (dac and no other driver).
CAPABILITIES = """<capabilities><host><uuid>u</uuid>
<secmodel><model>none</model><doi>0</doi></secmodel>
<secmodel><model>dac</model><doi>0</doi>
<baselabel type='kvm'>+64055:+994</baselabel><baselabel type='qemu'>+64055:+994</baselabel></secmodel>
</host></capabilities>"""


def test_qemu_owner_is_read_from_the_dac_base_label():
    assert lx.qemu_owner(CAPABILITIES, "qemu") == (64055, 994)
    assert lx.qemu_owner(CAPABILITIES, "kvm") == (64055, 994)
    assert lx.qemu_owner("<capabilities><host/></capabilities>", "qemu") is None


def test_shared_storage_volumes_are_qemus_and_not_relabelled():
    disks = {"kernel": "/k", "initrd": "/i", "disk": "d.qcow2", "seed": "s.iso"}
    root = ET.fromstring(lx.domain_xml(spec(), "qemu", "p", disks, "n", "52:54:00:aa:bb:cc", "r", relabel=False))
    labels = [d.find("source/seclabel") for d in root.findall("devices/disk")]
    assert [(x.get("model"), x.get("relabel")) for x in labels] == [("dac", "no"), ("dac", "no")]
    default = ET.fromstring(lx.domain_xml(spec(), "qemu", "p", disks, "n", "52:54:00:aa:bb:cc", "r"))
    assert default.find("devices/disk/source/seclabel") is None
    for vol in (lx.overlay_xml("d.qcow2", "/base.qcow2", (64055, 994)), lx.raw_volume_xml("s.iso", 4096, (64055, 994))):
        perms = ET.fromstring(vol).find("target/permissions")
        assert (perms.findtext("owner"), perms.findtext("group"), perms.findtext("mode")) == ("64055", "994", "0600")
    assert ET.fromstring(lx.overlay_xml("d.qcow2", "/base.qcow2")).find("target/permissions") is None


def test_required_options_and_domain_type_are_checked():
    with pytest.raises(PolicyError, match="storage_pool is required"):
        LibvirtProvider("v", {"network": "n"})
    with pytest.raises(PolicyError, match="domain_type must be one of auto, kvm, qemu, got 'xen'"):
        LibvirtProvider("v", {"network": "n", "storage_pool": "p", "domain_type": "xen"})


def test_unknown_suspend_mode_is_refused_before_connecting():
    prov = LibvirtProvider("v", {"network": "n", "storage_pool": "p", "uri": "qemu+ssh://nobody@192.0.2.254/system"})
    with pytest.raises(ProviderError, match="suspend mode 'shelve' is not one of pause, save, suspend"):
        prov.suspend("vcl-virt-n1", mode="shelve")
    assert prov.calls["connect"] == 0


def test_tcg_cache_only_for_tcg_domains():
    disks = {"kernel": "/k", "initrd": "/i", "disk": "d.qcow2", "seed": "s.iso"}
    tcg = ET.fromstring(lx.domain_xml(spec(), "qemu", "p", disks, "n", "52:54:00:aa:bb:cc", "r", tb_cache_mib=128))
    assert tcg.findtext("features/tcg/tb-cache") == "128"
    kvm = ET.fromstring(lx.domain_xml(spec(), "kvm", "p", disks, "n", "52:54:00:aa:bb:cc", "r", tb_cache_mib=128))
    assert kvm.find("features/tcg") is None


def test_mac_follows_the_address():
    assert lx.mac_for("10.82.0.30") == "52:54:00:52:00:1e" == lx.mac_for("10.82.0.30")
    assert lx.mac_for("10.82.0.31") != lx.mac_for("10.82.0.30")
    assert lx.mac_for(None).startswith("52:54:00:")


def test_an_unreachable_libvirtd_is_tried_again_then_named(monkeypatch, tmp_path):
    """A socket nobody listens on: libvirt's real "Failed to connect socket" (no daemon needed)."""
    import functools

    from vcluster import retry
    from vcluster.providers import libvirt_conn

    waits = []
    monkeypatch.setattr(libvirt_conn.retry, "api_call", functools.partial(retry.api_call, wait=waits.append))
    uri = f"qemu:///system?socket={tmp_path}/libvirt-sock"
    prov = LibvirtProvider("v", {"network": "n", "storage_pool": "p", "uri": uri})
    with pytest.raises(ProviderError, match=re.escape(f"cannot reach libvirt at {uri}: Failed to connect socket")):
        prov.host_name  # noqa: B018 - the property opens the connection
    assert (prov.calls["connect"], prov.calls["retry"]) == (1, retry.API_RETRIES)
    assert waits == [retry.API_RETRY_BACKOFF * 2 ** i for i in range(retry.API_RETRIES)]
