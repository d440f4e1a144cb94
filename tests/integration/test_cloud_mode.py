"""Cloud membership end to end: Slurm's power saving drives vcluster.

Every pool name of a cloud profile is declared ``State=CLOUD``. A job
pending on the cloud partition makes slurmctld run ResumeProgram, which only
fires a Salt event through the controller's minion; the reactor creates
exactly that node, the node joins with the same states as every node, the
job runs, and after SuspendTime idle slurmctld runs SuspendProgram and the
node is removed everywhere. A node that never registers goes through
ResumeFailProgram: released and DOWN with a reason. Invalid power-saving
and autoscale input is refused with one sentence.
"""

import os
import subprocess
import time

import pytest
import yaml

from tests.integration.stack import REPO, job_states, live_jobs, node_info, sbatch, slurm, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: SuspendTime: what the idle tests wait before SuspendProgram runs. Short, but
#: well above the few seconds the tests look at a node between its job's end
#: and the assertions that it is still up.
SUSPEND_TIME = 15
#: SuspendTimeout: after it slurmctld shows a suspended node POWERED_DOWN (the
#: warm-pool test waits for that). vcluster's freeze or retire of an idle node
#: takes 1-2 s here; no test submits work in between.
SUSPEND_TIMEOUT = 10
RESUME_TIMEOUT = 150
#: The broken profile's join_timeout and its own ResumeTimeout (its partition's):
#: Slurm gives up sooner there. Its join fails about 8 s after the resume
#: (highstate without a munge key), well inside both; the test waits ResumeTimeout.
BROKEN_JOIN_TIMEOUT = 30
BROKEN_RESUME_TIMEOUT = 40


def _cloud_site(stack):
    base = stack.network["gateway"].rsplit(".", 1)[0]
    return {
        "vcluster": {
            "pools": {
                # the cloud profile owns its pool: every name is declared CLOUD
                "local": {"names": "tnode[01-08]", "addresses": f"{base}.100-{base}.107"},
                "spare": {"names": "tnode[09-16]", "addresses": f"{base}.108-{base}.115",
                          "gateway": stack.network["gateway"]},
            },
            "profiles": {
                "htc": {"join_timeout": 120},
                "mem": {"pool": "spare", "membership": "dynamic"},
                # never joins (no munge key for tbad*): the resume-fail path
                "broken": {"partition": "cloudfail", "join_timeout": BROKEN_JOIN_TIMEOUT,
                           "resume_timeout": BROKEN_RESUME_TIMEOUT},
            },
            "power_save": {"suspend_time": SUSPEND_TIME, "suspend_timeout": SUSPEND_TIMEOUT,
                           "resume_timeout": RESUME_TIMEOUT},
        },
        # slurmctld's power-saving thread looks at idle, powering-down and
        # powering-up nodes every power_save_interval seconds (10 by default):
        # every second here, so the tests wait SuspendTime, SuspendTimeout and
        # ResumeTimeout, not up to 10 s more each
        "slurm": {"config": {"SlurmctldParameters": f"{_default_ctld_params()},power_save_interval=1"}},
    }


def _default_ctld_params():
    defaults = yaml.safe_load((REPO / "salt" / "slurm" / "defaults.yaml").read_text())
    return defaults["slurm"]["config"]["SlurmctldParameters"]


@pytest.fixture(scope="module")
def cloud_stack(stack):
    saved = stack.site_extra
    stack.site_extra = _merge_copy(saved, _cloud_site(stack))
    stack.set_membership("cloud")
    try:
        yield stack
    finally:
        stack.site_extra = saved
        # CLOUD lines and power saving leave slurm.conf: the declared node set
        # changes, so slurm.controller restarts slurmctld (and waits for it)
        stack.set_membership("dynamic")
        _wait(lambda: subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP"),
              60, "slurmctld back")


def _merge_copy(base, extra):
    out = yaml.safe_load(yaml.safe_dump(base or {}))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_copy(out[key], value)
        else:
            out[key] = value
    return out


def _wait(predicate, timeout, what, interval=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def lxd_instances(prefix):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True, check=True)
    return sorted(n for n in out.stdout.split() if n.startswith(prefix))


def registry_state(stack, name):
    nodes = stack.run("vcluster.status").data["nodes"]
    return nodes.get(name, {}).get("state")


def job_nodes(job):
    out = slurm("squeue", "-h", "-j", job, "-o", "%N", "--states=all").strip()
    return out


