"""Pytest fixtures around the Slurm harness and Salt loaders aimed at it.

Enable with ``pytest_plugins = ["tests.harness.fixtures"]`` in tests/conftest.py.

* ``slurm_cluster`` (session): a started :class:`~tests.harness.slurm.SlurmHarness`;
  tests are skipped with the reason when the machine cannot run one.
* ``slurm_node`` (function): factory ``slurm_node(cpus=1, ...)`` that starts a
  dynamic node with a fresh name and removes it after the test.
* ``slurm_minion_opts`` / ``slurm_loaders`` (session): Salt minion opts with
  ``slurm:conf`` pointing at the harness, and saltfactories ``Loaders`` on them.
"""

import itertools
import os
import shutil
import tempfile

import pytest

from tests.harness.slurm import SlurmHarness, unavailable

_names = itertools.count(1)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real throwaway slurmctld (+ munged) with a bridge for dynamic nodes."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    SlurmHarness.purge_stale()
    harness = SlurmHarness()
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def slurm_node(slurm_cluster):
    """Factory: start a dynamic node (``slurmd -Z``) named ``tnN``; removed after the test."""
    started = []

    def make(name=None, **kwargs):
        name = name or f"tn{next(_names)}"
        slurm_cluster.add_node(name, **kwargs)
        started.append(name)
        return name

    yield make
    for name in started:
        slurm_cluster.remove_node(name)


@pytest.fixture(scope="session")
def slurm_minion_opts(slurm_cluster):
    """Masterless minion opts (short root_dir) whose ``slurm:conf`` is the harness's slurm.conf."""
    import salt.config  # pylint: disable=import-outside-toplevel

    root = tempfile.mkdtemp(prefix="vcm", dir="/tmp")
    opts = salt.config.minion_config(None)
    opts.update({
        "id": "vcluster-slurm-test",
        "root_dir": root,
        "cachedir": os.path.join(root, "cache"),
        "pki_dir": os.path.join(root, "pki"),
        "sock_dir": os.path.join(root, "sock"),
        "extension_modules": os.path.join(root, "extmods"),
        "log_file": os.path.join(root, "minion.log"),
        "file_client": "local",
        "file_roots": {"base": [os.path.join(root, "srv")]},
        "pillar_roots": {"base": [os.path.join(root, "pillar")]},
        "slurm": {"conf": slurm_cluster.conf},
    })
    for key in ("cachedir", "pki_dir", "sock_dir", "extension_modules"):
        os.makedirs(opts[key], exist_ok=True)
    yield opts
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_loaders(slurm_minion_opts):
    """saltfactories Loaders (``.modules``, ``.states``) with the vcluster modules."""
    from saltfactories.utils.functional import Loaders  # pylint: disable=import-outside-toplevel

    return Loaders(slurm_minion_opts)
