"""Liveness judges slurmd, not the Salt minion: real master, engine, Slurm, LXD.

The scenario policy makes ``liveness:timeout`` short (:data:`TIMEOUT`);
the master's ``vcluster_tasks`` engine runs the check every 10 s as in
production.

Nodes:

* a virtual node (``vcluster.expand``, profile ``htc``);
* a second bare-metal node, ``tbm1``: a container of the node image that
  vcluster did not create, outside every pool, with its own accepted minion
  (accepted by the "admin", as a site accepts its bare-metal minions) and a
  slurmd with feature ``baremetal`` (partition ``batch``), set up by hand as
  a site would. The host's own bare-metal node is no use here: its minion is
  the controller's, through which vcluster reaches Slurm at all; with it
  stopped, no liveness round can look at anything.

Checked: with both minions stopped for longer than 3x ``liveness:timeout``
(and two engine rounds), both running jobs complete untouched, neither node
goes DOWN, and liveness reports both minions silent (return, event, status
warning). Then slurmd is killed on the virtual node (minion running): the
node goes DOWN; and the bare-metal container is stopped outright (no
provider knows it): it goes DOWN too. Both times are printed (measured,
not asserted beyond a generous deadline).
"""

import base64
import socket
import subprocess
import time

import pytest
import yaml

from tests.integration.stack import (
    ClusterStack,
    assert_not_requeued,
    job_states,
    node_info,
    sbatch,
    slurm,
    wait_jobs,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.own_stack]

TIMEOUT = 4  # seconds, pillar vcluster:liveness:timeout
SCHEDULE = 10  # vcluster.liveness.SCHEDULE_TICK
BAREMETAL = "tbm1"
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def lstack(host_slurm_lock, salt_factories, lxd_network, lxd_image, tmp_path_factory):
    extra = {"vcluster": {"liveness": {"timeout": TIMEOUT}, "reconcile": {"interval": 0}}}
    cluster = ClusterStack(salt_factories, lxd_network, tmp_path_factory.mktemp("lstack"), site_extra=extra)
    cluster.admin_accepts.add(BAREMETAL)
    subprocess.run(["lxc", "delete", "--force", BAREMETAL], capture_output=True, check=False)
    cluster.start()
    try:
        cluster.highstate_controller()
        yield cluster
    finally:
        subprocess.run(["lxc", "delete", "--force", BAREMETAL], capture_output=True, check=False)
        subprocess.run(["scontrol", "delete", f"nodename={BAREMETAL}"], capture_output=True, check=False)
        cluster.master.salt_key_cli().run("--yes", "--delete", BAREMETAL)
        cluster.stop()


def lxc(*args, check=True):
    return subprocess.run(["lxc", *args], capture_output=True, text=True, check=check)


