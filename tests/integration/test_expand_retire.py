"""Expand and retire end to end: real master, reactor, Slurm, LXD nodes.

``salt-run vcluster.expand`` creates containers; their minions start with
pre-accepted keys; the reactor highstates them and they join Slurm; jobs run
on them; ``vcluster.retire`` removes them and every trace of them.
"""

import subprocess

import pytest

from tests.integration.stack import assert_not_requeued, job_states, node_info, sbatch, slurm, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def lxd_instances(prefix="tnode"):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True, check=True)
    return sorted(n for n in out.stdout.split() if n.startswith(prefix))


def accepted_keys(stack):
    ret = stack.master.salt_key_cli().run("--list", "accepted", "--out", "json")
    return set(ret.data.get("minions", [])) if isinstance(ret.data, dict) else set()


def test_expand_runs_jobs_and_retire_leaves_nothing(stack):
    ret = stack.run("vcluster.expand", "count=2", "profile=htc")
    assert ret.returncode == 0, ret.stdout
    assert ret.data["result"] is True, ret.data
    names = sorted(ret.data["nodes"])
    assert len(names) == 2
    for name in names:
        assert ret.data["nodes"][name]["state"] == "ready"
        info = node_info(name)
        assert info is not None, f"{name} not in Slurm"
        assert info["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED"), info["State"]
        assert "htc" in info.get("AvailableFeatures", "")
    assert set(names) <= accepted_keys(stack)
    assert lxd_instances() == names

    # status agrees with Slurm
    status = stack.run("vcluster.status").data
    assert sorted(status["nodes"]) == names
    assert all(status["nodes"][n]["state"] == "ready" for n in names)

    # jobs run on the new nodes and all complete
    jobs = [sbatch("-p", "htc", "-w", name) for name in names for _ in range(2)]
    final = wait_jobs(jobs, timeout=180)
    assert set(final.values()) == {"COMPLETED"}

    ret = stack.run("vcluster.retire", f"nodes={','.join(names)}")
    assert ret.returncode == 0, ret.stdout
    assert ret.data["result"] is True, ret.data
    assert all(v == "released" for v in ret.data["nodes"].values())

    assert lxd_instances() == []
    assert not set(names) & accepted_keys(stack)
    for name in names:
        assert node_info(name) is None
    assert stack.run("vcluster.status").data["nodes"] == {}
    # no job was lost: every job submitted still shows COMPLETED in sacct, none requeued
    assert job_states(jobs) == final
    assert_not_requeued(jobs)


def test_retire_waits_for_running_job(stack):
    ret = stack.run("vcluster.expand", "count=1", "profile=htc")
    assert ret.data["result"] is True, ret.data
    (name,) = ret.data["nodes"]
    job = sbatch("-p", "htc", "-w", name, script="sleep 8; echo done")
    wait_jobs([job], states=("RUNNING",), timeout=60)

    ret = stack.run("vcluster.retire", f"nodes={name}", "wait=120")
    assert ret.data["result"] is True, ret.data
    # the job was waited for, not killed or requeued
    assert job_states([job]) == {job: "COMPLETED"}
    assert_not_requeued([job])
    assert node_info(name) is None
    assert lxd_instances() == []


def test_sinfo_shows_bare_metal_node(stack):
    out = slurm("sinfo", "-h", "-N", "-o", "%N %P")
    assert stack.hostname in out
