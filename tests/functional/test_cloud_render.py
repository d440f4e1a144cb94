"""Cloud membership in the state tree: State=CLOUD declarations, power saving,
the power programs and their sudo rule (rendered with salt-call --local)."""

import copy
import os

import pytest

from tests.functional.test_states_render import HOST, ROLES, _conf_lines, sandbox, tmp_root  # noqa: F401

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="salt-call --local sandboxes need root")]

CLOUD = {
    "profiles": {
        "htc": {"nodes": "vnode[001-016]", "cpus": 1, "memory": 1024, "features": ["virtual", "htc"],
                "partition": "htc"},
        "burst": {"nodes": "burst[1-4]", "cpus": 4, "memory": 4096, "features": ["virtual", "burst"],
                  "partition": "cloud"},
    },
    "power_save": {"suspend_time": 120, "suspend_timeout": 60, "resume_timeout": 400, "resume_rate": 10,
                   "suspend_rate": 0, "exclude_nodes": "spare1", "exclude_partitions": ["batch"]},
}


def _site(**extra):
    site = copy.deepcopy(ROLES["controller"]["site"])
    site["slurm"]["membership"] = "cloud"
    site["slurm"]["partitions"] = {"htc": {"feature": "htc", "options": {"State": "UP"}}}
    site.update(extra)
    return site


def test_cloud_nodes_and_power_saving_rendered(sandbox, tmp_root):  # noqa: F811
    box = sandbox("controller", site=_site(vcluster_cloud=CLOUD))
    lines = _conf_lines(box.render_template("slurm/files/slurm.conf.jinja", tmp_root / "cloud.conf"))
    assert "NodeName=vnode[001-016] CPUs=1 RealMemory=1024 Feature=virtual,htc State=CLOUD" in lines
    assert "NodeName=burst[1-4] CPUs=4 RealMemory=4096 Feature=virtual,burst State=CLOUD" in lines
    # the profile's partition: an existing one gets the hostlist, a new one is made
    assert any(ln.startswith("PartitionName=htc Nodes=ns_htc,vnode[001-016] ") for ln in lines), lines
    assert "PartitionName=cloud Nodes=burst[1-4] State=UP MaxTime=INFINITE" in lines
    for want in ("SuspendTime=120", "SuspendTimeout=60", "ResumeTimeout=400", "ResumeRate=10",
                 "SuspendRate=0", f"SuspendExcNodes={HOST},spare1", "SuspendExcParts=batch",
                 "ResumeProgram=/usr/local/libexec/vcluster/slurm-resume",
                 "SuspendProgram=/usr/local/libexec/vcluster/slurm-suspend",
                 "ResumeFailProgram=/usr/local/libexec/vcluster/slurm-resume-fail",
                 "SlurmctldParameters=enable_configless,cloud_reg_addrs,idle_on_node_suspend",
                 "PrivateData=cloud"):
        assert want in lines, want


def test_profile_resume_timeout_becomes_its_partitions(sandbox, tmp_root):  # noqa: F811
    cloud = copy.deepcopy(CLOUD)
    cloud["profiles"]["burst"]["resume_timeout"] = 900
    cloud["profiles"]["htc"]["resume_timeout"] = 90
    site = _site(vcluster_cloud=cloud)
    site["slurm"]["partitions"]["htc"]["options"]["ResumeTimeout"] = 120  # the admin's word wins
    box = sandbox("controller", site=site)
    lines = _conf_lines(box.render_template("slurm/files/slurm.conf.jinja", tmp_root / "rt.conf"))
    assert "PartitionName=cloud Nodes=burst[1-4] State=UP MaxTime=INFINITE ResumeTimeout=900" in lines
    (htc,) = [ln for ln in lines if ln.startswith("PartitionName=htc ")]
    assert htc.count("ResumeTimeout=") == 1 and "ResumeTimeout=120" in htc, htc
    assert "ResumeTimeout=400" in lines  # the cluster's, for every other cloud node


def test_without_cloud_profiles_nothing_changes(sandbox, tmp_root):  # noqa: F811
    box = sandbox("controller")
    lines = _conf_lines(box.render_template("slurm/files/slurm.conf.jinja", tmp_root / "plain.conf"))
    assert not [ln for ln in lines if ln.startswith(("Suspend", "Resume"))]
    assert "State=CLOUD" not in " ".join(lines)
    assert "slurm-power-sudoers-managed" not in box.call("state.show_sls", "slurm.controller")


def test_power_programs_and_sudo_rule(sandbox):  # noqa: F811
    box = sandbox("controller", site=_site(vcluster_cloud=CLOUD))
    sls = box.call("state.show_sls", "slurm.controller")
    sudoers = sls["slurm-power-sudoers-managed"]["file"]
    contents = next(a["contents"] for a in sudoers if isinstance(a, dict) and "contents" in a)
    assert "slurm ALL=(root) NOPASSWD: /usr/local/sbin/vcluster-slurm-event" in contents
    assert {"mode": "0440"} in sudoers
    for sid in ("slurm-power-resume-program-managed", "slurm-power-suspend-program-managed",
                "slurm-power-resume-fail-program-managed", "slurm-power-event-helper-managed"):
        args = sls[sid]["file"]
        assert {"user": "root"} in args and {"mode": "0755"} in args, sid
    # dry run: every power state renders and would apply
    ret = box.call("state.sls", "slurm.controller", "test=True")
    assert isinstance(ret, dict), ret
    power = {k: v for k, v in ret.items() if "slurm-power-" in k}
    assert len(power) == 6, sorted(power)
    bad = {k: v["comment"] for k, v in power.items() if v.get("result") is False}
    assert not bad, bad


def test_invalid_policy_stops_slurm_conf(sandbox):  # noqa: F811
    box = sandbox("controller", site=_site(vcluster_cloud={
        "error": "vcluster:power_save:suspend_time must be a positive integer, got 'soon'"}))
    rendered = box.call("state.show_sls", "slurm.config")
    comment = rendered["slurm-config-file-managed"]["test"][0]["comment"]
    assert "suspend_time must be a positive integer, got 'soon'" in comment


def test_cloud_virtual_node_is_configless_without_dynamic_flags(sandbox):  # noqa: F811
    box = sandbox("virtual-dynamic", grains={"vcluster": {"membership": "cloud"}},
                  site={"slurm": {"membership": "cloud"}})
    sls = box.call("state.show_sls", "slurm.compute")
    args = sls["slurm-compute-options-file-managed"]["file"]
    contents = next(a["contents"] for a in args if isinstance(a, dict) and "contents" in a)
    assert 'SLURMD_OPTIONS="-b --conf-server 10.77.0.1 -N vnode001"' in contents
    assert "slurm-config-file-managed" not in sls


def test_cloud_declarations_restart_slurmctld_only_when_they_change(sandbox):  # noqa: F811
    box = sandbox("controller", site=_site(vcluster_cloud=CLOUD, vcluster_nodes={
        "vnode003": {"membership": "cloud", "cpus": 1, "memory": 1024}}))
    sls = box.call("state.show_sls", "slurm.controller")
    args = sls["slurm-controller-node-set-managed"]["file"]
    contents = next(a["contents"] for a in args if isinstance(a, dict) and "contents" in a)
    assert "vnode[001-016] CPUs=1 RealMemory=1024 Feature=virtual,htc" in contents
    # a cloud node powered up (in the registry) does not change the declared set
    assert "vnode003" not in contents.split("\n")
