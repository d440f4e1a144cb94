"""Fixtures for integration tests: LXD, the real Salt + Slurm stack."""

import fcntl

import pytest

from tests.integration.lxd_fixtures import (  # noqa: F401 - fixtures
    lxd_addresses,
    lxd_daemon,
    lxd_image,
    lxd_network,
    lxd_root,
)
from tests.integration.stack import LIVE, ClusterStack


def pytest_collection_modifyitems(items):
    """Modules marked ``own_stack`` run after every other test, in their order.

    Such a module brings up a stack of its own, and starting a stack stops
    every other stack's Salt daemons (``ClusterStack.remove_leftovers``: the
    host's slurmctld, slurmd and /etc/slurm belong to one stack at a time).
    Run before a module of the session stack, it would leave that module a
    master and controller minion that are gone. The sort is stable.
    """
    items.sort(key=lambda item: item.get_closest_marker("own_stack") is not None)


@pytest.fixture(scope="session")
def salt_factories_config():
    """Keep the factories' root short: Salt's Unix socket paths are limited."""
    return {"root_dir": "/tmp/vct"}


@pytest.fixture(scope="session")
def host_slurm_lock(lxd_root):
    """One stack at a time: it owns the host's slurmctld, slurmd and /etc/slurm."""
    with open("/run/vcluster-test-stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def stack(host_slurm_lock, salt_factories, lxd_network, lxd_image, tmp_path_factory):
    """Master, controller minion (highstated), on the session's test bridge."""
    cluster = ClusterStack(salt_factories, lxd_network, tmp_path_factory.mktemp("stack"))
    cluster.start()
    try:
        cluster.highstate_controller()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True, scope="module")
def clean_slate_between_modules():
    """After each module, live stacks retire what its tests left behind."""
    yield
    for cluster in list(LIVE):
        if cluster.master is not None and cluster.master.is_running():
            cluster.retire_everything()
