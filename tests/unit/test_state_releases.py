"""salt/slurm/releases.yaml, the state tree's copy of vcluster's release table, is RELEASES."""

import pathlib

import yaml

from vcluster.slurm import versions

TABLE = pathlib.Path(__file__).resolve().parents[2] / "salt" / "slurm" / "releases.yaml"


def test_the_state_tree_table_is_releases():
    data = yaml.safe_load(TABLE.read_text())["releases"]
    assert data == {series: rel.to_dict() for series, rel in versions.RELEASES.items()}
    assert list(data) == list(versions.RELEASES)  # same order: messages list them so


def test_slurmd_notify_from_23_11():
    """SchedMD's slurmd.service is Type=notify (slurmd --systemd) from 23.11 (etc/slurmd.service.in)."""
    assert [s for s, r in versions.RELEASES.items() if r.slurmd_notify] == ["23.11", "24.05", "24.11", "25.05",
                                                                           "25.11"]
