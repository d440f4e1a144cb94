"""Preemption asks Slurm only about the nodes concerned, never for every job.

On each start event: the job itself (``scontrol show job``), then the jobs
on the victims; on each end event: one call, the jobs on the hosts of the
nodes it preempted (the job itself among them while it holds them; the job
is asked for alone only when the line names no node); reconcile's check:
the jobs on the victims' hosts.
The fakes of test_suspend record every ``jobs`` listing with its node
filter; the one behind them on the controller (``Slurm.jobs_on``, squeue
``--nodelist``) is run on a real slurmctld in
tests/functional/test_slurm_jobs_on.py.
"""

import pytest

from tests.unit.test_suspend import PREEMPTION, env  # noqa: F401
from vcluster import preempt, reconcile


@pytest.fixture
def listing(env):  # noqa: F811
    """A preemption context whose Slurm records each ``jobs`` call's ``nodes``."""

    def make(extra=None):
        ctx = env({**PREEMPTION, **(extra or {})})
        fake, asked = ctx.slurm, []
        original = fake.jobs

        def jobs(nodes=None):
            asked.append(sorted(nodes) if nodes else None)
            return original(nodes=nodes)

        fake.jobs = jobs
        fake.asked = asked
        original_job = fake.job

        def job(job_id):
            asked.append(("job", str(job_id)))
            return original_job(job_id)

        fake.job = job
        # many jobs elsewhere in the cluster: none of them is listed
        for i in range(100, 140):
            fake.jobs_[i] = {"id": i, "state": "RUNNING", "nodes": [f"other{i}"], "partition": "batch"}
        return ctx

    return make


def test_start_and_end_events_list_only_the_nodes_concerned(listing):
    ctx = listing()
    ctx.slurm.jobs_[5] = {"id": 5, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    ctx.slurm.jobs_[6] = {"id": 6, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    ret = preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 start job=6 partition=batch nodes=h1")
    assert ret["result"] is True and ctx.slurm.jobs_[5]["state"] == "SUSPENDED", ret
    assert ctx.slurm.asked == [("job", "6"), ["vn1", "vn2", "vn3"]]

    ctx.slurm.asked.clear()
    ctx.slurm.jobs_[6]["state"] = "COMPLETING"
    ret = preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 end job=6 partition=batch nodes=h1")
    assert ret["result"] is True and ctx.slurm.jobs_[5]["state"] == "RUNNING", ret
    assert ctx.slurm.asked == [["h1"]]  # one listing, of the hosts of the nodes to resume, before any resume


def test_an_end_line_of_a_job_still_running_resumes_nothing(listing):
    """A stale or forged end line: the job is listed on its host, still RUNNING; its victims stay."""
    ctx = listing()
    ctx.slurm.jobs_[5] = {"id": 5, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    ctx.slurm.jobs_[6] = {"id": 6, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    assert preempt.job_started(ctx, 6)["result"] is True
    ctx.slurm.asked.clear()
    ret = preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 end job=6 partition=batch nodes=h1")
    assert ret["ignored"] is True and ret["comment"] == "job 6 is still RUNNING", ret
    assert {n.state for n in ctx.registry.nodes()} == {"suspended"} and ctx.slurm.jobs_[5]["state"] == "SUSPENDED"
    assert ctx.slurm.asked == [["h1"]]
    # a line naming no node: the job is asked for where it ran
    ctx.slurm.asked.clear()
    ret = preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 end job=6 partition=batch")
    assert ret["ignored"] is True and ctx.slurm.asked == [("job", "6"), ["h1"]], ret


def test_a_host_behind_another_slurm_name_is_asked_by_that_name(listing):
    ctx = listing({"preemption": {**PREEMPTION["preemption"], "hypervisors": {"bm07": "h1"}}})
    ctx.slurm.nodes_["bm07"] = {"state": ["IDLE"], "reason": ""}
    ctx.slurm.jobs_[6] = {"id": 6, "state": "RUNNING", "nodes": ["bm07"], "partition": "batch"}
    assert preempt.job_started(ctx, 6)["result"] is True
    assert {n.state for n in ctx.registry.nodes()} == {"suspended"}
    ctx.slurm.asked.clear()
    del ctx.slurm.jobs_[6]
    ret = preempt.job_ended(ctx, 6, ["bm07"])
    assert {n.state for n in ctx.registry.nodes()} == {"ready"}, ret
    assert ctx.slurm.asked == [["bm07"]]
    assert preempt.slurm_nodes_of(ctx.policy, {"h1", "h9"}) == ["bm07", "h9"]


def test_reconcile_lists_only_the_victims_hosts(listing):
    ctx = listing()
    ctx.slurm.jobs_[6] = {"id": 6, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    assert preempt.job_started(ctx, 6)["result"] is True
    ctx.slurm.asked.clear()
    assert reconcile.reconcile(ctx)["report"]["preemption_over"] == []  # job 6 still holds h1
    assert ctx.slurm.asked == [["h1"]]
    del ctx.slurm.jobs_[6]
    over = reconcile.reconcile(ctx)["report"]["preemption_over"]
    assert [(o["job"], o["job_state"]) for o in over] == [("6", "gone")]
