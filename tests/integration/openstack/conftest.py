"""Fixtures for the OpenStack provider tests: one real Nova testbed per session.

``openstack_testbed`` runs ``scripts/openstack-testbed/up.sh`` once per test
session (about a minute once the services are installed) and ``down.sh`` at
the end. A testbed that was already READY before the session (a developer's)
is used and left running. Set ``VCLUSTER_TESTBED_KEEP=1`` to keep the one the
session started. ``VCLUSTER_TESTBED_DIR`` moves it (default
/var/lib/vcluster/openstack-testbed).
"""

import os
import pathlib
import secrets
import subprocess
import time

import pytest
import yaml

from vcluster.providers.base import BootFile, InstanceSpec
from vcluster.providers.openstack import OpenStackProvider

REPO = pathlib.Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "scripts" / "openstack-testbed"
CLOUD = "vcluster-testbed"
ADMIN_CLOUD = "vcluster-testbed-admin"
IMAGE = "vcluster-node"
FLAVOR = "m1.tiny"


def pytest_configure(config):
    config.addinivalue_line("markers", "openstack: needs the local Nova testbed (scripts/openstack-testbed)")
    config.addinivalue_line("markers", "integration: needs real services")


def _ready_stamp(tb):
    """``mtime_ns`` of ``tb``/READY, or None when there is none."""
    try:
        return (tb / "READY").stat().st_mtime_ns
    except FileNotFoundError:
        return None


def testbed_dir():
    return pathlib.Path(os.environ.get("VCLUSTER_TESTBED_DIR", "/var/lib/vcluster/openstack-testbed"))


@pytest.fixture(scope="session")
def openstack_testbed():
    """Start the testbed (or reuse a running one); yields its directory and clouds.yaml."""
    if os.geteuid() != 0:
        pytest.skip("the OpenStack testbed installs packages and runs daemons: run the tests as root")
    tb = testbed_dir()
    before = _ready_stamp(tb)
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "up.sh")], capture_output=True, text=True, timeout=1200,
        env={**os.environ, "VCLUSTER_TESTBED_DIR": str(tb)},
    )
    # up.sh decides whether a testbed runs (its daemons and Nova answering)
    # and leaves READY untouched only then: a READY left by a machine
    # restart is rewritten, and that testbed is this session's to stop.
    already_up = proc.returncode == 0 and before is not None and _ready_stamp(tb) == before
    if proc.returncode != 0:
        if before is None:  # never stop what may be a developer's testbed
            subprocess.run(["bash", str(SCRIPTS / "down.sh")], capture_output=True, timeout=300,
                           env={**os.environ, "VCLUSTER_TESTBED_DIR": str(tb)})
        pytest.fail(f"openstack testbed did not start (logs kept in {tb}/log):\n{proc.stderr[-3000:]}")
    info = {
        "dir": tb,
        "clouds_yaml": tb / "clouds.yaml",
        "startup_seconds": round(time.monotonic() - started, 1),
        "reused": already_up,
    }
    try:
        yield info
    finally:
        if not already_up and os.environ.get("VCLUSTER_TESTBED_KEEP") != "1":
            subprocess.run(
                ["bash", str(SCRIPTS / "down.sh")], capture_output=True, text=True, timeout=300,
                env={**os.environ, "VCLUSTER_TESTBED_DIR": str(tb)},
            )


def provider_config(testbed, **overrides):
    config = {
        "driver": "openstack",
        "cloud": CLOUD,
        "clouds_yaml": str(testbed["clouds_yaml"]),
        "networks": "none",  # the testbed has no Neutron networks
        "poll_interval": 0.5,
        "boot_timeout": 120,
        "action_timeout": 90,
        "api_retry_backoff": 0.2,
    }
    config.update(overrides)
    return config


@pytest.fixture
def os_provider_factory(openstack_testbed):
    """``factory(**config_overrides)`` -> a provider; every server it made is deleted afterwards."""
    made = []

    def factory(**overrides):
        prov = OpenStackProvider("testbed", provider_config(openstack_testbed, **overrides))
        made.append(prov)
        return prov

    yield factory
    for prov in made:
        try:
            leftovers = [i.id for i in prov.list_all() if i.tags.get("cluster", "").startswith("ostest-")]
            if leftovers:
                prov.delete(leftovers)
        finally:
            prov.close()


@pytest.fixture
def os_provider(os_provider_factory):
    return os_provider_factory()


@pytest.fixture(scope="session")
def admin_conn(openstack_testbed):
    """An openstacksdk connection as the testbed's Keystone admin (quotas, flavors)."""
    import openstack.config
    import openstack.connection

    region = openstack.config.OpenStackConfig(config_files=[str(openstack_testbed["clouds_yaml"])]).get_one(
        cloud=ADMIN_CLOUD
    )
    conn = openstack.connection.Connection(config=region)
    yield conn
    conn.close()


@pytest.fixture
def cluster_name():
    return f"ostest-{secrets.token_hex(3)}"


def make_spec(cluster, index, flavor=FLAVOR, image=IMAGE, extra=None, boot_files=None, prefix="osn"):
    name = f"{prefix}{cluster[-6:]}-{index:03d}"
    return InstanceSpec(
        name=name,
        address=None,
        image=image,
        cpus=1,
        memory_mb=64,
        flavor=flavor,
        boot_files=boot_files if boot_files is not None else [BootFile("/etc/salt/minion_id", name + "\n")],
        tags={"cluster": cluster, "node": name, "profile": "htc", "registry_id": str(1000 + index)},
        extra=dict(extra or {}),
    )


@pytest.fixture
def specs_for(cluster_name):
    """``specs_for(n, **kwargs)`` -> n specs of this test's cluster."""

    def build(n, start=0, **kwargs):
        return [make_spec(cluster_name, start + i, **kwargs) for i in range(n)]

    return build


def connect_testbed(testbed, cloud=CLOUD):
    """An openstacksdk connection to ``cloud`` of the testbed's clouds.yaml."""
    import openstack.config
    import openstack.connection

    region = openstack.config.OpenStackConfig(config_files=[str(testbed["clouds_yaml"])]).get_one(cloud=cloud)
    return openstack.connection.Connection(config=region)


def cloud_password(testbed, cloud=CLOUD):
    """The throwaway password of ``cloud`` (tests check it never leaks into output)."""
    data = yaml.safe_load(pathlib.Path(testbed["clouds_yaml"]).read_text())
    return data["clouds"][cloud]["auth"]["password"]