def test_cloud_nodes_declared_with_power_saving(cloud_stack):
    info = node_info("tnode01")
    if info is None:
        cloud = cloud_stack.call("pillar.get", "vcluster_cloud").data
        conf = [ln for ln in open("/etc/slurm/slurm.conf", encoding="utf-8") if "CLOUD" in ln or "Suspend" in ln]
        raise AssertionError(f"tnode01 unknown to Slurm; controller pillar vcluster_cloud={cloud!r}; "
                             f"slurm.conf lines: {conf}")
    assert "CLOUD" in info["State"], info
    assert "htc" in info.get("AvailableFeatures", "")
    conf = open("/etc/slurm/slurm.conf", encoding="utf-8").read()
    assert "NodeName=tnode[01-08] CPUs=1 RealMemory=1024 Feature=virtual,htc State=CLOUD" in conf
    assert f"SuspendTime={SUSPEND_TIME}" in conf and f"ResumeTimeout={RESUME_TIMEOUT}" in conf
    assert f"SuspendExcNodes={cloud_stack.hostname}" in conf
    assert "power_save_interval=1" in slurm("scontrol", "show", "config")
    # the broken profile's own ResumeTimeout is its partition's, and slurmctld took it
    (part,) = [ln for ln in conf.splitlines() if ln.startswith("PartitionName=cloudfail ")]
    assert part.endswith(f" ResumeTimeout={BROKEN_RESUME_TIMEOUT}"), part
    assert "cloudfail" in slurm("sinfo", "-h", "-o", "%P")
    # the dynamic profile's pool is not declared
    assert node_info("tnode09") is None


def test_pending_job_resumes_node_runs_and_node_is_removed_after_idle(cloud_stack):
    stack = cloud_stack
    start, since = time.monotonic(), log_size()
    job = sbatch("-p", "htc", script="hostname; sleep 2")
    final = wait_jobs([job], states=("COMPLETED",), timeout=240)
    ran = time.monotonic() - start
    assert final == {job: "COMPLETED"}
    assert config_completed_by(job, since) == "prolog"
    name = job_nodes(job)
    assert name.startswith("tnode") and name <= "tnode08", name
    assert registry_state(stack, name) == "ready"
    assert lxd_instances(name) == [name]
    print(f"cloud resume: sbatch to COMPLETED in {ran:.0f} s")

    # idle for SuspendTime -> SuspendProgram -> instance, key and name released
    _wait(lambda: not lxd_instances(name), SUSPEND_TIME + 120, f"{name} to be removed after idling")
    _wait(lambda: registry_state(stack, name) is None, 30, f"{name} released in the registry")
    keys = stack.master.salt_key_cli().run("--list", "accepted", "--out", "json").data
    assert name not in keys.get("minions", [])
    info = node_info(name)
    assert info is not None and "CLOUD" in info["State"], info  # still declared, powered down
    assert job_states([job]) == {job: "COMPLETED"}


def slurmctld_log():
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    (path,) = [ln.split("=", 1)[1].strip() for ln in conf.splitlines() if ln.startswith("SlurmctldLogFile")]
    return path


def log_size():
    return os.path.getsize(slurmctld_log())


def config_completed_by(job, since):
    """How slurmctld completed ``job``'s configuration, from its log after
    byte ``since``: "prolog" or "periodic check".

    A job on nodes Slurm powers up stays CONFIGURING until the nodes
    registered; vcluster's PrologSlurmctld waits for that, so its end
    completes the configuration at once ("prolog"), not slurmctld's 30 s
    periodic check.
    """
    with open(slurmctld_log(), errors="replace") as log:
        log.seek(since)
        text = log.read()
    if f"prolog_running_decr: Configuration for JobId={job} is complete" in text:
        return "prolog"
    if f"job_time_limit: Configuration for JobId={job} complete" in text:
        return "periodic check"
    return None


def _running(job):
    return job_states([job]).get(job) in ("RUNNING", "COMPLETING", "COMPLETED")


def test_warm_pool_keeps_node_frozen_and_resumes_it(cloud_stack):
    stack = cloud_stack
    saved = stack.site_extra
    stack.site_extra = _merge_copy(saved, {"vcluster": {"autoscale": {"profiles": {"htc": {"warm_pool": 1}}}}})
    stack.write_site_pillar()  # policy only: slurm.conf does not change
    name = None
    try:
        start, since = time.monotonic(), log_size()
        job = sbatch("-p", "htc", script="hostname")
        _wait(lambda: _running(job), 240, f"job {job} running on a cold node")
        cold = time.monotonic() - start
        name = job_nodes(job)
        wait_jobs([job], timeout=60)
        # idle for SuspendTime -> SuspendProgram -> frozen, not deleted
        _wait(lambda: registry_state(stack, name) == "suspended", SUSPEND_TIME + 120, f"{name} in the warm pool")
        assert lxd_instances(name) == [name]
        status = subprocess.run(["lxc", "info", name], capture_output=True, text=True, check=True).stdout
        assert "FROZEN" in status.upper(), status
        _wait(lambda: "POWERED_DOWN" in (node_info(name) or {}).get("State", ""), 120, f"{name} powered down")
        start = time.monotonic()
        job2 = sbatch("-p", "htc", "-w", name, script="hostname")
        _wait(lambda: _running(job2), 120, f"job {job2} running on the warm node")
        warm = time.monotonic() - start
        assert wait_jobs([job2], timeout=60) == {job2: "COMPLETED"}
        assert config_completed_by(job, since) == config_completed_by(job2, since) == "prolog"
        assert registry_state(stack, name) == "ready"
        print(f"sbatch to RUNNING: cold pool {cold:.1f} s, warm pool {warm:.1f} s")
    finally:
        stack.site_extra = saved
        stack.write_site_pillar()
        if name and registry_state(stack, name) == "suspended":
            stack.run("vcluster.on_slurm_power", "action=resume", f"nodes={name}", f"sender={stack.controller_id}")
        if name and registry_state(stack, name) == "ready":
            stack.run("vcluster.retire", f"nodes={name}", "force=True")
        _wait(lambda: not lxd_instances("tnode"), 120, "no cloud instance left")


