"""vcluster.slurm.reach and Slurm.liveness_scan against real sockets (root: a raw socket).

Listening and refused ports are on loopback; the silent address is the far
end of a veth pair whose peer sits, down, in a network namespace this test
creates (no answer at all, as from a dead host).
"""

import os
import socket
import subprocess
import uuid

import pytest

from vcluster.slurm import reach
from vcluster.slurm.client import Slurm

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the SYN probe needs a raw socket (root)")


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def silent_address():
    """An address on a link whose other end is down, in a namespace made here."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if, peer_if = f"vclr{tag}", f"vclh{tag}", f"vclp{tag}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        run("ip", "link", "set", peer_if, "netns", ns)
        run("ip", "addr", "add", "169.254.231.1/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        yield "169.254.231.2"  # never configured on the peer, which stays down
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_listening_refused_and_unresolved(listener):
    port = listener.getsockname()[1]
    ret = reach.probe({"up": ("127.0.0.1", port), "also-up": ("localhost", port),
                       "gone": ("127.0.0.1", closed_port()), "nameless": ("no-such-node.invalid", port)}, 2)
    assert ret == {"up": "listening", "also-up": "listening", "gone": "refused", "nameless": "unresolved"}
    # the probe never completed a connection: nothing waits in the listener's accept queue
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_silent_host_after_the_wait(silent_address, listener):
    ret = reach.probe({"dead": (silent_address, 6818), "up": ("127.0.0.1", listener.getsockname()[1])}, 1.5)
    assert ret == {"dead": "silent", "up": "listening"}


def test_liveness_scan_probes_only_named_nodes_that_slurm_expects_to_answer(listener):
    port = listener.getsockname()[1]
    show_node = "\n".join([
        "NodeName=a Arch=x86_64 NodeAddr=127.0.0.1 NodeHostName=a State=IDLE RealMemory=1 CPUTot=1",
        f"NodeName=b NodeAddr=127.0.0.1 NodeHostName=b Port={closed_port()} State=ALLOCATED RealMemory=1 CPUTot=1",
        "NodeName=c NodeAddr=127.0.0.1 NodeHostName=c State=IDLE+CLOUD+POWERED_DOWN RealMemory=1 CPUTot=1",
        "NodeName=d NodeAddr=127.0.0.1 NodeHostName=d State=IDLE RealMemory=1 CPUTot=1",
    ])
    seen = []

    def runner(argv, env, timeout, stdin=None):  # Slurm's commands are recorded here; the probe is real
        seen.append(argv)
        if argv[:5] == ["scontrol", "-F", "show", "-o", "node"]:
            return 0, show_node, ""
        if argv[:3] == ["scontrol", "show", "config"]:
            return 0, f"SlurmctldPort           = 6817\nSlurmdPort              = {port}\n", ""
        raise AssertionError(argv)

    scan = Slurm(runner=runner, release="22.05").liveness_scan("a,b,c,nosuch", wait=1)  # version known
    assert [n.name for n in scan["nodes"]] == ["a", "b", "c"]
    assert scan["slurmd"] == {"a": "listening", "b": "refused", "c": "skipped"}
    assert len(seen) == 2


def test_thousands_of_answers_at_once_are_all_read(listener):
    """A raw socket's default buffer keeps a few hundred answers; the probe reads as it sends."""
    port = listener.getsockname()[1]
    targets = {f"n{i}": (f"127.0.{i // 250}.{i % 250 + 1}", closed_port()) for i in range(4000)}
    targets["up"] = ("127.0.0.1", port)
    ret = reach.probe(targets, 2)
    assert ret.pop("up") == "listening"
    assert set(ret.values()) == {"refused"} and len(ret) == 4000


def recorded_slurm(show_node, port, seen, sleep=None):
    """A Slurm client whose commands are answered from ``show_node`` (and slurmd's ``port``); the probe is real."""

    def runner(argv, env, timeout, stdin=None):
        seen.append(argv)
        if argv[:5] == ["scontrol", "-F", "show", "-o", "node"]:
            wanted = argv[5:]
            lines = [ln for ln in show_node.splitlines() if not wanted or ln.startswith(f"NodeName={wanted[0]} ")]
            return 0, "\n".join(lines), ""
        if argv[:3] == ["scontrol", "show", "config"]:
            return 0, f"SlurmctldPort           = 6817\nSlurmdPort              = {port}\n", ""
        if argv[:3] == ["scontrol", "update", "nodename=a"]:
            return 0, "", ""
        raise AssertionError(argv)

    return Slurm(runner=runner, release="22.05", **({"sleep": sleep} if sleep else {}))


def test_release_when_listening_releases_the_moment_slurmd_listens():
    """Refused twice (a restored node's slurmd not yet there), then listening: released at once, drain lifted."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: the kernel refuses
    port = sock.getsockname()[1]
    show_node = ("NodeName=a NodeAddr=127.0.0.1 NodeHostName=a State=IDLE+DRAIN RealMemory=1 CPUTot=1 "
                 "Reason=vcluster suspend [root@2026-12-08T00:00:00]")
    seen, slept = [], []

    def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 2:
            sock.listen(8)

    try:
        got = recorded_slurm(show_node, port, seen, sleep).release_when_listening("a", [], "vcluster suspend",
                                                                                   wait=10)
    finally:
        sock.close()
    assert got["slurmd"] == "listening" and got["released"] == {"resumed": [], "undrained": True}, got
    assert len(slept) == 2 and all(0 <= s <= 0.2 for s in slept), slept
    assert ["scontrol", "update", "nodename=a", "state=RESUME"] == seen[-1][:4], seen
    assert got["waited"] < 10


def test_release_when_listening_touches_nothing_unless_slurmd_listens():
    """Refused until the wait ends, or skipped (powered down), or unknown: no release, the last verdict."""
    port = closed_port()
    refused = "NodeName=a NodeAddr=127.0.0.1 NodeHostName=a State=IDLE+DRAIN RealMemory=1 CPUTot=1"
    seen = []
    got = recorded_slurm(refused, port, seen).release_when_listening("a", ["5"], "vcluster suspend", wait=0.6)
    assert got["slurmd"] == "refused" and got["released"] is None, got
    assert 0.6 <= got["waited"] < 3, got
    assert all(argv[:2] != ["scontrol", "resume"] and argv[1] != "update" for argv in seen), seen

    powered_down = "NodeName=a NodeAddr=127.0.0.1 NodeHostName=a State=IDLE+CLOUD+POWERED_DOWN RealMemory=1 CPUTot=1"
    seen = []
    got = recorded_slurm(powered_down, port, seen).release_when_listening("a", ["5"], "vcluster suspend", wait=30)
    assert (got["slurmd"], got["released"]) == ("skipped", None) and got["waited"] < 1, got
    assert len(seen) == 2  # the listing and the config: no probe, nothing released

    got = recorded_slurm(refused, port, []).release_when_listening("nosuch", ["5"], "vcluster suspend", wait=30)
    assert (got["slurmd"], got["released"]) == (None, None) and got["waited"] < 1, got
