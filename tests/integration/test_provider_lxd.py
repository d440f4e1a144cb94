"""LXD provider: the provider contract, then what only a real container shows."""

import json
import os
import socket
import subprocess
import threading
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


# -- retries: a unix socket in front of the real LXD socket ------------------------------


def lxd_socket():
    """The local LXD socket, found as pylxd finds it."""
    if "LXD_DIR" in os.environ:
        return os.path.join(os.environ["LXD_DIR"], "unix.socket")
    snap = "/var/snap/lxd/common/lxd/unix.socket"
    return snap if os.path.exists(snap) else "/var/lib/lxd/unix.socket"


class FlakyLxd:
    """A unix socket that passes requests to LXD's own socket, but fails the ones it is told to.

    Each connection carries one request (the proxy asks LXD for
    ``Connection: close``, which LXD honours and tells the client), so every
    request is seen and recorded as ``(method, path)``. ``fail(n, method,
    path, how)`` makes the next ``n`` matching requests fail: ``"503"`` is
    LXD's own refusal while it shuts down (same status and JSON body, the
    request is not passed on), ``"drop"`` closes the connection after reading
    the request (a reset after it went out). Created not listening when
    ``listening`` is false: connecting is then refused by the kernel until
    :meth:`listen`.
    """

    SHUTTING_DOWN = json.dumps({"type": "error", "status": "", "status_code": 0, "operation": "",
                                "error_code": 503, "error": "LXD is shutting down", "metadata": None}).encode()

    def __init__(self, path, upstream, listening=True):
        self.path, self.upstream = path, upstream
        self.requests, self.faults = [], []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._thread = None
        if listening:
            self.listen()

    def listen(self):
        if self._thread is None:
            self._sock.listen(16)
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()

    def fail(self, n, method, path, how="503"):
        with self._lock:
            self.faults.append([n, method, path, how])

    def seen(self, method, path):
        return sum(1 for r in self.requests if r == (method, path))

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of _serve
        except OSError:
            pass  # never listened
        self._sock.close()
        if self._thread:
            self._thread.join(10)

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _fault(self, method, path):
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault[0] > 0 and fault[1] == method and fault[2] == path:
                    fault[0] -= 1
                    return fault[3]
        return None

    def _one(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            headers = [line for line in lines[1:] if not line.lower().startswith("connection:")]
            for line in headers:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            how = self._fault(method, target.split("?", 1)[0])
            if how == "drop":
                return
            if how == "503":
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(self.SHUTTING_DOWN)
                             + self.SHUTTING_DOWN)
                return
            request = "\r\n".join([lines[0], *headers, "Connection: close", "", ""]).encode("latin-1") + body
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
                up.connect(self.upstream)
                up.sendall(request)
                while chunk := up.recv(65536):
                    conn.sendall(chunk)


@pytest.fixture
def flaky(lxd_daemon, tmp_path):
    made = []

    def make(listening=True):
        proxy = FlakyLxd(str(tmp_path / f"lxd-{len(made)}.socket"), lxd_socket(), listening)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture
def flaky_provider(lxd_daemon, lxd_network):
    made = []

    def make(proxy, backoff=0.5):
        prov = LxdProvider("lxd-flaky", {"network": lxd_network["name"], "storage_pool": lxd_daemon,
                                         "endpoint": proxy.path})
        prov.retry_backoff = backoff
        made.append(prov)
        return prov

    yield make
    for prov in made:
        prov.close()


class TestLxdRetries:
    """Requests that LXD could not take are tried again; its answers are not."""

    def test_a_refused_connection_is_tried_again_once_lxd_listens(self, flaky, flaky_provider):
        proxy = flaky(listening=False)  # the socket exists, nothing accepts: ECONNREFUSED
        prov = flaky_provider(proxy)
        waits = []

        def wait(seconds):  # LXD comes back during the backoff
            waits.append(seconds)
            proxy.listen()

        prov._wait = wait
        assert prov.list("vcluster-no-such-cluster") == []
        assert waits == [0.5]
        assert prov.calls["retry"] == 1 and prov.calls["connect"] == 1
        assert proxy.requests[:2] == [("GET", "/1.0"), ("GET", "/1.0/instances")]

    def test_503_while_lxd_shuts_down_is_tried_again(self, flaky, flaky_provider):
        proxy = flaky()
        prov = flaky_provider(proxy, backoff=0.05)
        proxy.fail(2, "GET", "/1.0/instances")
        assert prov.list("vcluster-no-such-cluster") == []
        assert proxy.seen("GET", "/1.0/instances") == 3
        assert prov.calls["list"] == 3 and prov.calls["retry"] == 2

    def test_after_the_last_try_one_sentence_names_the_operation(self, flaky, flaky_provider):
        proxy = flaky()
        prov = flaky_provider(proxy, backoff=0.01)
        proxy.fail(99, "GET", "/1.0/instances/ct-gone/state")
        with pytest.raises(ProviderError) as err:
            prov.resume("ct-gone")
        assert str(err.value) == "resume ct-gone: LXD is shutting down after 5 tries"
        assert proxy.seen("GET", "/1.0/instances/ct-gone/state") == 5

    def test_not_found_is_an_answer_asked_once(self, flaky, flaky_provider):
        proxy = flaky()
        prov = flaky_provider(proxy)
        assert prov.get("vcluster-no-such-node") is None
        assert proxy.seen("GET", "/1.0/instances/vcluster-no-such-node") == 1
        assert prov.calls["retry"] == 0

    def test_a_create_refused_with_503_is_sent_again_and_made_once(self, flaky, flaky_provider, make_specs):
        proxy = flaky()
        prov = flaky_provider(proxy, backoff=0.05)
        [spec] = make_specs(1)
        proxy.fail(1, "POST", "/1.0/instances")
        try:
            [inst] = prov.create([spec])
            assert proxy.seen("POST", "/1.0/instances") == 2
            assert [i.id for i in prov.list(spec.tags["cluster"])] == [inst.id] == [spec.name]
        finally:
            prov.delete([spec.name])

    def test_a_create_lost_after_it_went_out_is_not_sent_again(self, flaky, flaky_provider, make_specs):
        proxy = flaky()
        prov = flaky_provider(proxy, backoff=0.05)
        [spec] = make_specs(1)
        proxy.fail(1, "POST", "/1.0/instances", how="drop")
        with pytest.raises(ProviderError, match=f"^create {spec.name}: LXD did not answer"):
            prov.create([spec])
        assert proxy.seen("POST", "/1.0/instances") == 1
        assert prov.calls["retry"] == 0
        # the rollback looked for it (it may have been made) and found nothing of this call
        assert proxy.seen("GET", f"/1.0/instances/{spec.name}") == 1
        assert prov.list(spec.tags["cluster"]) == []

    def test_already_exists_is_an_answer_sent_once(self, flaky, flaky_provider, node):
        spec, _ = node
        proxy = flaky()
        prov = flaky_provider(proxy, backoff=0.05)
        fingerprint = prov._resolve_image(spec.image)
        body = prov._instance_body(spec, fingerprint, "other-request")
        with pytest.raises(ProviderError, match="already exists"):
            prov._request("create", "post", prov.client.api.instances, f"create {spec.name}", json=body)
        assert proxy.seen("POST", "/1.0/instances") == 1
        assert prov.calls["retry"] == 0
