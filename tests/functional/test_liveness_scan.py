"""``slurm.liveness_scan`` through Salt's loader against real slurmds (the Slurm harness).

The harness runs a private slurmctld and dynamic slurmds in network
namespaces of its own. Checked: a running slurmd is seen listening and its
log gets nothing from the probe (a plain TCP connect costs two ``error:``
lines there); a killed one is refused while Slurm (``SlurmdTimeout`` as the
harness sets it) still lists the node as it was; the node's namespace gone
altogether is silent; bad input is refused before any command runs.
"""

import os

import pytest
from salt.exceptions import CommandExecutionError

pytestmark = [pytest.mark.usefixtures("slurm_cluster"),
              pytest.mark.skipif(os.geteuid() != 0, reason="the SYN probe needs a raw socket (root)")]


@pytest.fixture
def slurm(slurm_loaders):
    return slurm_loaders.modules.slurm


def slurmd_log(cluster, name):
    path = os.path.join(cluster.root, "log", f"slurmd-{name}.log")
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def test_scan_sees_listening_killed_and_gone_slurmds(slurm, slurm_cluster, slurm_node):
    up, killed, gone = slurm_node(), slurm_node(), slurm_node()
    before = slurmd_log(slurm_cluster, up)
    scan = slurm.liveness_scan(f"{up},{killed},{gone},nosuchnode", wait=1)
    assert sorted(n["name"] for n in scan["nodes"]) == sorted([up, killed, gone])
    assert scan["slurmd"] == {up: "listening", killed: "listening", gone: "listening"}
    for _ in range(3):
        slurm.liveness_scan(up, wait=1)
    assert slurmd_log(slurm_cluster, up) == before  # the probe never reached slurmd

    slurm_cluster.stop_slurmd(killed)
    slurm_cluster._teardown_node(gone)  # namespace and veth gone: nobody answers for its address
    scan = slurm.liveness_scan(f"{up},{killed},{gone}", wait=1.5)
    assert scan["slurmd"] == {up: "listening", killed: "refused", gone: "silent"}, scan
    states = {n["name"]: n["state"] for n in scan["nodes"]}
    assert "DOWN" not in states[killed] and "DOWN" not in states[gone], states
    slurm_cluster.scontrol("delete", f"nodename={gone}", check=False)


@pytest.mark.parametrize("wait", ["soon", 0, 61])
def test_bad_wait_is_refused(slurm, wait):
    with pytest.raises(CommandExecutionError, match="wait must be"):
        slurm.liveness_scan("x", wait=wait)