def test_resume_fail_releases_node_and_sets_it_down(cloud_stack):
    stack = cloud_stack
    job = sbatch("-p", "cloudfail", script="hostname")
    name = _wait(lambda: job_nodes(job) or None, 60, "the job to get a cloud node")
    assert name.startswith("tbad"), name
    # the node cannot join (no munge key): vcluster releases it at once ...
    _wait(lambda: registry_state(stack, name) is None and not lxd_instances("tbad"), 180,
          f"{name} to fail its join and be released")
    # ... and after ResumeTimeout, ResumeFailProgram sets it DOWN with the reason
    info = _wait(lambda: (lambda i: i if i and "DOWN" in i["State"] and "vcluster" in i.get("Reason", "")
                          else None)(node_info(name)), BROKEN_RESUME_TIMEOUT + 90, f"{name} DOWN with a vcluster reason")
    assert "resume failed" in info["Reason"], info
    # the job is not lost: Slurm requeued it (pending again; sacct shows the failed run as
    # NODE_FAIL until the new record is written, so slurmctld is asked) or still holds it
    live = live_jobs([job])
    assert live.get(job) in ("PENDING", "CONFIGURING", "REQUEUED", "COMPLETING"), live
    slurm("scancel", job)
    slurm("scontrol", "update", f"nodename={name}", "state=RESUME", check=False)


def test_power_event_from_other_minion_is_ignored(cloud_stack):
    stack = cloud_stack
    ret = stack.run("vcluster.on_slurm_power", "action=resume", "nodes=tnode05", "sender=tnode03")
    assert ret.data["result"] is False and ret.data.get("ignored") is True, ret.data
    assert "not from 'tnode03'" in ret.data["comment"]
    assert lxd_instances("tnode05") == []
    assert registry_state(stack, "tnode05") is None


def test_invalid_power_event_refused(cloud_stack):
    stack = cloud_stack
    ret = stack.run("vcluster.on_slurm_power", "action=explode", "nodes=tnode05",
                    f"sender={stack.controller_id}")
    assert ret.returncode != 0
    assert ret.data["comment"] == "action must be one of resume, suspend, resume_fail, got 'explode'"
    ret = stack.run("vcluster.on_slurm_power", "action=resume", "nodes=tnode[05", f"sender={stack.controller_id}")
    assert ret.returncode != 0 and "hostlist" in ret.data["comment"], ret.data


@pytest.mark.parametrize("section, bad, message", [
    ({"power_save": {"suspend_time": "soon"}}, None,
     "vcluster:power_save:suspend_time must be a positive integer, got 'soon'"),
    ({"power_save": {"resume_timeout": 90}}, None,
     "vcluster:power_save:resume_timeout must exceed the join_timeout of cloud profile 'htc' (120 s), got 90"),
    ({"autoscale": {"profiles": {"htc": {"warm_pool": -1}}}}, None,
     "vcluster:autoscale:profiles:htc:warm_pool must be a whole number, zero or more, got -1"),
    ({"autoscale": {"interval": "1m"}}, None,
     "vcluster:autoscale:interval must be a positive integer, got '1m'"),
])
def test_invalid_power_save_and_autoscale_refused(cloud_stack, section, bad, message):
    stack = cloud_stack
    saved = stack.site_extra
    stack.site_extra = _merge_copy(saved, {"vcluster": section})
    stack.write_site_pillar()
    try:
        ret = stack.run("vcluster.autoscale")
        assert ret.returncode != 0
        assert ret.data["comment"] == message, ret.data
        # the controller's slurm.conf state refuses the same policy, file untouched
        before = open("/etc/slurm/slurm.conf", encoding="utf-8").read()
        ret = stack.master.salt_cli(timeout=300).run("state.apply", "slurm.config", minion_tgt=stack.controller_id,
                                                     _timeout=300)
        assert ret.returncode != 0
        assert message in ret.stdout
        assert open("/etc/slurm/slurm.conf", encoding="utf-8").read() == before
    finally:
        stack.site_extra = saved
        stack.write_site_pillar()
