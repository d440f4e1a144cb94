"""Test-wide configuration.

Tests are grouped by directory: ``unit`` (library only), ``functional`` (Salt
loaders, a throwaway Slurm controller), ``integration`` (real master,
minions, slurmctld/slurmd, LXD containers as virtual nodes, the Nova
testbed). ``scripts/test.sh`` runs them all.
"""

import logging
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.harness.fixtures"]


def pytest_configure(config):
    # Salt adds handlers to the root logger that write to streams pytest
    # closes at exit ("I/O operation on closed file"): start clean.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    # The daemons forward every INFO line of Salt and the factories; a failed
    # test's report keeps vcluster's own lines and Salt's warnings only.
    for noisy in ("salt", "saltfactories", "pytestshellutils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def pytest_collection_modifyitems(items):
    """Mark tests by their directory so ``-m unit`` etc. select them."""
    for item in items:
        parts = pathlib.Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in ("unit", "functional", "integration"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def repo_root():
    """The checkout the tests run from."""
    return REPO
