"""The ``slurm`` execution module through Salt's loader, against a real harness slurmctld."""

import importlib.util

import pytest
from salt.exceptions import CommandExecutionError

from tests.harness.slurm import wait_for

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture
def slurm(slurm_loaders):
    return slurm_loaders.modules.slurm


def test_nodes_lists_a_dynamic_node(slurm, slurm_cluster, slurm_node):
    name = slurm_node(cpus=2, memory=700, features=["virtual", "htc"])
    nodes = {n["name"]: n for n in slurm.nodes()}
    node = nodes[name]
    assert node["state"] == ["IDLE"] and node["dynamic"] is True
    assert (node["cpus"], node["memory"], node["features"]) == (2, 700, ["virtual", "htc"])
    assert node["addr"] == slurm_cluster.nodes[name].address
    assert node["partitions"] == ["batch"]
    assert slurm.node(name) == node
    assert [n["name"] for n in slurm.nodes(names=name)] == [name]


def test_node_unknown_is_none(slurm):
    assert slurm.node("nosuchnode") is None


def test_conf_argument_overrides_config(slurm, slurm_cluster, slurm_node, tmp_path):
    name = slurm_node()
    assert slurm.node(name, conf=slurm_cluster.conf)["name"] == name
    broken = tmp_path / "slurm.conf"
    broken.write_text("ClusterName=x\nBogusKey=1\n")
    # the first command with a conf is scontrol --version (read once per context)
    with pytest.raises(CommandExecutionError, match="scontrol --version failed: .*unrecognized key: BogusKey"):
        slurm.node(name, conf=str(broken))


def test_drain_wait_resume(slurm, slurm_node):
    name = slurm_node()
    after = slurm.update_node(name, state="drain", reason="functional test")
    assert after["state"] == ["IDLE", "DRAIN"] and after["reason"] == "functional test"
    assert slurm.wait_node_state(name, "DRAINED", timeout=60) == ["IDLE", "DRAIN"]
    # measured: resume leaves the node NOT_RESPONDING until slurmctld pings it (< 1 s here)
    assert slurm.update_node(name, state="resume")["state"][0] == "IDLE"
    assert slurm.wait_node_state(name, "IDLE,MIXED", timeout=60) == ["IDLE"]


def test_update_errors_are_one_sentence(slurm, slurm_node):
    name = slurm_node()
    with pytest.raises(CommandExecutionError, match=f"setting node {name} to DRAIN needs a reason"):
        slurm.update_node(name, state="drain")
    with pytest.raises(CommandExecutionError, match="Invalid node state specified"):
        slurm.update_node(name, state="resume")  # an idle node cannot be resumed


def test_wait_node_state_times_out(slurm, slurm_node):
    name = slurm_node()
    with pytest.raises(CommandExecutionError, match=f"node {name} is not DOWN after 1.0 s: it is IDLE"):
        slurm.wait_node_state(name, "DOWN", timeout=1, interval=0.2)


def test_jobs_submit_suspend_resume_requeue(slurm, slurm_cluster, slurm_node):
    name = slurm_node()
    jobid = slurm.submit(wrap="sleep 300", nodelist=name, job_name="fmod",
                         output="/dev/null", mem=50)
    slurm_cluster.wait_job(jobid, ("RUNNING",))
    assert slurm.job(jobid)["state"] == "RUNNING"
    on_node = slurm.jobs(nodes=name)
    assert [(j["id"], j["name"], j["nodes"]) for j in on_node] == [(jobid, "fmod", [name])]
    assert slurm.job_count(nodes=name) == 1
    assert slurm.jobs(nodes=name, states="PENDING") == []

    assert slurm.suspend_job(jobid) is True
    assert slurm.job(jobid)["state"] == "SUSPENDED"
    assert slurm.node(name)["state"] == ["IDLE"]  # measured: a suspended job leaves its node idle
    assert slurm.resume_job(jobid) is True
    assert slurm.job(jobid)["state"] == "RUNNING"

    assert slurm.requeue(jobid) is True
    wait_for(lambda: slurm.job(jobid)["state"] in ("PENDING", "RUNNING", "CONFIGURING"), 30,
             "the requeued job to be back")
    slurm_cluster.cancel_all(nodes=[name])
    assert slurm.job_count(nodes=name) == 0


def test_hold_and_release_node_in_one_call_each(slurm, slurm_cluster, slurm_node):
    name = slurm_node()
    jobid = slurm.submit(wrap="sleep 300", nodelist=name, job_name="hold", output="/dev/null", mem=50)
    slurm_cluster.wait_job(jobid, ("RUNNING",))
    assert slurm.hold_node(name, jobs=str(jobid)) == {"drained": True, "suspended": [str(jobid)]}
    assert slurm.job(jobid)["state"] == "SUSPENDED"
    node = slurm.node(name)
    assert "DRAIN" in node["state"] and node["reason"] == "vcluster suspend"
    with pytest.raises(CommandExecutionError, match="node nosuchnode is not known to Slurm"):
        slurm.hold_node("nosuchnode", jobs=str(jobid))
    assert slurm.release_node(name, jobs=[jobid]) == {"resumed": [str(jobid)], "undrained": True}
    assert slurm.job(jobid)["state"] == "RUNNING"
    assert "DRAIN" not in slurm.node(name)["state"]
    # a failing step undoes the call: the drain it set is lifted again
    with pytest.raises(CommandExecutionError, match="scontrol suspend 987654 failed"):
        slurm.hold_node(name, jobs="987654")
    assert "DRAIN" not in slurm.node(name)["state"]
    slurm_cluster.cancel_all(nodes=[name])