def wait_until(predicate, timeout, what, every=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(every)


@pytest.fixture(scope="module")
def baremetal(lstack, lxd_network, lxd_addresses, event_listener):
    """``tbm1``: minion accepted by the admin, slurmd registered by hand, feature baremetal."""
    address = next(lxd_addresses)
    gw = lxd_network["gateway"]
    lxc("init", "vcluster-node", BAREMETAL, "-s", "vcluster")
    lxc("config", "device", "add", BAREMETAL, "eth0", "nic", f"network={lxd_network['name']}",
        "name=eth0", f"ipv4.address={address}")
    secrets = yaml.safe_load((lstack.site / "secrets.sls").read_text())
    files = {
        # acceptance_wait_time: the minion asks again 2 s (Salt's default: 10 s)
        # after the "admin" accepted its pending key, as vcluster's nodes do
        "/etc/salt/minion.d/vcluster.conf": (f"master: {gw}\nid: {BAREMETAL}\n"
                                             f"master_port: {lstack.master.config['ret_port']}\n"
                                             f"publish_port: {lstack.master.config['publish_port']}\n"
                                             "acceptance_wait_time: 2\n"),
        "/etc/munge/munge.key": base64.b64decode(secrets["munge"]["key"]),
        "/etc/default/slurmd": (f"SLURMD_OPTIONS=\"-Z --conf-server {gw} --conf 'CPUs=1 RealMemory=256 "
                                f"Feature=baremetal' -N {BAREMETAL}\"\n"),
    }
    stage = lstack.root / "tbm1-files"
    stage.mkdir(exist_ok=True)
    for i, (path, content) in enumerate(files.items()):
        local = stage / str(i)
        local.write_bytes(content if isinstance(content, bytes) else content.encode())
        local.chmod(0o600)
        lxc("file", "push", "--create-dirs", "--mode", "0600" if "munge" in path else "0644", str(local),
            f"{BAREMETAL}{path}")
    booted = time.time()
    lxc("start", BAREMETAL)
    # systemd must have finished booting before units are restarted by hand
    wait_until(lambda: lxc("exec", BAREMETAL, "--", "systemctl", "is-system-running", check=False).stdout.strip()
               in ("running", "degraded"), 90, "tbm1 booted", every=1)
    lxc("exec", BAREMETAL, "--", "chown", "munge:munge", "/etc/munge/munge.key")
    for unit in ("munge", "slurmd"):  # a boot-time start of the unit may still be settling: retried
        try:
            wait_until(lambda unit=unit: lxc("exec", BAREMETAL, "--", "systemctl", "restart", unit, check=False).returncode == 0,
                       60, f"{unit} (re)started on tbm1", every=2)
        except AssertionError as exc:
            journal = lxc("exec", BAREMETAL, "--", "journalctl", "-u", unit, "--no-pager", check=False).stdout
            raise AssertionError(f"{exc}: {journal[-1500:]}") from None
    info = wait_until(lambda: (i := node_info(BAREMETAL)) and i["State"].split("+")[0] == "IDLE" and i, 90,
                      "tbm1 idle in Slurm")
    assert "baremetal" in info.get("AvailableFeatures", ""), info
    # the minion: its key pending, then accepted by the stack's "admin". A
    # ping published before the accepted minion started is lost (and costs
    # the CLI's timeout and Salt's find_job round): wait for its start event
    started = event_listener.wait_for_events([(lstack.master_id, f"salt/minion/{BAREMETAL}/start")],
                                             after_time=booted, timeout=120)
    assert not started.missed, "tbm1's minion did not start (its key accepted) within 120 s"
    wait_until(lambda: lstack.master.salt_cli(timeout=5).run("test.ping", minion_tgt=BAREMETAL).data is True,
               120, "tbm1's minion answering", every=2)
    return BAREMETAL


@pytest.fixture(scope="module")
def vnode(lstack):
    ret = lstack.run("vcluster.expand", "count=1", "profile=htc")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    (name,) = ret.data["nodes"]
    return name


def counter_script(seconds):
    return f"for i in $(seq 1 {seconds}); do echo $i >> /tmp/counter.$SLURM_JOB_ID; sleep 1; done"


def counter_lines(node, job_id):
    out = lxc("exec", node, "--", "cat", f"/tmp/counter.{job_id}")
    return [int(x) for x in out.stdout.split()]


def show_job(job_id):
    out = slurm("scontrol", "show", "-o", "job", str(job_id))
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def states(name):
    return (node_info(name) or {}).get("State", "absent")


def test_silent_minions_do_not_set_busy_nodes_down(lstack, baremetal, vnode, event_listener):
    # the scheduled check watches both, through one scan of the controller
    ret = lstack.run("vcluster.liveness", "test=True")
    assert ret.data["result"] is True and ret.data["down"] == {}, ret.data
    assert ret.data["watched"] == 3, ret.data  # the host, tbm1 and the virtual node
    assert ret.data["calls"]["controller"] == 1 and ret.data["calls"]["salt_probe"] == 0, ret.data

    silent_for = 3 * TIMEOUT + 2 * SCHEDULE  # 3x the timeout, and at least two engine rounds
    seconds = silent_for + 25
    jobs = {vnode: sbatch("-p", "htc", "-w", vnode, script=counter_script(seconds)),
            baremetal: sbatch("-p", "batch", "-w", baremetal, script=counter_script(seconds))}
    wait_jobs(list(jobs.values()), states=("RUNNING",), timeout=90)
    before = job_states(list(jobs.values()))
    assert before == {j: "RUNNING" for j in jobs.values()}, before

    start = time.time()
    for node in jobs:
        lxc("exec", node, "--", "systemctl", "stop", "salt-minion")
    stopped = time.monotonic()
    try:
        seen_silent = False
        while time.monotonic() - stopped < silent_for:
            for node in jobs:
                assert "DOWN" not in states(node) and "FAIL" not in states(node), node_info(node)
            if not seen_silent:
                data = lstack.run("vcluster.liveness", "test=True").data
                assert data["down"] == {}, data
                seen_silent = sorted(data["minion_silent"]) == sorted(jobs)
            time.sleep(2)
        assert seen_silent, "liveness never reported both minions silent"
        warnings = lstack.run("vcluster.status").data["warnings"]
        assert any(baremetal in w and vnode in w for w in warnings), warnings
        events = event_listener.wait_for_events(
            [(lstack.master_id, f"vcluster/node/{n}/minion-silent") for n in jobs], after_time=start, timeout=30)
        assert not events.missed, events.missed
        # the engine's own rounds ran meanwhile and set nothing DOWN
        downs = event_listener.get_events([(lstack.master_id, f"vcluster/node/{n}/down") for n in jobs],
                                          after_time=start)
        assert list(downs) == [], list(downs)
    finally:
        for node in jobs:
            lxc("exec", node, "--", "systemctl", "start", "salt-minion", check=False)

    final = wait_jobs(list(jobs.values()), timeout=seconds + 120)
    assert final == {j: "COMPLETED" for j in jobs.values()}, final
    assert_not_requeued(list(jobs.values()))  # sacct: every job there, none requeued
    for node, job in jobs.items():
        assert counter_lines(node, job) == list(range(1, seconds + 1)), node
        assert "DOWN" not in states(node), node_info(node)
    assert len(final) == len(before) == 2  # no job lost, none added


def test_killed_slurmd_and_dead_host_go_down(lstack, baremetal, vnode):
    # slurmd killed, minion fine: what the old check caught through the minion
    lxc("exec", vnode, "--", "systemctl", "kill", "--signal=KILL", "slurmd")
    killed = time.monotonic()
    info = wait_until(lambda: (i := node_info(vnode)) and "DOWN" in i["State"] and i,
                      SCHEDULE + 3 * TIMEOUT + 60, f"{vnode} DOWN")
    took = time.monotonic() - killed
    assert info["Reason"].startswith("vcluster liveness: its slurmd is not running"), info
    print(f"\nLIVENESS {vnode}: DOWN {took:.1f} s after its slurmd was killed")

    # a bare-metal host gone altogether (no provider knows it): slurmd and minion silent
    lxc("stop", "--force", baremetal)
    stopped = time.monotonic()
    info = wait_until(lambda: (i := node_info(baremetal)) and "DOWN" in i["State"] and i,
                      SCHEDULE + 3 * TIMEOUT + 60, f"{baremetal} DOWN")
    took = time.monotonic() - stopped
    assert info["Reason"].startswith("vcluster liveness: its slurmd does not answer the controller"), info
    print(f"LIVENESS {baremetal}: DOWN {took:.1f} s after lxc stop --force")

    # slurmd back on the virtual node: vcluster lifts its own DOWN
    lxc("exec", vnode, "--", "systemctl", "start", "slurmd")
    wait_until(lambda: "DOWN" not in states(vnode), SCHEDULE + 3 * TIMEOUT + 60, f"{vnode} back up")
    job = sbatch("-p", "htc", "-w", vnode, script="hostname")
    assert wait_jobs([job], timeout=120) == {job: "COMPLETED"}
