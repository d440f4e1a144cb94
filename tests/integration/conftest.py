"""Fixtures for integration tests: LXD, the real Salt + Slurm stack."""

import fcntl
import os

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


STACK_LOCK = "/run/vcluster-test-stack.lock"


def _lock_held_by_ancestor(path):
    """Does a process this one descends from hold the flock on ``path``?

    ``flock /run/vcluster-test-stack.lock pytest ...`` holds the lock for
    the whole run; taking it again from here (a new open file) would wait
    on that very lock forever.
    """
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return False
    ancestors, pid = set(), os.getppid()
    while pid > 1 and pid not in ancestors:
        ancestors.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    with open("/proc/locks") as locks:
        for line in locks:
            words = line.split()
            if "->" in words or len(words) < 6 or words[1] != "FLOCK":
                continue  # waiters and other lock kinds
            if words[5].rsplit(":", 1)[-1] == str(inode) and int(words[4]) in ancestors:
                return True
    return False


@pytest.fixture(scope="session")
def host_slurm_lock(lxd_root):
    """One stack at a time: it owns the host's slurmctld, slurmd and /etc/slurm."""
    if _lock_held_by_ancestor(STACK_LOCK):
        yield  # run under `flock STACK_LOCK pytest ...`
        return
    with open(STACK_LOCK, "w") as lock:
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
