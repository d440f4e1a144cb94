"""Session fixtures for tests that need LXD: the daemon, a test bridge, the node image.

tests/integration/conftest.py imports them for every integration test. The
bridge is created for the session and removed at its end (with any container
still attached).
Override with VCLUSTER_TEST_LXD_NETWORK / VCLUSTER_TEST_LXD_CIDR.
"""

import ipaddress
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TEST_NETWORK = os.environ.get("VCLUSTER_TEST_LXD_NETWORK", "vctest0")
TEST_CIDR = os.environ.get("VCLUSTER_TEST_LXD_CIDR", "10.78.0.1/24")
STORAGE_POOL = "vcluster"
IMAGE_ALIAS = "vcluster-node"


def run_script(*cmd, timeout=300):
    """Run one of the repo's scripts; fail the test with its stderr tail."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-25:])
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail}")
    return proc


@pytest.fixture(scope="session")
def lxd_root():
    """Skip (only) when not root: LXD, bridges and debootstrap need it."""
    if os.geteuid() != 0:
        pytest.skip("LXD integration tests must run as root (they start lxd, create bridges, build the image)")


@pytest.fixture(scope="session")
def lxd_daemon(lxd_root):
    """LXD running with the vcluster storage pool; returns the pool name."""
    run_script(REPO / "scripts" / "lxd-up.sh", "--no-network", "--pool", STORAGE_POOL)
    return STORAGE_POOL


@pytest.fixture(scope="session")
def lxd_network(lxd_daemon):
    """The session's own managed bridge: ``{"name", "gateway", "cidr"}``."""
    run_script(REPO / "scripts" / "lxd-up.sh", "--network", TEST_NETWORK, "--cidr", TEST_CIDR, "--pool", lxd_daemon)
    iface = ipaddress.ip_interface(TEST_CIDR)
    yield {"name": TEST_NETWORK, "gateway": str(iface.ip), "cidr": str(iface.network)}
    run_script(REPO / "scripts" / "lxd-down.sh", "--network", TEST_NETWORK, "--force")


@pytest.fixture(scope="session")
def lxd_image(lxd_daemon):
    """The node image, built or taken from the cache; returns its alias."""
    run_script(REPO / "image" / "build.sh", "--alias", IMAGE_ALIAS, timeout=1800)
    return IMAGE_ALIAS


@pytest.fixture(scope="session")
def lxd_addresses(lxd_network):
    """An iterator of addresses on the test bridge for ad-hoc containers.

    Hands out host .200 and up (of a /24), leaving the lower ones to pools in
    pillar (the stack's pool uses .100-.115).
    """
    network = ipaddress.ip_network(lxd_network["cidr"])
    return (str(a) for i, a in enumerate(network.hosts()) if i >= 199)
