"""Calls started on the controller's minion now and collected later (the join's early wait).

Real components: the stack's salt-master, the controller's minion and its
``slurm`` module, the host's slurmctld. The node waited for is a real Slurm
node, made with ``scontrol create`` while the wait runs.
"""

import time

import pytest
import salt.config

from tests.integration.stack import sbatch, slurm
from vcluster import saltlink
from vcluster.errors import SlurmError

pytestmark = [pytest.mark.integration]

NODE = "tnode16"  # a pool name no other test of this module uses


@pytest.fixture
def ctx(stack):
    c = saltlink.context(salt.config.master_config(stack.master.config_file), actor="test")
    yield c
    c.close()
    slurm("scontrol", "delete", f"nodename={NODE}", check=False)


def create_node():
    slurm("scontrol", "create", f"NodeName={NODE}", "CPUs=1", "RealMemory=100", "State=FUTURE")


def running_waits(stack):
    jobs = stack.call("saltutil.running").data or []
    return [j for j in jobs if j.get("fun") == "slurm.wait_node_state" and NODE in j.get("arg", [])]


def test_answer_is_collected_after_other_calls_on_the_same_client(stack, ctx):
    pending = ctx.slurm.watch_node_state(NODE, ["FUTURE"], timeout=60, interval=0.2)
    assert NODE not in {n["name"] for n in ctx.slurm.nodes()}  # another call on the same client
    create_node()
    deadline = time.monotonic() + 30
    while running_waits(stack):  # the controller saw the node and returned, while nobody listened
        assert time.monotonic() < deadline, "the wait did not end on the controller"
        time.sleep(0.5)
    assert ctx.slurm.nodes()  # and more traffic on the client before the collection
    assert pending.result() == ["FUTURE"]
    pending.cancel()  # collected: a no-op
    assert running_waits(stack) == []


def test_a_call_lost_on_the_controller_is_made_again(stack, ctx, caplog):
    pending = ctx.slurm.watch_node_state(NODE, ["FUTURE"], timeout=60, interval=0.2)
    # a wait the minion never answers: killed there (as one published while the
    # minion reconnected is never run)
    deadline = time.monotonic() + 30
    while not running_waits(stack):
        assert time.monotonic() < deadline, "the wait never ran on the controller"
        time.sleep(0.2)
    stack.call("saltutil.kill_job", pending.jid)
    while running_waits(stack):
        assert time.monotonic() < deadline, "the wait was not killed"
        time.sleep(0.2)
    create_node()
    assert pending.result() == ["FUTURE"]
    assert "returned nothing for slurm.wait_node_state" in caplog.text


def test_a_cancelled_wait_is_gone_from_the_controller(stack, ctx):
    pending = ctx.slurm.watch_node_state(NODE, ["FUTURE"], timeout=60, interval=0.2)
    deadline = time.monotonic() + 30
    while not running_waits(stack):
        assert time.monotonic() < deadline, "the wait never ran on the controller"
        time.sleep(0.2)
    pending.cancel()
    while running_waits(stack):
        assert time.monotonic() < deadline, "the cancelled wait still runs"
        time.sleep(0.2)


def test_a_nodes_address_and_a_jobs_own_reservation_go_through_the_slurm_module(stack, ctx):
    """ControllerSlurm's update_node_addr / reserve_for_job / delete_reservation: the controller's module, no cmd.run."""
    create_node()
    assert ctx.slurm.update_node_addr(NODE, "10.78.0.250") is True
    assert {n["name"]: n for n in ctx.slurm.nodes()}[NODE]["addr"] == "10.78.0.250"
    # the module's refusal as the minion returns it (Salt puts "ERROR: " before a CommandExecutionError)
    with pytest.raises(SlurmError, match=rf"^Slurm did not take the new address 10\.0\.0\.1 x of {NODE}: "
                                         r"ERROR: node address '10\.0\.0\.1 x' is invalid: use an IP address "
                                         r"or a host name$"):
        ctx.slurm.update_node_addr(NODE, "10.0.0.1 x")
    host = stack.hostname  # the bare-metal node: the held job runs there once released into its reservation
    job = sbatch("--hold", "-w", host, script="true")
    try:
        assert ctx.slurm.reserve_for_job(job, [host], "root") == {"reservation": f"vcjob{job}", "nodes": [host]}
        shown = slurm("scontrol", "show", "-o", "reservation", f"vcjob{job}")
        assert f"Nodes={host} " in shown and "Users=root " in shown
        deadline = time.monotonic() + 60
        while ctx.slurm.job(job) and ctx.slurm.job(job)["state"] == "PENDING":
            assert time.monotonic() < deadline, ctx.slurm.job(job)
            time.sleep(0.5)
        assert ctx.slurm.delete_reservation(f"vcjob{job}") is True
        with pytest.raises(SlurmError, match=f"^ERROR: scontrol delete ReservationName=vcjob{job} failed: delete_reservation "
                                             f"ReservationName=vcjob{job}: Requested reservation is invalid$"):
            ctx.slurm.delete_reservation(f"vcjob{job}")
    finally:
        slurm("scancel", job, check=False)
        slurm("scontrol", "delete", f"ReservationName=vcjob{job}", check=False)
