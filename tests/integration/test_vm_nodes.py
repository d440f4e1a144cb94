"""VM nodes in the stack: libvirt/QEMU guests expanded by vcluster, suspended with a running job.

Real libvirtd and QEMU (TCG here: KVM guests hang on this machine, see
docs/libvirt.md), the session's real master, reactor, slurmctld, slurmd and
slurmdbd; nothing is mocked. The module adds a libvirt provider, a pool and
a profile ``vm`` to the session stack's site pillar (features and partition
of the LXD profile ``htc``), on a libvirt network of its own
(``vcl-vm-test``, 10.83.0.1/24, ``forward mode='open'``: the guests get a
default route through the host and reach the master and slurmctld on the
LXD bridge's gateway, as a site's VMs reach its controller through a
router). Two guests boot once for the whole module, with one
``vcluster.expand count=2``:

* the first runs a counter job (one line per second of running time to a
  file on the node) through a ``vcluster.suspend mode=pause`` of
  :data:`PAUSE_FOR` seconds and a ``mode=save`` (libvirt managed save: QEMU
  gone, memory on disk) of :data:`SAVE_FOR` seconds, longer than munge's
  credential TTL (300 s); afterwards the job completes with an unbroken
  sequence, one ``sacct -D`` record (no requeue) and ``Restarts=0``, and the
  guest clock is within a second of the host's;
* while the first is saved: a job for it stays pending, a job for the
  partition runs on the second, and the second's QEMU process is killed:
  liveness sets it DOWN (and never the saved one);
* both are retired: domains, volumes, DHCP entries, minion keys, names and
  addresses gone.
"""

import ipaddress
import os
import signal
import time

import pytest

from tests.integration.lxd_fixtures import REPO, run_script
from tests.integration.stack import (
    VIRT_POOL,
    VIRT_URI,
    assert_not_requeued,
    job_states,
    node_info,
    sbatch,
    slurm,
    vm_site,
    wait_jobs,
)

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")
from tests.integration.libvirt_fixtures import module_network, qemu_pid  # noqa: E402 - after the importorskip

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NETWORK = "vcl-vm-test"
CIDR = os.environ.get("VCLUSTER_TEST_VM_CIDR", "10.83.0.1/24")
MEMORY = 512  # MiB, the profile's: Slurm's RealMemory, and what the guest has at least
PAUSE_FOR = 60  # seconds the first node stays paused
SAVE_FOR = 330  # seconds it stays saved: longer than munge's credential TTL (300 s)
COUNT_TO = 30  # lines the counter job writes (one per second of running time)
SAVE_MODE = "save"  # libvirt's managed save (the suspend vocabulary of providers.base)
LIVENESS_WAIT = 90  # seconds for liveness (every 10 s) to set a dead node DOWN


@pytest.fixture(scope="module")
def virt(lxd_root):
    """libvirtd running with the image pool; the VM image built (or cached) and uploaded."""
    run_script(REPO / "scripts" / "libvirt-up.sh", "--no-network", "--pool", VIRT_POOL)
    run_script(REPO / "image-vm" / "build.sh", "--pool", VIRT_POOL, timeout=1800)
    conn = libvirt.open(VIRT_URI)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def vm_network(virt):
    """The module's libvirt network: ``{"name", "gateway", "cidr", "net"}``; removed at the end."""
    with module_network(virt, NETWORK, "vclvm0", CIDR, 49, forward="open") as net:
        yield net


@pytest.fixture(scope="module")
def vm_stack(stack, vm_network):
    """The session's stack with the module's VM provider, pool and profile in its site pillar."""
    base = str(ipaddress.ip_interface(CIDR).ip).rsplit(".", 1)[0]
    extra = vm_site(vm_network, "tnodev[1-4]", f"{base}.100-{base}.103", MEMORY)
    with stack.extended_site(extra):
        try:
            yield stack
        finally:
            # a job of a test that failed half-way would wait for a node that is gone, and run on the
            # next module's node of that name (slurmctld keeps it across restarts)
            slurm("scancel", *SEEN.get("jobs", []), check=False)
            stack.retire_everything()  # while the provider is still in pillar


