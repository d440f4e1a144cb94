"""The job state groups every module uses (vcluster.slurm.states), against Slurm's own words."""

import pytest

from vcluster.slurm import states

#: Base states of a finished job (src/common/slurm_protocol_defs.c, job_state_string)
FINISHED = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
            "OUT_OF_MEMORY", "REVOKED")


def test_a_job_on_its_nodes_is_not_done_and_finished_jobs_are_in_neither_group():
    assert set(states.JOB_ON_NODES) < set(states.JOB_NOT_DONE)
    assert not set(FINISHED) & set(states.JOB_NOT_DONE)
    assert "PENDING" not in states.JOB_ON_NODES


@pytest.mark.parametrize("words, group", [
    (["RUNNING"], "on nodes"),
    (["RUNNING", "SIGNALING"], "on nodes"),  # a job being signalled still runs on its nodes
    (["RUNNING", "STAGE_OUT"], "on nodes"),
    (["CANCELLED", "COMPLETING"], "on nodes"),  # its epilog still runs there
    (["PENDING", "REQUEUED"], "waiting"),
    (["PENDING", "REQUEUE_HOLD"], "waiting"),
    (["PENDING"], "waiting"),
    (["COMPLETED"], "done"),
    (["NODE_FAIL"], "done"),
])
def test_every_word_scontrol_shows_falls_in_one_group(words, group):
    word = states.job_state(words)
    found = ("on nodes" if word in states.JOB_ON_NODES else
             "waiting" if word in states.JOB_NOT_DONE else "done")
    assert found == group, word
