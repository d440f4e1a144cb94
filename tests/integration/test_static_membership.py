"""Static membership end to end: the seeds' method, and the benchmark baseline.

slurm.conf is re-rendered from the registry on every cluster node, slurmctld
restarts with its queue kept, and the node is resumed; retire removes the
NodeName line again. Jobs queued before the restart survive it.
"""

import pathlib

import pytest

from tests.integration.stack import job_states, node_info, sbatch, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLURM_CONF = pathlib.Path("/etc/slurm/slurm.conf")


@pytest.fixture(scope="module")
def static_stack(stack):
    stack.set_membership("static")
    try:
        yield stack
    finally:
        stack.set_membership("dynamic")


def test_static_expand_declares_node_and_retire_removes_it(static_stack):
    stack = static_stack
    # a job on the bare-metal partition, queued across the slurmctld restart
    held = sbatch("-p", "batch", "--hold", script="true")

    ret = stack.run("vcluster.expand", "count=1", "profile=htc")
    assert ret.data["result"] is True, ret.data
    (name,) = ret.data["nodes"]
    assert f"NodeName={name} " in SLURM_CONF.read_text()
    info = node_info(name)
    assert info["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED"), info["State"]
    assert "DYNAMIC" not in info["State"]

    job = sbatch("-p", "htc", "-w", name, script="hostname")
    assert wait_jobs([job], timeout=120) == {job: "COMPLETED"}

    ret = stack.run("vcluster.retire", f"nodes={name}")
    assert ret.data["result"] is True, ret.data
    assert f"NodeName={name} " not in SLURM_CONF.read_text()
    assert node_info(name) is None
    # the held job survived two slurmctld restarts, untouched
    assert job_states([held]) == {held: "PENDING"}
    assert job_states([job]) == {job: "COMPLETED"}
    from tests.integration.stack import slurm

    slurm("scancel", held)
