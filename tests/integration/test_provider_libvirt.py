"""libvirt provider: the provider contract on real QEMU domains, then one node's boot, save and pause.

Real libvirtd and QEMU (TCG here: KVM guests hang on this machine, see
docs/libvirt.md); nothing of libvirt is mocked. The module starts libvirtd
if needed (scripts/libvirt-up.sh), builds or reuses the VM image
(image-vm/build.sh), and runs its domains on a libvirt network of its own
(``vcl-virt-test``, 10.82.0.1/24), removed at the end. At most two guests
run at once (the contract's pair, then one node).
"""

import ipaddress
import os
import subprocess
import time

import pytest

from tests.integration.lxd_fixtures import REPO, run_script
from tests.provider_contract import ProviderContract, SpecFactory, eventually
from vcluster.errors import ProviderError, ProviderStateError
from vcluster.providers.base import BootFile, Status

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")
from vcluster.providers import libvirt_xml  # noqa: E402 - after the importorskip
from vcluster.providers.libvirt import LibvirtProvider  # noqa: E402

pytestmark = pytest.mark.integration

URI = "qemu:///system"
POOL = os.environ.get("VCLUSTER_VIRT_POOL", "vcl-virt")
IMAGE = "vcluster-node"
NETWORK = "vcl-virt-test"
CIDR = os.environ.get("VCLUSTER_TEST_VIRT_CIDR", "10.82.0.1/24")
BOOT_TIMEOUT = 300  # TCG: a guest boots to its minion in about 40 s when the host is idle
MEMORY_MB = 512
SAVED_FOR = 10  # seconds a node stays saved in the save test


@pytest.fixture(scope="module")
def virt_daemon(lxd_root):
    """libvirtd running with the image pool; the VM image built (or cached) and uploaded."""
    run_script(REPO / "scripts" / "libvirt-up.sh", "--no-network", "--pool", POOL)
    start = time.monotonic()
    run_script(REPO / "image-vm" / "build.sh", "--name", IMAGE, "--pool", POOL, timeout=1800)
    print(f"\nimage-vm/build.sh: {time.monotonic() - start:.1f} s")
    return POOL


@pytest.fixture(scope="module")
def virt_network(virt_daemon):
    """An isolated libvirt network of the module's own: ``{"name", "gateway", "cidr"}``."""
    iface = ipaddress.ip_interface(CIDR)
    conn = libvirt.open(URI)
    try:
        old = conn.networkLookupByName(NETWORK)
        if old.isActive():
            old.destroy()
        old.undefine()
    except libvirt.libvirtError:
        pass
    hosts = list(iface.network.hosts())
    net = conn.networkDefineXML(f"""<network><name>{NETWORK}</name>
      <bridge name='vclvtest0' stp='off'/>
      <ip address='{iface.ip}' prefix='{iface.network.prefixlen}'>
        <dhcp><range start='{hosts[1]}' end='{hosts[98]}'/></dhcp></ip></network>""")
    net.create()
    yield {"name": NETWORK, "gateway": str(iface.ip), "cidr": str(iface.network), "net": net}
    net.destroy()
    net.undefine()
    conn.close()


@pytest.fixture(scope="module")
def provider(virt_daemon, virt_network):
    prov = LibvirtProvider("virt-test", {"uri": URI, "network": virt_network["name"], "storage_pool": virt_daemon})
    yield prov
    leftovers = [i.id for i in prov.list_all() if i.id.startswith("vcl-virt-")]
    if leftovers:
        prov.delete(leftovers)
    prov.close()


@pytest.fixture(scope="module")
def make_specs(virt_network):
    network = ipaddress.ip_network(virt_network["cidr"])
    addresses = (str(a) for i, a in enumerate(network.hosts()) if i >= 199)
    return SpecFactory(IMAGE, addresses, prefix="vcl-virt-", memory_mb=MEMORY_MB)


def seed_user_data(provider, name):
    """The user-data of a node's seed volume, downloaded through libvirt."""
    vol = provider.conn.storagePoolLookupByName(POOL).storageVolLookupByName(f"{name}-seed.iso")
    chunks = []
    stream = provider.conn.newStream(0)
    vol.download(stream, 0, 0, 0)
    stream.recvAll(lambda _st, data, acc: acc.append(data), chunks)
    stream.finish()
    return libvirt_xml.read_seed_user_data(b"".join(chunks))