def test_update_node_addr_moves_the_node_and_back(slurm, slurm_cluster, slurm_node):
    name = slurm_node()
    home = slurm.node(name)["addr"]
    assert slurm.update_node_addr(name, "10.231.255.254") is True
    assert slurm.node(name)["addr"] == "10.231.255.254"
    assert slurm.update_node_addr(name, home) is True
    assert slurm.node(name)["addr"] == home
    with pytest.raises(CommandExecutionError, match=r"^node address '10\.0\.0\.1 state=down' is invalid"):
        slurm.update_node_addr(name, "10.0.0.1 state=down")
    with pytest.raises(CommandExecutionError, match="^scontrol update nodename=nosuchnode failed: "):
        slurm.update_node_addr("nosuchnode", "10.231.255.253")


def test_reserve_for_job_runs_the_held_job_on_its_own_node(slurm, slurm_cluster, slurm_node):
    name = slurm_node()
    jobid = slurm_cluster.sbatch(wrap="sleep 300", hold=True, mem=50, name="perjob")
    assert slurm.job(jobid)["reason"] == "JobHeldUser"
    assert slurm.reserve_for_job(jobid, nodes=name, user="root") == {"reservation": f"vcjob{jobid}",
                                                                     "nodes": [name]}
    slurm_cluster.wait_job(jobid, ("RUNNING",))
    assert slurm.job(jobid)["nodes"] == [name]
    shown = slurm_cluster.scontrol("show", "-o", "reservation", f"vcjob{jobid}")
    assert f"Nodes={name} " in shown and "Users=root " in shown and "IGNORE_JOBS" in shown
    slurm_cluster.cancel_all(nodes=[name])
    assert slurm.delete_reservation(f"vcjob{jobid}") is True
    with pytest.raises(CommandExecutionError, match=f"^scontrol delete ReservationName=vcjob{jobid} failed: "):
        slurm.delete_reservation(f"vcjob{jobid}")
    # a step Slurm refuses stops the call with Slurm's words
    with pytest.raises(CommandExecutionError, match="^scontrol create reservation failed: "):
        slurm.reserve_for_job(987654, nodes=name, user="nosuchuser")


def test_job_unknown_is_none(slurm):
    assert slurm.job(987654) is None


def test_create_future_node_then_slurmd_registers(slurm, slurm_cluster):
    name = "tfut1"
    addr = slurm_cluster.reserve_address(name)
    try:
        node = slurm.create_node(name, spec={"cpus": 1, "memory": 300, "features": ["virtual", "pre"]},
                                 addr=addr)
        assert node["state"] == ["FUTURE"] and node["addr"] == addr
        with pytest.raises(CommandExecutionError, match=f"node {name} already exists in Slurm"):
            slurm.create_node(name, node_conf="CPUs=1 RealMemory=300")
        # slurmd -Z without --conf: the controller's definition is used
        slurm_cluster.add_node(name, conf=False, wait_idle=False)
        assert slurm.wait_node_state(name, "IDLE", timeout=120) == ["IDLE"]
        assert slurm.node(name)["features"] == ["virtual", "pre"]

        jobid = slurm.submit(wrap="sleep 300", nodelist=name, output="/dev/null", mem=10)
        slurm_cluster.wait_job(jobid, ("RUNNING",))
        with pytest.raises(CommandExecutionError, match="Requested nodes are busy"):
            slurm.delete_node(name)
        slurm_cluster.cancel_all(nodes=[name])
        slurm_cluster.stop_slurmd(name)
        assert slurm.delete_node(name) is True
        assert slurm.wait_node_state(name, "ABSENT", timeout=60) == []
    finally:
        slurm_cluster.remove_node(name)


def test_delete_unknown_node_says_so(slurm):
    with pytest.raises(CommandExecutionError, match="Invalid node name specified"):
        slurm.delete_node("nosuchnode")


def test_partitions(slurm):
    parts = {p["name"]: p for p in slurm.partitions()}
    assert parts["batch"]["default"] is True and parts["batch"]["state"] == "UP"


def test_reconfigure(slurm):
    assert slurm.reconfigure() is True


def test_virtual_refuses_without_scontrol(monkeypatch, repo_root):
    spec = importlib.util.spec_from_file_location("slurm_mod_under_test", repo_root / "_modules" / "slurm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod.salt.utils.path, "which", lambda name: None)
    assert mod.__virtual__() == (False, "the slurm module needs Slurm's scontrol on PATH")