@pytest.fixture(scope="module")
def vms(vm_stack):
    """Two VM nodes from one ``vcluster.expand``: ``{name: address}``."""
    start = time.monotonic()
    ret = vm_stack.run("vcluster.expand", "count=2", "profile=vm", timeout=900)
    took = time.monotonic() - start
    assert ret.returncode == 0, ret.stdout
    assert ret.data["result"] is True, ret.data
    print(f"\nexpand of 2 VM nodes: {took:.0f} s")
    return {name: v["address"] for name, v in sorted(ret.data["nodes"].items())}


#: What the tests of this module hand on to the next (they run in file order).
SEEN = {}


def domain(conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


def guest_offset(conn, name):
    """Guest clock minus host clock, seconds (guest agent)."""
    got = conn.lookupByName(name).getTime(0)
    return got["seconds"] + got["nseconds"] / 1e9 - time.time()


def on_node(stack, name, command, timeout=60):
    """``cmd.run`` on a node's minion; its output."""
    ret = stack.master.salt_cli(timeout=timeout).run(f"--timeout={timeout}", "cmd.run", command,
                                                     minion_tgt=name, _timeout=timeout + 30)
    assert isinstance(ret.data, str), f"{name} did not run {command!r}: {ret.stdout[-500:]}"
    return ret.data


def counter_lines(stack, name, path):
    text = on_node(stack, name, f"cat {path} 2>/dev/null || true")
    return [int(x) for x in text.split()]


def wait_lines(stack, name, path, at_least, timeout):
    deadline = time.monotonic() + timeout
    while True:
        lines = counter_lines(stack, name, path)
        if len(lines) >= at_least:
            return lines
        assert time.monotonic() < deadline, f"{path} on {name} has {len(lines)} lines after {timeout} s"
        time.sleep(2)


def submit(*args, script):
    job = sbatch(*args, script=script)
    SEEN.setdefault("jobs", []).append(job)
    return job


def show_job(job_id):
    out = slurm("scontrol", "show", "-o", "job", str(job_id))
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def timed_run(stack, *args, timeout=900):
    start = time.monotonic()
    ret = stack.run(*args, timeout=timeout)
    return ret, round(time.monotonic() - start, 1)


def test_vm_nodes_join_slurm_like_containers(vm_stack, vms, virt):
    for name, address in vms.items():
        info = node_info(name)
        assert info is not None, f"{name} not in Slurm"
        assert info["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED"), info["State"]
        assert info["NodeAddr"] == address
        assert int(info["RealMemory"]) == MEMORY and int(info["CPUTot"]) == 1
        assert {"virtual", "htc"} <= set(info["AvailableFeatures"].split(","))
        assert "htc" in info["Partitions"].split(",")
        # the same registration as a container: dynamic slurmd from the same states
        opts = on_node(vm_stack, name, "cat /etc/default/slurmd")
        assert f"-Z --conf-server {vm_stack.network['gateway']}" in opts and f"-N {name}" in opts, opts
        # a real VM: QEMU runs it, and the guest has at least the memory Slurm is told
        dom = domain(virt, name)
        assert dom is not None and dom.isActive() and qemu_pid(name)
        mem_total = int(on_node(vm_stack, name, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")) // 1024
        assert mem_total >= MEMORY, f"{name}: guest MemTotal {mem_total} MiB < RealMemory {MEMORY}"
    status = vm_stack.run("vcluster.status").data["nodes"]
    assert {n: status[n]["state"] for n in vms} == dict.fromkeys(vms, "ready")
    assert {status[n]["instance_state"] for n in vms} == {"running"}


def test_counter_job_survives_a_pause(vm_stack, vms, virt):
    name = sorted(vms)[0]
    path = "/tmp/vm-counter.$SLURM_JOB_ID"
    job = submit("-p", "htc", "-w", name,
                 script=f"for i in $(seq 1 {COUNT_TO}); do echo $i >> {path}; sleep 1; done")
    wait_jobs([job], states=("RUNNING",), timeout=120)
    path = path.replace("$SLURM_JOB_ID", job)
    SEEN.update(job=job, node=name, path=path)
    wait_lines(vm_stack, name, path, 3, 60)
    pid = qemu_pid(name)

    ret, took = timed_run(vm_stack, "vcluster.suspend", f"nodes={name}", "mode=pause")
    assert ret.data["result"] is True, ret.data
    assert job_states([job]) == {job: "SUSPENDED"}
    assert qemu_pid(name) == pid  # a pause keeps QEMU
    time.sleep(PAUSE_FOR)  # the node stays paused this long
    ret, resume_s = timed_run(vm_stack, "vcluster.resume", f"nodes={name}")
    assert ret.data["result"] is True, ret.data
    offset = guest_offset(virt, name)
    print(f"\npause: suspend {took} s, {PAUSE_FOR} s paused, resume {resume_s} s, guest clock offset after "
          f"{offset:+.3f} s")
    assert abs(offset) < 1
    assert job_states([job]) == {job: "RUNNING"}
    before = counter_lines(vm_stack, name, path)
    wait_lines(vm_stack, name, path, len(before) + 2, 60)  # counting again


def test_counter_job_survives_a_save_longer_than_munge_ttl(vm_stack, vms, virt):
    """Managed save: the QEMU process ends, the memory goes to disk; the job is suspended with it."""
    job, name, path = SEEN["job"], SEEN["node"], SEEN["path"]
    pid = qemu_pid(name)
    before = counter_lines(vm_stack, name, path)
    ret, took = timed_run(vm_stack, "vcluster.suspend", f"nodes={name}", f"mode={SAVE_MODE}")
    assert ret.data["result"] is True, ret.data
    SEEN["saved_at"] = time.monotonic()
    assert job_states([job]) == {job: "SUSPENDED"}
    assert qemu_pid(name) is None and not os.path.exists(f"/proc/{pid}")
    assert domain(virt, name).hasManagedSaveImage(0)
    freed = (ret.data.get("freed_mib") or {}).get(name)
    print(f"\nsave: vcluster.suspend {took} s, host memory freed {freed} MiB; counter at {before[-1]} "
          f"a moment before")
    assert isinstance(freed, int)


def test_nothing_is_scheduled_onto_a_saved_node(vm_stack, vms):
    saved = SEEN["node"]
    other = next(n for n in sorted(vms) if n != saved)
    pinned = submit("-p", "htc", "-w", saved, script="hostname")
    anywhere = submit("-p", "htc", script="hostname")
    SEEN["pinned"] = pinned
    wait_jobs([anywhere], timeout=120)
    assert show_job(anywhere)["NodeList"] == other  # it ran elsewhere
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # and stays pending
        assert job_states([pinned]) == {pinned: "PENDING"}
        assert node_info(saved)["State"].split("+")[0] not in ("ALLOCATED", "MIXED")
        time.sleep(2)


def test_a_vm_whose_qemu_is_killed_is_set_down(vm_stack, vms):
    saved = SEEN["node"]
    victim = next(n for n in sorted(vms) if n != saved)
    pid = qemu_pid(victim)
    assert pid is not None
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    deadline = start + LIVENESS_WAIT
    while True:
        info = node_info(victim)
        if "DOWN" in info["State"]:
            break
        assert time.monotonic() < deadline, f"{victim} not DOWN {LIVENESS_WAIT} s after its QEMU was killed: {info}"
        time.sleep(1)
    print(f"\n{victim} DOWN {time.monotonic() - start:.0f} s after its QEMU was killed: {info['Reason']}")
    assert info["Reason"].startswith("vcluster liveness"), info
    saved_state = node_info(saved)["State"]
    assert "DOWN" not in saved_state, saved_state  # the saved node is never judged dead
    SEEN["dead"] = victim


def test_resume_after_the_save_continues_the_job(vm_stack, vms, virt):
    job, name, path, pinned = SEEN["job"], SEEN["node"], SEEN["path"], SEEN["pinned"]
    left = SEEN["saved_at"] + SAVE_FOR - time.monotonic()
    if left > 0:
        time.sleep(left)  # the node stays saved SAVE_FOR seconds in all
    assert job_states([job, pinned]) == {job: "SUSPENDED", pinned: "PENDING"}
    SEEN["resumed_at"] = time.time()
    ret, resume_s = timed_run(vm_stack, "vcluster.resume", f"nodes={name}")
    saved_for = time.monotonic() - SEEN["saved_at"]
    assert ret.data["result"] is True, ret.data
    offset = guest_offset(virt, name)
    print(f"\nsave: {saved_for:.0f} s saved, vcluster.resume {resume_s} s, guest clock offset after {offset:+.3f} s")
    assert abs(offset) < 1
    final = wait_jobs([job, pinned], timeout=COUNT_TO + 120)
    assert final == {job: "COMPLETED", pinned: "COMPLETED"}
    assert show_job(job)["Restarts"] == "0"
    assert_not_requeued([job, pinned])
    lines = counter_lines(vm_stack, name, path)
    print(f"counter: {len(lines)} lines, first {lines[:3]}, last {lines[-3:]}")
    assert lines == list(range(1, COUNT_TO + 1)), lines  # one run, no gap, no repeat
    assert show_job(pinned)["NodeList"] == name  # it ran once the node was back


def test_resume_event_shows_the_guest_clock_offsets(vm_stack, event_listener):
    name = SEEN["node"]
    events = event_listener.get_events([(vm_stack.master_id, f"vcluster/node/{name}/ready")],
                                       after_time=SEEN["resumed_at"])
    assert events, f"no ready event of {name} after the resume"
    data = max(events, key=lambda e: e.stamp).data
    print(f"\nready event: guest clock {data['clock_offset_before']} s before the step, "
          f"{data['clock_offset_after']} s after; minion restart {data.get('minion_restart')}")
    assert data["clock_offset_before"] <= -SAVE_FOR and abs(data["clock_offset_after"]) < 1, data


def test_retire_leaves_nothing(vm_stack, vms, virt, vm_network):
    ret = vm_stack.run("vcluster.retire", f"nodes={','.join(sorted(vms))}", "wait=120")
    assert ret.data["result"] is True, ret.data
    assert set(ret.data["nodes"].values()) == {"released"}
    keys = vm_stack.master.salt_key_cli().run("--list", "accepted", "--out", "json").data.get("minions", [])
    pool_volumes = virt.storagePoolLookupByName(VIRT_POOL)
    pool_volumes.refresh(0)
    volumes = pool_volumes.listVolumes()
    net_xml = vm_network["net"].XMLDesc(0)
    for name, address in vms.items():
        assert domain(virt, name) is None  # instance
        assert not [v for v in volumes if v.startswith(name)]  # its overlay and seed (minion key) volumes
        assert name not in keys  # minion key
        assert node_info(name) is None  # Slurm node
        assert address not in net_xml  # DHCP host entry
    assert vm_stack.run("vcluster.status").data["nodes"] == {}  # names and addresses free
    plan = vm_stack.run("vcluster.plan", "profile=vm", "count=2").data
    assert plan["nodes"] == vms  # the same names and addresses are free again


def test_suspend_takes_the_mode_name_save(vm_stack):
    # the nodes are retired: an accepted mode gets as far as the registry check
    ret = vm_stack.run("vcluster.suspend", "nodes=tnodev1", "mode=save", "test=True")
    assert "'tnodev1' is not in the registry" in str(ret.data), ret.data
