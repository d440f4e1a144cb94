"""``slurm_node`` states through Salt's loader against a real harness slurmctld, test=True and not."""

import pytest

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture
def states(slurm_loaders):
    return slurm_loaders.states.slurm_node


@pytest.fixture
def slurm(slurm_loaders):
    return slurm_loaders.modules.slurm


def test_state_module_loads_with_execution_module(slurm_loaders):
    assert "slurm_node.drained" in slurm_loaders.states


def test_drained_test_mode_changes_nothing(states, slurm, slurm_node):
    name = slurm_node()
    ret = states.drained(name=name, reason="retire", test=True)
    assert ret.result is None
    assert ret.changes == {"old": {"state": "IDLE", "reason": ""},
                           "new": {"state": "drained", "reason": "retire"}}
    assert slurm.node(name)["state"] == ["IDLE"]


def test_drained_then_idempotent_then_new_reason(states, slurm, slurm_node):
    name = slurm_node()
    ret = states.drained(name=name, reason="retire")
    assert ret.result is True
    assert ret.changes == {"old": {"state": "IDLE", "reason": ""},
                           "new": {"state": "IDLE+DRAIN", "reason": "retire"}}
    assert ret.comment == f"node {name} drained"

    again = states.drained(name=name, reason="retire")
    assert again.result is True and again.changes == {}
    assert again.comment == f"node {name} is already drained (IDLE+DRAIN): retire"

    again_test = states.drained(name=name, reason="retire", test=True)
    assert again_test.result is True and again_test.changes == {}

    other = states.drained(name=name, reason="maintenance")
    assert other.result is True and other.changes["new"]["reason"] == "maintenance"


def test_drained_busy_node_is_draining(states, slurm, slurm_cluster, slurm_node):
    name = slurm_node()
    jobid = slurm.submit(wrap="sleep 300", nodelist=name, output="/dev/null", mem=10)
    slurm_cluster.wait_job(jobid, ("RUNNING",))
    ret = states.drained(name=name, reason="retire")
    assert ret.result is True and ret.changes["new"]["state"] == "ALLOCATED+DRAIN"
    assert ret.comment == f"node {name} is draining: jobs still run on it"


def test_resumed_both_modes(states, slurm, slurm_node):
    name = slurm_node()
    slurm.update_node(name, state="down", reason="functional")

    ret = states.resumed(name=name, test=True)
    assert ret.result is None
    assert ret.changes == {"old": "DOWN", "new": "resumed"}
    assert slurm.node(name)["state"][0] == "DOWN"

    ret = states.resumed(name=name)
    assert ret.result is True
    assert ret.changes["old"] == "DOWN" and ret.changes["new"].startswith("IDLE")
    slurm.wait_node_state(name, "IDLE", timeout=120)

    again = states.resumed(name=name)
    assert again.result is True and again.changes == {}
    assert again.comment == f"node {name} is already resumed (IDLE)"
    assert states.resumed(name=name, test=True).changes == {}


def test_resumed_unknown_node_fails(states):
    ret = states.resumed(name="nosuchnode")
    assert ret.result is False and ret.comment == "Slurm does not know node nosuchnode"


def test_absent_both_modes(states, slurm, slurm_cluster, slurm_node):
    name = slurm_node()
    slurm_cluster.stop_slurmd(name)  # a live slurmd -Z would register the node again

    ret = states.absent(name=name, test=True)
    assert ret.result is None and ret.changes == {"old": "IDLE", "new": None}
    assert slurm.node(name) is not None

    ret = states.absent(name=name)
    assert ret.result is True and ret.changes == {"old": "IDLE", "new": None}
    assert slurm.node(name) is None

    again = states.absent(name=name)
    assert again.result is True and again.changes == {}
    assert states.absent(name=name, test=True).result is True


def test_absent_refused_while_busy(states, slurm, slurm_cluster, slurm_node):
    name = slurm_node()
    jobid = slurm.submit(wrap="sleep 300", nodelist=name, output="/dev/null", mem=10)
    slurm_cluster.wait_job(jobid, ("RUNNING",))
    ret = states.absent(name=name)
    assert ret.result is False and ret.changes == {}
    assert "Requested nodes are busy" in ret.comment
