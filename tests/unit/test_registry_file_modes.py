"""The registry file is the master user's alone when vcluster creates it."""

import os

from vcluster.registry import Registry


def mode(path):
    return os.stat(path).st_mode & 0o7777


def test_a_new_registry_is_0600_in_a_0700_directory(tmp_path):
    path = tmp_path / "state" / "registry.sqlite"
    old = os.umask(0o022)  # the usual umask: files 0644 unless made otherwise
    try:
        with Registry(path):
            assert mode(path) == 0o600
            assert mode(path.parent) == 0o700
            assert mode(f"{path}.lock") == 0o600
            wal = [p for p in path.parent.iterdir() if p.name.endswith(("-wal", "-shm"))]
            assert wal, sorted(p.name for p in path.parent.iterdir())
            assert {p.name: mode(p) for p in wal} == {p.name: 0o600 for p in wal}
    finally:
        os.umask(old)


def test_an_existing_registry_keeps_the_mode_the_site_gave_it(tmp_path):
    path = tmp_path / "registry.sqlite"
    Registry(path).close()
    os.chmod(path, 0o640)
    Registry(path).close()
    assert mode(path) == 0o640