class TestLibvirtProviderContract(ProviderContract):
    """The shared contract, against real libvirt domains."""

    @pytest.fixture
    def contract_timeout(self):
        return BOOT_TIMEOUT

    @pytest.fixture
    def read_boot_file(self, provider):
        import yaml

        def read(instance, boot_file):
            doc = yaml.safe_load(seed_user_data(provider, instance.id))
            return next(f["content"] for f in doc["write_files"] if f["path"] == boot_file.path)

        return read


@pytest.fixture(scope="module")
def master_port(virt_network):
    """A TCP listener on the network's gateway standing in for salt-master's ret port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((virt_network["gateway"], 0))
        sock.listen(8)
        yield sock


@pytest.fixture(scope="module")
def node(provider, make_specs, virt_network, master_port):
    """One VM with a minion config pointing at ``master_port``, booted to its minion."""
    spec = make_specs(1)[0]
    port = master_port.getsockname()[1]
    spec.boot_files = [
        BootFile("/etc/salt/minion.d/vcluster.conf",
                 f"id: {spec.name}\nmaster: {virt_network['gateway']}\nmaster_port: {port}\n"),
        BootFile("/etc/vcluster/secret", "s3cret\n", 0o600),
    ]
    start = time.monotonic()
    [inst] = provider.create([spec])
    created = time.monotonic() - start
    master_port.settimeout(BOOT_TIMEOUT)
    conn, (peer, _) = master_port.accept()
    conn.close()
    print(f"\n{spec.name}: create {created:.1f} s, minion connected {time.monotonic() - start:.1f} s after create")
    yield spec, inst, peer
    provider.delete([inst.id])


def qemu_pid(name):
    """The QEMU process of a running domain, or None (libvirt's pid file)."""
    try:
        pid = int(open(f"/run/libvirt/qemu/{name}.pid").read().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def pings(address):
    return subprocess.run(["ping", "-c1", "-W1", address], capture_output=True, check=False).returncode == 0


class TestLibvirtNode:
    """One VM from the vcluster-node image, as expand will see it."""

    def test_seed_configures_the_minion_from_its_address(self, node):
        spec, _, peer = node
        assert peer == spec.address  # DHCP host entry, minion config from the seed, minion started

    def test_a_node_without_address_reports_its_dhcp_lease(self, provider, make_specs, virt_network):
        spec = make_specs(1)[0]
        spec.address = None
        [inst] = provider.create([spec])
        try:
            assert inst.address is None
            got = eventually(lambda: provider.get(inst.id).address, BOOT_TIMEOUT, f"a lease for {inst.id}")
            hosts = list(ipaddress.ip_network(virt_network["cidr"]).hosts())
            assert hosts[1] <= ipaddress.ip_address(got) <= hosts[98]  # the network's dynamic range
            [listed] = provider.list(spec.tags["cluster"])
            assert listed.address == got
        finally:
            provider.delete([inst.id])

    def test_domain_type_is_detected(self, provider, node):
        _, inst, _ = node
        xml = provider.conn.lookupByName(inst.id).XMLDesc(0)
        assert f"<domain type='{provider.domain_type}'" in xml
        assert provider.domain_type in ("kvm", "qemu")

    def test_get_list_and_hosts(self, provider, node):
        spec, inst, _ = node
        [listed] = provider.list(spec.tags["cluster"])
        assert listed.id == inst.id and listed.status is Status.RUNNING and listed.address == spec.address
        assert provider.get(inst.id).tags == spec.tags
        assert provider.get("vcl-virt-no-such-node") is None
        [host] = provider.hosts()
        assert host.instances >= 1 and host.memory_free_mb >= 0 and host.cpus_free >= 0

    def test_unsupported_mode_is_refused_before_any_side_effect(self, provider, node):
        _, inst, _ = node
        pid = qemu_pid(inst.id)
        with pytest.raises(ProviderError, match="suspend mode 'shelve' is not one of"):
            provider.suspend(inst.id, mode="shelve")
        assert provider.get(inst.id).status is Status.RUNNING and qemu_pid(inst.id) == pid
        with pytest.raises(ProviderError, match="no instance"):
            provider.suspend("vcl-virt-no-such-node", mode="save")
        with pytest.raises(ProviderError, match="live migration"):
            provider.migrate(inst.id, host="elsewhere")

    def test_pause_keeps_the_process_and_resumes(self, provider, node):
        spec, inst, _ = node
        pid = qemu_pid(inst.id)
        ret = provider.suspend(inst.id, mode="pause")
        assert ret["mode"] == "pause"
        assert provider.get(inst.id).status is Status.PAUSED and qemu_pid(inst.id) == pid
        assert provider.suspend(inst.id, mode="pause")["freed_mib"] is None  # already paused: no-op
        back = provider.resume(inst.id)
        assert provider.get(inst.id).status is Status.RUNNING
        assert abs(back["clock_offset_after"]) < 1
        eventually(lambda: pings(spec.address), 30, f"{spec.address} answering after the pause")

    def test_save_frees_the_qemu_process_and_restore_continues(self, provider, node):
        spec, inst, _ = node
        pid = qemu_pid(inst.id)
        assert pid is not None and pings(spec.address)
        rss_mib = int(next(line.split()[1] for line in open(f"/proc/{pid}/status")
                           if line.startswith("VmRSS:"))) // 1024
        ret = provider.suspend(inst.id, mode="save")
        print(f"\nsave of {MEMORY_MB} MiB guest: {ret['seconds']} s, QEMU RSS was {rss_mib} MiB, "
              f"host MemAvailable +{ret['freed_mib']} MiB")
        assert ret["mode"] == "save" and isinstance(ret["freed_mib"], int)
        assert qemu_pid(inst.id) is None and not os.path.exists(f"/proc/{pid}")
        assert provider.get(inst.id).status is Status.SUSPENDED
        assert not pings(spec.address)
        time.sleep(SAVED_FOR)  # long enough for the guest clock to fall visibly behind
        back = provider.resume(inst.id)
        print(f"restore: {back['seconds']} s; guest clock offset {back['clock_offset_before']} s, "
              f"{back['clock_offset_after']} s after the step")
        assert back["clock_offset_before"] <= -SAVED_FOR / 2  # it stood still while saved
        assert abs(back["clock_offset_after"]) < 1
        assert abs(provider.clock_offset(inst.id)) < 1
        assert provider.get(inst.id).status is Status.RUNNING and qemu_pid(inst.id) is not None
        eventually(lambda: pings(spec.address), 30, f"{spec.address} answering after the restore")

    def test_state_errors_on_a_stopped_node(self, provider, node):
        spec, inst, _ = node
        provider.conn.lookupByName(inst.id).destroy()
        assert provider.get(inst.id).status is Status.STOPPED
        with pytest.raises(ProviderStateError):
            provider.suspend(inst.id, mode="save")
        with pytest.raises(ProviderStateError):
            provider.resume(inst.id)

    def test_killed_qemu_process_is_reported_as_error(self, provider, node):
        spec, inst, _ = node
        provider.conn.lookupByName(inst.id).create()  # stopped by the test before
        pid = eventually(lambda: qemu_pid(inst.id), 30, f"QEMU process of {inst.id}")
        os.kill(pid, 9)
        [dead] = provider.wait([inst.id], [Status.ERROR], time.monotonic() + 30, cluster=spec.tags["cluster"])
        assert "ended unexpectedly" in dead.fault
        with pytest.raises(ProviderStateError):
            provider.resume(inst.id)

    def test_create_never_touches_a_namesake(self, provider, make_specs, node):
        spec, inst, _ = node
        clash = make_specs(1)[0]
        clash.name = spec.name
        with pytest.raises(ProviderError, match="already has"):
            provider.create([clash])
        assert provider.get(inst.id) is not None

    def test_bad_network_is_refused_before_anything_is_made(self, provider, make_specs):
        specs = make_specs(2)
        specs[1].network = "vcl-virt-no-such-network"
        with pytest.raises(ProviderError, match="no network 'vcl-virt-no-such-network'"):
            provider.create(specs)
        assert provider.list(specs[0].tags["cluster"]) == []

    def test_delete_removes_volumes_and_dhcp_entry(self, provider, node, virt_network):
        spec, inst, _ = node
        assert spec.address in virt_network["net"].XMLDesc(0)
        assert provider.delete([inst.id]) == [inst.id]
        assert provider.get(inst.id) is None
        vols = provider.conn.storagePoolLookupByName(POOL).listVolumes()
        assert not [v for v in vols if v.startswith(spec.name)]
        assert spec.address not in virt_network["net"].XMLDesc(0)
        assert provider.delete([inst.id]) == []

    def test_a_new_node_gets_a_retired_nodes_address(self, provider, make_specs, node):
        """dnsmasq still holds the deleted node's lease; the new node on that address gets it anyway."""
        old, _, _ = node
        spec = make_specs(1)[0]
        spec.address = old.address
        [inst] = provider.create([spec])
        try:
            eventually(lambda: pings(spec.address), BOOT_TIMEOUT, f"{spec.name} answering on {spec.address}")
        finally:
            provider.delete([inst.id])
