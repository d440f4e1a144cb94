"""The integration scenarios on Slurm 24.11: the same states and runner as the 22.05 stack.

One :class:`~tests.integration.trixie_stack.TrixieStack` for the module: its
own salt-master on the host, the Slurm controller (slurmctld and slurmdbd
24.11.5, munge) in a Debian 13 container configured by the master's
highstate, accounting in the host's MariaDB, and virtual nodes of the
trixie image expanded by ``salt-run vcluster.expand`` (LXD provider). Jobs
are counted with ``sacct`` on the controller: none lost, none requeued (one
``sacct -D`` record each).

Scenarios: dynamic membership expand, jobs, retire waiting for a running
job, retire leaving no key, Slurm node, registry name or address;
suspend/resume with a counter job alive (unbroken, one sacct record);
preemption (a ``batch`` job on the bare-metal node freezes the ``htc``
node on its hypervisor and its end thaws it, the counter job unbroken);
static membership expand/retire with a held job kept across slurmctld's
restarts; cloud membership's power saving with a warm pool (short Slurm
timers, as test_cloud_mode).

Preemption's trigger is a job on a hypervisor host. The LXD host's slurmd
is 22.05 and cannot join a 24.11 controller, so the controller container
is also the cluster's bare-metal node (``TrixieStack(baremetal=True)``: a
24.11 slurmd of partition ``batch`` configured by the same highstate), and
the policy names the LXD server as its hypervisor
(``vcluster:preemption:hypervisors``), as a site whose Slurm node names
differ from its hypervisors' names would. The preemption policy is on for
the whole module, so every scenario runs with vcluster's PrologSlurmctld
and jobcomp/script hooks in slurm.conf.

Skipped (not an error) without the Debian 13 package list
(tests/harness/trixie_chroot.sh, which scripts/test.sh builds) or the host's
Debian 12 libmariadb3 (slurmdbd's workaround).
"""

import copy
import subprocess
import time

import pytest
import yaml

from tests.integration.stack import REPO, _merge
from tests.integration.test_trixie_image import trixie_build, trixie_image  # noqa: F401 - fixtures
from tests.integration.trixie_stack import HOST_LIBMARIADB, TRIXIE_PACKAGES, TrixieStack, lxc_exec, lxd_server_name
from tests.provider_contract import SpecFactory, eventually
from vcluster.providers.lxd import LxdProvider

pytestmark = [
    pytest.mark.integration, pytest.mark.slow, pytest.mark.own_stack,
    # decided at collection: no lock taken, no container made for a module that cannot run
    pytest.mark.skipif(not TRIXIE_PACKAGES.exists(), reason=f"no Debian 13 package list at {TRIXIE_PACKAGES} "
                       "to find slurmctld and slurmdbd in: build it with tests/harness/trixie_chroot.sh"),
    pytest.mark.skipif(not HOST_LIBMARIADB.exists(), reason=f"no Debian 12 libmariadb3 at {HOST_LIBMARIADB} for "
                       "Debian 13's slurmdbd (docs/slurm-versions.md)"),
]

CONTROLLER_MEMORY_MB = 1024
NODE_MEMORY_MB = 256


@pytest.fixture(scope="module")
def controller_spec(trixie_image, lxd_daemon, lxd_network, lxd_addresses):  # noqa: F811
    """A trixie container for the controller (deleted with the module)."""
    prov = LxdProvider("lxd-stack-24-11", {"network": lxd_network["name"], "storage_pool": lxd_daemon})
    [spec] = SpecFactory(trixie_image, lxd_addresses, prefix="tctl", memory_mb=CONTROLLER_MEMORY_MB)(1)
    [inst] = prov.create([spec])
    try:
        yield spec
    finally:
        prov.delete([inst.id])
        prov.close()


@pytest.fixture(scope="module")
def stack24(host_slurm_lock, salt_factories, lxd_network, controller_spec, tmp_path_factory):
    extra = {"vcluster": {
        "profiles": {"htc": {"memory": NODE_MEMORY_MB, "join_timeout": 180}},
        "reconcile": {"interval": 0},  # only when a test asks
        # test_suspend_resume's policy; the bare-metal node is the controller container, on the LXD server
        "preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"], "mode": "suspend",
                       "hypervisors": {controller_spec.name: lxd_server_name()}},
    }}
    cluster = TrixieStack(salt_factories, lxd_network, tmp_path_factory.mktemp("stack24"), controller_spec,
                          site_extra=extra, baremetal=True)
    started = time.monotonic()
    cluster.start()
    try:
        cluster.highstate_controller()
        print(f"24.11 stack up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()


def lxd_instances(prefix="tnode"):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True, check=True)
    return sorted(n for n in out.stdout.split() if n.startswith(prefix))


