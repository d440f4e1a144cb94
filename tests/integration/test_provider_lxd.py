"""LXD provider: the provider contract, then what only a real container shows."""

import socket
import subprocess
import time

import pytest

from tests.provider_contract import ProviderContract, SpecFactory, eventually
from vcluster.errors import ProviderError, ProviderStateError
from vcluster.providers.base import BootFile, Status
from vcluster.providers.lxd import LxdProvider

# lxd_daemon, lxd_network, lxd_image, lxd_addresses: tests/integration/lxd_fixtures.py,
# imported by tests/integration/conftest.py.
pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 120


@pytest.fixture(scope="module")
def provider(lxd_daemon, lxd_network, lxd_image):
    prov = LxdProvider("lxd-test", {"network": lxd_network["name"], "storage_pool": lxd_daemon})
    yield prov
    prov.close()


@pytest.fixture(scope="module")
def make_specs(lxd_image, lxd_addresses):
    return SpecFactory(lxd_image, lxd_addresses, prefix="ct")


def lxc_exec(name, *cmd, timeout=BOOT_TIMEOUT):
    """Run a command in the container; return its stripped stdout."""
    proc = subprocess.run(["lxc", "exec", name, "--", *cmd], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} in {name} exited {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout.strip()


class TestLxdProviderContract(ProviderContract):
    """The shared contract, against a real LXD daemon."""

    @pytest.fixture
    def read_boot_file(self, provider):
        def read(instance, boot_file):
            files = provider.client.api.instances[instance.id].files
            return files.get(params={"path": boot_file.path}, is_api=False).text

        return read


@pytest.fixture(scope="module")
def master_port(lxd_network):
    """A TCP listener on the bridge address standing in for salt-master's ret port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((lxd_network["gateway"], 0))
        sock.listen(8)
        yield sock


@pytest.fixture(scope="module")
def node(provider, make_specs, lxd_network, master_port):
    """One container with a minion config and a private boot file."""
    spec = make_specs(1)[0]
    port = master_port.getsockname()[1]
    spec.boot_files = [
        BootFile(
            "/etc/salt/minion.d/vcluster.conf",
            f"id: {spec.name}\nmaster: {lxd_network['gateway']}\nmaster_port: {port}\n",
        ),
        BootFile("/etc/vcluster/secret", "s3cret\n", 0o600),  # parent dir not in the image
    ]
    [inst] = provider.create([spec])
    yield spec, inst
    provider.delete([inst.id])


class TestLxdNode:
    """A container from the vcluster-node image, as expand will see it."""

    def test_boot_file_has_its_mode_and_owner(self, node):
        spec, _ = node
        assert lxc_exec(spec.name, "stat", "-c", "%a %u %g", "/etc/vcluster/secret") == "600 0 0"
        assert lxc_exec(spec.name, "cat", "/etc/vcluster/secret") == "s3cret"

    def test_gets_its_address_by_dhcp(self, node):
        spec, _ = node
        eventually(
            lambda: f"inet {spec.address}/" in lxc_exec(spec.name, "ip", "-4", "-o", "addr", "show", "dev", "eth0"),
            BOOT_TIMEOUT,
            f"{spec.address} on eth0 of {spec.name}",
        )

    def test_hostname_is_the_node_name(self, node):
        spec, _ = node
        assert lxc_exec(spec.name, "hostname") == spec.name
        assert lxc_exec(spec.name, "cat", "/etc/hostname") == spec.name

    def test_systemd_reaches_running(self, node):
        spec, _ = node
        proc = subprocess.run(
            ["lxc", "exec", spec.name, "--", "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
            timeout=BOOT_TIMEOUT,
        )
        failed = lxc_exec(spec.name, "systemctl", "--failed", "--no-legend", "--plain")
        assert proc.stdout.strip() == "running", f"failed units: {failed}"

    def test_salt_minion_runs_and_reaches_the_master_port(self, node, master_port):
        spec, _ = node
        master_port.settimeout(BOOT_TIMEOUT)
        conn, (peer, _) = master_port.accept()
        conn.close()
        assert peer == spec.address
        assert lxc_exec(spec.name, "systemctl", "is-active", "salt-minion") == "active"

    def test_slurm_and_munge_installed_but_left_to_salt(self, node):
        """Enabled (the states then have nothing to enable), not started: no key, no slurmd options."""
        spec, _ = node
        assert lxc_exec(spec.name, "slurmd", "-V").startswith("slurm")
        assert "munge" in lxc_exec(spec.name, "munged", "--version")

        def systemctl(*args):
            return subprocess.run(["lxc", "exec", spec.name, "--", "systemctl", *args],
                                  capture_output=True, text=True).stdout.strip()

        eventually(lambda: systemctl("is-system-running", "--wait") == "running", BOOT_TIMEOUT,
                   f"{spec.name} booted")
        wanted = {"slurmd": "enabled", "munge": "enabled", "chrony": "disabled"}
        assert {unit: systemctl("is-enabled", unit) for unit in wanted} == wanted
        # held back by their unit conditions, not failed
        assert {unit: systemctl("is-active", unit) for unit in ("slurmd", "munge")} == \
            {"slurmd": "inactive", "munge": "inactive"}
        assert systemctl("show", "-p", "ConditionResult", "--value", "munge") == "no"
        assert lxc_exec(spec.name, "sh", "-c", "test ! -e /etc/munge/munge.key && echo absent") == "absent"

    def test_list_is_one_call_and_get_finds_the_node(self, provider, node):
        spec, inst = node
        before = dict(provider.calls)
        [listed] = provider.list(spec.tags["cluster"])
        assert provider.calls["list"] == before.get("list", 0) + 1
        assert sum(provider.calls.values()) == sum(before.values()) + 1
        assert listed.id == inst.id and listed.host == provider.server_name
        assert provider.get(inst.id).tags == spec.tags
        assert provider.get("vcluster-no-such-node") is None
        assert inst.id in {i.id for i in provider.list_all()}

    def test_hosts_subtracts_the_node(self, provider, node):
        spec, _ = node
        [host] = provider.hosts()
        assert host.name == provider.server_name
        assert host.instances >= 1
        total_mb = provider.client.api.resources.get().json()["metadata"]["memory"]["total"] // 2**20
        assert 0 <= host.memory_free_mb <= total_mb - spec.memory_mb
        assert host.cpus_free >= 0

    def test_partial_failure_rolls_back(self, provider, make_specs):
        specs = make_specs(2)
        specs[1].network = "vcluster-no-such-network"
        cluster = specs[0].tags["cluster"]
        with pytest.raises(ProviderError, match=specs[1].name):
            provider.create(specs)
        assert provider.list(cluster) == []

    def test_create_never_touches_a_namesake(self, provider, make_specs, node):
        spec, inst = node
        clash = make_specs(1)[0]
        clash.name = spec.name
        with pytest.raises(ProviderError, match="already has"):
            provider.create([clash])
        assert provider.get(inst.id).status is Status.RUNNING

    def test_unsupported_actions_say_why(self, provider, node):
        _, inst = node
        with pytest.raises(ProviderError, match="CRIU"):
            provider.migrate(inst.id, host="elsewhere")
        with pytest.raises(ProviderError, match="shelve"):
            provider.suspend(inst.id, mode="shelve")
        with pytest.raises(ProviderError, match="no instance"):
            provider.suspend("vcluster-no-such-node")

    def test_state_errors_on_a_stopped_node(self, provider, node):
        spec, inst = node
        subprocess.run(["lxc", "stop", "--force", inst.id], check=True, timeout=BOOT_TIMEOUT)
        [stopped] = provider.wait([inst.id], [Status.STOPPED], time.monotonic() + 30, cluster=spec.tags["cluster"])
        assert stopped.status is Status.STOPPED
        with pytest.raises(ProviderStateError):
            provider.suspend(inst.id)
        with pytest.raises(ProviderStateError):
            provider.resume(inst.id)