def lxd_status(name):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "ns"], capture_output=True, text=True, check=True)
    return dict(line.split(",", 1) for line in out.stdout.split()).get(name)


def accepted_keys(stack):
    ret = stack.master.salt_key_cli().run("--list", "accepted", "--out", "json")
    return set(ret.data.get("minions", [])) if isinstance(ret.data, dict) else set()


def counter_script(seconds, path="/tmp/counter.$SLURM_JOB_ID"):
    return f"for i in $(seq 1 {seconds}); do echo $i >> {path}; sleep 1; done"


def counter_lines(node, job_id):
    return [int(x) for x in lxc_exec(node, "sh", "-c", f"cat /tmp/counter.{job_id} 2>/dev/null || true").split()]


def test_controller_runs_slurm_24_11_with_accounting(stack24):
    slurm = stack24.slurm
    assert slurm("scontrol", "--version").split()[-1].startswith("24.11."), slurm("scontrol", "--version")
    config = slurm("scontrol", "show", "config")
    assert any(line.split() == ["AccountingStorageType", "=", "accounting_storage/slurmdbd"]
               for line in config.splitlines()), [line for line in config.splitlines() if "Accounting" in line]
    # the runner's view of the controller: its minion's slurm module reads 24.11
    ret = stack24.call("slurm.version")
    assert ret.returncode == 0, ret.stdout
    assert ret.data["series"] == "24.11" and ret.data["version"].startswith("24.11."), ret.data
    assert lxc_exec(stack24.controller_id, "systemctl", "is-active", "slurmdbd") == "active"


@pytest.fixture(scope="module")
def nodes(stack24):
    ret = stack24.run("vcluster.expand", "count=2", "profile=htc")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    names = sorted(ret.data["nodes"])
    assert len(names) == 2
    return names


def test_expand_runs_jobs_and_retire_waits_for_a_running_job(stack24, nodes):
    slurm = stack24.slurm
    for name in nodes:
        info = slurm.node_info(name)
        assert info is not None, f"{name} not in Slurm"
        assert info["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED"), info["State"]
        assert "DYNAMIC" in info["State"], info["State"]
        assert "htc" in info.get("AvailableFeatures", "")
        # 23.11+: the node registered with its instance (slurmd --instance-type from vcluster_self)
        assert info.get("InstanceType") == f"1cpu-{NODE_MEMORY_MB}mb", info
    status = stack24.run("vcluster.status").data
    assert sorted(status["nodes"]) == nodes and all(v["state"] == "ready" for v in status["nodes"].values())
    assert set(nodes) <= accepted_keys(stack24)

    jobs = [slurm.sbatch("-p", "htc", "-w", name) for name in nodes for _ in range(2)]
    assert set(slurm.wait_jobs(jobs, timeout=120).values()) == {"COMPLETED"}

    # retire waits for the job still running on the node
    name = nodes[0]
    job = slurm.sbatch("-p", "htc", "-w", name, script="sleep 8; echo done")
    slurm.wait_jobs([job], states=("RUNNING",), timeout=60)
    ret = stack24.run("vcluster.retire", f"nodes={name}", "wait=120")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.data
    assert ret.data["nodes"] == {name: "released"}, ret.data
    assert slurm.job_states([job]) == {job: "COMPLETED"}
    assert slurm.node_info(name) is None
    assert lxd_instances() == [nodes[1]]
    slurm.assert_not_requeued(jobs + [job])


def test_job_survives_suspend_and_resume(stack24, nodes):
    slurm = stack24.slurm
    node = nodes[1]
    seconds = 12
    job = slurm.sbatch("-p", "htc", "-w", node, script=counter_script(seconds))
    slurm.wait_jobs([job], states=("RUNNING",), timeout=60)
    eventually(lambda: len(counter_lines(node, job)) >= 2, 30, f"job {job} counting before the freeze")

    ret = stack24.run("vcluster.suspend", f"nodes={node}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    assert lxd_status(node) == "FROZEN"
    assert slurm.job_states([job]) == {job: "SUSPENDED"}
    info = slurm.node_info(node)
    assert "DRAIN" in info["State"] and "DOWN" not in info["State"], info["State"]
    # nothing new lands on the frozen node
    pinned = slurm.sbatch("-p", "htc", "-w", node, script="hostname")
    assert stack24.run("vcluster.status").data["nodes"][node]["state"] == "suspended"
    assert slurm.job_states([pinned]) == {pinned: "PENDING"}

    ret = stack24.run("vcluster.resume", f"nodes={node}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    assert lxd_status(node) == "RUNNING"
    assert slurm.wait_jobs([job, pinned], timeout=120) == {job: "COMPLETED", pinned: "COMPLETED"}
    slurm.assert_not_requeued([job, pinned])
    assert counter_lines(node, job) == list(range(1, seconds + 1))
    assert "DRAIN" not in slurm.node_info(node)["State"]
    assert stack24.run("vcluster.status").data["nodes"][node]["state"] == "ready"


def test_preemption_freezes_and_thaws_the_colocated_node(stack24, nodes):
    """A ``batch`` job on the bare-metal node (the controller container, whose hypervisor the policy
    says is the LXD server) freezes the ``htc`` node there: PrologSlurmctld -> spool line -> the
    controller minion's engine -> reactor -> vcluster.on_slurm_event; its end (jobcomp/script) thaws
    it, and the counter job on the node completes unbroken, with one sacct record and Restarts=0."""
    slurm, ctl = stack24.slurm, stack24.controller_id
    # the states put vcluster's hooks in 24.11's slurm.conf and slurmctld runs with them; never an
    # EpilogSlurmctld (it delays scheduling). 24.11 lists them as PrologSlurmctld[0], ... (several allowed)
    config = {k.strip(): v.strip() for k, v in (line.split(" = ", 1) for line in
                                                 slurm("scontrol", "show", "config").splitlines() if " = " in line)}
    hooks = {k.split("[")[0]: v for k, v in config.items()
             if k.split("[")[0] in ("PrologSlurmctld", "JobCompType", "JobCompLoc", "EpilogSlurmctld")}
    assert hooks == {"PrologSlurmctld": "/usr/local/libexec/vcluster/slurmctld-prolog",
                     "JobCompType": "jobcomp/script",
                     "JobCompLoc": "/usr/local/libexec/vcluster/slurmctld-jobcomp"}, hooks
    conf = lxc_exec(ctl, "cat", "/etc/slurm/slurm.conf")
    assert "PrologSlurmctld=/usr/local/libexec/vcluster/slurmctld-prolog" in conf and "EpilogSlurmctld" not in conf
    info = slurm.node_info(ctl)
    assert info is not None and "baremetal" in info.get("AvailableFeatures", ""), info
    assert "batch" in info.get("Partitions", "").split(","), info

    node = nodes[1]
    seconds = 12
    low = slurm.sbatch("-p", "htc", "-w", node, script=counter_script(seconds))
    slurm.wait_jobs([low], states=("RUNNING",), timeout=60)
    eventually(lambda: len(counter_lines(node, low)) >= 2, 30, f"job {low} counting before the preemption")
    high = slurm.sbatch("-p", "batch", "-w", ctl, script="sleep 6")
    slurm.wait_jobs([high], states=("RUNNING", "COMPLETED"), timeout=60)
    started = time.monotonic()
    eventually(lambda: lxd_status(node) == "FROZEN", 30, f"{node} frozen by job {high}")
    print(f"frozen {time.monotonic() - started:.1f} s after job {high} was seen running")
    assert slurm.job_states([low]) == {low: "SUSPENDED"}
    status = stack24.run("vcluster.status").data["nodes"][node]
    assert status["state"] == "suspended" and status["reason"] == f"preempted by job {high}", status
    assert "DRAIN" in slurm.node_info(node)["State"]

    slurm.wait_jobs([high], timeout=60)
    ended = time.monotonic()
    eventually(lambda: registry_state(stack24, node) == "ready", 60, f"{node} resumed after job {high}")
    print(f"thawed {time.monotonic() - ended:.1f} s after job {high} was seen completed")
    assert lxd_status(node) == "RUNNING"
    assert slurm.wait_jobs([low], timeout=120) == {low: "COMPLETED"}
    slurm.assert_not_requeued([low, high])
    assert slurm.show_job(low).get("Restarts") == "0", slurm.show_job(low)
    assert counter_lines(node, low) == list(range(1, seconds + 1))
    assert "DRAIN" not in slurm.node_info(node)["State"]


def test_retire_leaves_no_key_name_or_address(stack24, nodes):
    node = nodes[1]
    ret = stack24.run("vcluster.retire", f"nodes={node}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.data
    assert lxd_instances() == []
    assert not set(nodes) & accepted_keys(stack24)
    assert stack24.slurm.node_info(node) is None
    assert stack24.run("vcluster.status").data["nodes"] == {}


def test_static_membership_expand_and_retire(stack24):
    slurm = stack24.slurm
    conf = "/etc/slurm/slurm.conf"
    stack24.set_membership("static")
    try:
        held = slurm.sbatch("-p", "htc", "--hold", script="true")
        ret = stack24.run("vcluster.expand", "count=1", "profile=htc")
        assert ret.returncode == 0 and ret.data["result"] is True, ret.data
        (name,) = ret.data["nodes"]
        assert f"NodeName={name} " in lxc_exec(stack24.controller_id, "cat", conf)
        info = slurm.node_info(name)
        assert info["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED") and "DYNAMIC" not in info["State"], info
        job = slurm.sbatch("-p", "htc", "-w", name, script="hostname")
        assert slurm.wait_jobs([job], timeout=120) == {job: "COMPLETED"}

        ret = stack24.run("vcluster.retire", f"nodes={name}")
        assert ret.returncode == 0 and ret.data["result"] is True, ret.data
        assert f"NodeName={name} " not in lxc_exec(stack24.controller_id, "cat", conf)
        assert slurm.node_info(name) is None
        # the held job survived slurmctld's restarts, untouched
        assert slurm.job_states([held]) == {held: "PENDING"}
        slurm("scancel", held)
        slurm.assert_not_requeued([job])
    finally:
        stack24.set_membership("dynamic")


#: Power saving timers (test_cloud_mode's): the tests wait for what they check, not for these.
SUSPEND_TIME = 15
SUSPEND_TIMEOUT = 10
RESUME_TIMEOUT = 150


def _cloud_site(stack):
    base = stack.network["gateway"].rsplit(".", 1)[0]
    defaults = yaml.safe_load((REPO / "salt" / "slurm" / "defaults.yaml").read_text())
    return {
        "vcluster": {
            "pools": {
                # the cloud profile owns its pool: every name is declared CLOUD
                "local": {"names": "tnode[01-04]", "addresses": f"{base}.100-{base}.103"},
                "spare": {"names": "tnode[09-16]", "addresses": f"{base}.108-{base}.115",
                          "gateway": stack.network["gateway"]},
            },
            "profiles": {
                "htc": {"join_timeout": 120},
                "mem": {"pool": "spare", "membership": "dynamic"},
                "broken": {"membership": "dynamic"},
            },
            "power_save": {"suspend_time": SUSPEND_TIME, "suspend_timeout": SUSPEND_TIMEOUT,
                           "resume_timeout": RESUME_TIMEOUT},
            "autoscale": {"profiles": {"htc": {"warm_pool": 1}}},
        },
        # slurmctld's power-saving thread every second (test_cloud_mode)
        "slurm": {"config": {"SlurmctldParameters":
                             f"{defaults['slurm']['config']['SlurmctldParameters']},power_save_interval=1"}},
    }


def registry_state(stack, name):
    return stack.run("vcluster.status").data["nodes"].get(name, {}).get("state")


def test_cloud_power_saving_and_warm_pool(stack24):
    """A pending job powers a CLOUD node up (ResumeProgram -> Salt event -> the reactor creates
    it); idle, SuspendProgram puts it in the warm pool (frozen, POWERED_DOWN); a job for it
    thaws it; retired at the end. 24.11's scontrol power commands (vcluster/slurm/versions.py)."""
    stack, slurm = stack24, stack24.slurm
    saved = copy.deepcopy(stack.site_extra)
    _merge(stack.site_extra, _cloud_site(stack))
    stack.set_membership("cloud")
    name = None
    try:
        info = slurm.node_info("tnode01")
        assert info is not None and "CLOUD" in info["State"], info
        conf = lxc_exec(stack.controller_id, "cat", "/etc/slurm/slurm.conf")
        assert "cloud_reg_addrs" not in conf  # 23.11+ (releases.yaml)
        job = slurm.sbatch("-p", "htc", script="hostname; sleep 2")
        assert slurm.wait_jobs([job], timeout=240) == {job: "COMPLETED"}
        name = slurm.show_job(job).get("NodeList") or slurm("sacct", "-X", "-n", "-P", "-o", "NodeList",
                                                            "-j", job).split()[0]
        assert name.startswith("tnode") and name <= "tnode04", name
        assert registry_state(stack, name) == "ready"
        # idle for SuspendTime -> SuspendProgram -> frozen (warm pool), then POWERED_DOWN
        eventually(lambda: registry_state(stack, name) == "suspended", SUSPEND_TIME + 120, f"{name} in the warm pool")
        assert lxd_status(name) == "FROZEN"
        eventually(lambda: "POWERED_DOWN" in (slurm.node_info(name) or {}).get("State", ""), 120,
                   f"{name} powered down")
        job2 = slurm.sbatch("-p", "htc", "-w", name, script="hostname")
        assert slurm.wait_jobs([job2], timeout=120) == {job2: "COMPLETED"}
        assert registry_state(stack, name) == "ready"
        slurm.assert_not_requeued([job, job2])
    finally:
        # the node goes while the cloud policy still names its pool
        if name and registry_state(stack, name) == "suspended":
            stack.run("vcluster.on_slurm_power", "action=resume", f"nodes={name}", f"sender={stack.controller_id}")
        if name and registry_state(stack, name) == "ready":
            stack.run("vcluster.retire", f"nodes={name}", "force=True")
        eventually(lambda: not lxd_instances(), 120, "no cloud instance left")
        stack.site_extra = saved
        stack.set_membership("dynamic")
