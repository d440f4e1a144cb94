"""VM nodes in the stack: libvirt/QEMU guests expanded by vcluster, preempted, paused and moved with running jobs.

Real libvirtd and QEMU (TCG here: KVM guests hang on this machine, see
docs/libvirt.md), the session's real master, reactor, slurmctld, slurmd and
slurmdbd; nothing is mocked. The module adds to the session stack's site
pillar a libvirt provider of two hypervisors, ``hv1`` (this host's
libvirtd: the host is also the bare-metal Slurm node of partition
``batch``) and ``hv2`` (a second libvirtd on this machine,
scripts/libvirt-second-host.sh, sharing the storage directory), a pool and a
profile ``vm`` (features and partition of the LXD profile ``htc``), and
preemption: jobs of ``batch`` save (``mode: save``) the ``htc`` nodes on
their host (``hypervisors: {<host>: hv1}``); the controller's
``slurm.controller`` state is applied to install Slurm's hooks and again at
the end to remove them. The guests are on a libvirt network of the
module's own (``vcl-vm-test``, 10.83.0.1/24, ``forward mode='open'``: the
guests reach the master and slurmctld on the LXD bridge's gateway, as a
site's VMs reach its controller through a router), which hv2's network of
the same name bridges onto. Two guests boot once for the whole module, with
one ``vcluster.expand count=2``: placement puts one on each hypervisor.

The poster scenario, whose :data:`SAVE_FOR` seconds hold everything else:

* a counter job (one line per second of running time to a file on the
  node) runs on the node on hv1; a job of ``batch`` on the host
  (:data:`SAVE_FOR` s, longer than munge's credential TTL) makes the
  preemption policy save that node (libvirt managed save: QEMU gone,
  ``freed_mib`` in the ``suspended`` event); when it ends the node is
  restored and the counter job completes with an unbroken sequence, one
  ``sacct -D`` record (no requeue) and ``Restarts=0``; the guest clock is
  within a second of the host's and the ``ready`` event shows the offsets;
* meanwhile a job pinned to the saved node stays pending (it runs once the
  node is back) and a job for the partition runs on the node on hv2;
* that node's own counter job survives a ``vcluster.suspend mode=pause``
  of :data:`PAUSE_FOR` seconds, a ``vcluster.resume host=hv1`` (the paused
  guest moves to hv1, then runs there) and a live ``vcluster.migrate`` back
  (to the hypervisor the provider picks: hv2) with the job running: same
  name, address and NodeAddr after each move, registry host following,
  Slurm's Extra where the release has it, the job never stopped by the live
  move; then a ``vcluster.suspend mode=save`` on hv2 and a
  ``vcluster.resume host=hv1`` (the saved guest moves saved, then is
  restored on hv1);
* its QEMU process is killed: liveness sets it DOWN (and never the saved one);
* both are retired: domains (on both hypervisors), volumes, DHCP entries,
  minion keys, names and addresses gone.
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
from vcluster.slurm.instance import parse_extra

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")
from tests.integration.libvirt_fixtures import module_network, qemu_pid, second_hypervisor  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NETWORK = "vcl-vm-test"
BRIDGE = "vclvm0"
CIDR = os.environ.get("VCLUSTER_TEST_VM_CIDR", "10.83.0.1/24")
HV2_DIR = os.environ.get("VCLUSTER_VIRT2_DIR", "/var/lib/vcluster/hv2")
MEMORY = 512  # MiB, the profile's: Slurm's RealMemory, and what the guest has at least
PAUSE_FOR = 60  # seconds the second node stays paused
SAVE_FOR = 330  # seconds the preempting job runs, the first node saved: longer than munge's TTL
MUNGE_TTL = 300  # munge's default credential TTL, seconds
COUNT_TO = 20  # lines the first node's counter job writes (one per second of running time): ~7 before the save
COUNT_TO_2 = 150  # lines the second node's counter job writes: through the pause and both moves (its job
# counts again once slurmd listens, while resume host= still waits for the moved minion: 67 s measured)
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
    with module_network(virt, NETWORK, BRIDGE, CIDR, 49, forward="open") as net:
        yield net


@pytest.fixture(scope="module")
def hv2(vm_network):
    """The second hypervisor: ``{"uri", "conn", "run_dir"}``, its network bridged onto the module's."""
    with second_hypervisor(REPO / "scripts" / "libvirt-second-host.sh", HV2_DIR, VIRT_POOL, NETWORK, BRIDGE) as hv:
        yield hv


def apply_controller(stack):
    """``state.apply slurm.controller`` on the controller (Slurm's hooks follow the preemption pillar); seconds."""
    start = time.monotonic()
    ret = stack.master.salt_cli(timeout=600).run("state.apply", "slurm.controller", minion_tgt=stack.controller_id,
                                                 _timeout=600)
    failed = {k: v.get("comment") for k, v in (ret.data or {}).items()
              if isinstance(v, dict) and v.get("result") is False}
    assert ret.returncode == 0 and not failed and isinstance(ret.data, dict), failed or ret.stdout[-3000:]
    return round(time.monotonic() - start, 1)


def slurm_setting(key):
    for line in slurm("scontrol", "show", "config").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


@pytest.fixture(scope="module")
def vm_stack(stack, vm_network, hv2):
    """The session's stack with the module's two-hypervisor provider, pool, profile and preemption policy."""
    base = str(ipaddress.ip_interface(CIDR).ip).rsplit(".", 1)[0]
    extra = vm_site(vm_network, "tnodev[1-4]", f"{base}.100-{base}.103", MEMORY)
    extra["vcluster"]["providers"]["virt"].update(
        uri=None, shared_storage=True,
        hosts={"hv1": {"uri": VIRT_URI, "migration_address": "127.0.0.1"},
               "hv2": {"uri": hv2["uri"], "migration_address": "127.0.0.1"}})
    extra["vcluster"]["preemption"] = {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"],
                                       "mode": "save", "hypervisors": {stack.hostname: "hv1"}}
    with stack.extended_site(extra):
        try:
            took = apply_controller(stack)
            print(f"\nslurm.controller with preemption's hooks: {took} s")
            assert slurm_setting("JobCompType") == "jobcomp/script"
            yield stack
        finally:
            # preemption off first: the end of a preempting job cancelled here must not resume a node
            # while the clean-up retires it
            stack.site_extra["vcluster"]["preemption"]["enabled"] = False
            stack.write_site_pillar()
            # a job of a test that failed half-way would wait for a node that is gone, and run on the
            # next module's node of that name (slurmctld keeps it across restarts)
            slurm("scancel", *SEEN.get("jobs", []), check=False)
            if (stack.run("vcluster.status").data or {}).get("nodes"):  # a test stopped half-way
                stack.retire_everything()  # while the provider is still in pillar
    took = apply_controller(stack)  # the stack's own policy again: no preemption hooks
    print(f"\nslurm.controller without them: {took} s")
    assert slurm_setting("PrologSlurmctld") == "(null)"


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


def counter_job(name, count):
    """A job on ``name`` writing 1..count, one line a second; ``(job, path)``."""
    path = "/tmp/vm-counter.$SLURM_JOB_ID"
    job = submit("-p", "htc", "-w", name, script=f"for i in $(seq 1 {count}); do echo $i >> {path}; sleep 1; done")
    wait_jobs([job], states=("RUNNING",), timeout=120)
    return job, path.replace("$SLURM_JOB_ID", job)


def show_job(job_id):
    out = slurm("scontrol", "show", "-o", "job", str(job_id))
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def timed_run(stack, *args, timeout=900):
    start = time.monotonic()
    ret = stack.run(*args, timeout=timeout)
    return ret, round(time.monotonic() - start, 1)


def registry(stack, name):
    return stack.run("vcluster.status").data["nodes"][name]


def wait_until(predicate, timeout, what, every=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(every)


def node_event(stack, event_listener, name, state, after):
    """The newest ``vcluster/node/<name>/<state>`` event's data since ``after`` (time.time()), or None."""
    events = event_listener.get_events([(stack.master_id, f"vcluster/node/{name}/{state}")], after_time=after)
    return max(events, key=lambda e: e.stamp).data if events else None


def slurm_has_instance_fields():
    """Slurm 23.11+ keeps InstanceId/InstanceType/Extra for cloud accounting (vcluster.slurm.instance)."""
    version = slurm("sinfo", "--version").split()[-1]
    return tuple(int(x) for x in version.split(".")[:2]) >= (23, 11)


def test_vm_nodes_join_slurm_like_containers(vm_stack, vms, virt, hv2):
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
        mem_total = int(on_node(vm_stack, name, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")) // 1024
        assert mem_total >= MEMORY, f"{name}: guest MemTotal {mem_total} MiB < RealMemory {MEMORY}"
    status = vm_stack.run("vcluster.status").data["nodes"]
    assert {n: status[n]["state"] for n in vms} == dict.fromkeys(vms, "ready")
    assert {status[n]["instance_state"] for n in vms} == {"running"}
    # placement: the most free memory first, so one guest on each hypervisor; a real VM, QEMU runs it
    hosts = {n: status[n]["host"] for n in vms}
    assert sorted(hosts.values()) == ["hv1", "hv2"], hosts
    first = next(n for n, h in hosts.items() if h == "hv1")
    second = next(n for n, h in hosts.items() if h == "hv2")
    assert domain(virt, first).isActive() and qemu_pid(first)
    assert domain(hv2["conn"], second).isActive() and qemu_pid(second, hv2["run_dir"])
    assert domain(virt, second) is None and domain(hv2["conn"], first) is None
    SEEN.update(node=first, other=second)


def test_a_preempting_job_on_the_host_saves_the_colocated_vm(vm_stack, vms, virt, event_listener):
    """The poster scenario: a batch job on hv1's bare metal; the policy saves the VM there (QEMU gone)."""
    name, other = SEEN["node"], SEEN["other"]
    job, path = counter_job(name, COUNT_TO)
    SEEN.update(job=job, path=path)
    wait_lines(vm_stack, name, path, 3, 60)
    pid = qemu_pid(name)
    since = time.time()
    high = submit("-p", "batch", "-w", vm_stack.hostname, script=f"sleep {SAVE_FOR}")
    wait_jobs([high], states=("RUNNING",), timeout=60)
    started = time.monotonic()
    SEEN.update(high=high, high_started=started)
    dom = domain(virt, name)
    wait_until(lambda: not dom.isActive() and dom.hasManagedSaveImage(0), 180, f"{name} saved by job {high}")
    saved_after = time.monotonic() - started
    event = wait_until(lambda: node_event(vm_stack, event_listener, name, "suspended", since), 60,
                       f"the suspended event of {name}")
    print(f"\npreemption: {name} saved {saved_after:.1f} s after job {high} was seen running; "
          f"suspended event {event}")
    assert event["mode"] == "save" and event["reason"] == f"preempted by job {high}", event
    assert event["jobs"] == [job]
    assert isinstance(event.get("freed_mib"), int) and event["freed_mib"] > 0, event
    assert qemu_pid(name) is None and not os.path.exists(f"/proc/{pid}")
    assert wait_jobs([job], states=("SUSPENDED",), timeout=30) == {job: "SUSPENDED"}
    status = vm_stack.run("vcluster.status").data["nodes"]
    assert status[name]["state"] == "suspended" and status[name]["reason"] == f"preempted by job {high}"
    assert status[other]["state"] == "ready"  # on hv2: not co-located with the job, left alone


def test_nothing_is_scheduled_onto_a_saved_node(vm_stack, vms):
    saved, other = SEEN["node"], SEEN["other"]
    pinned = submit("-p", "htc", "-w", saved, script="hostname")
    anywhere = submit("-p", "htc", script="hostname")
    SEEN["pinned"] = pinned
    wait_jobs([anywhere], timeout=120)
    assert show_job(anywhere)["NodeList"] == other  # it ran elsewhere
    assert_pinned_waits()


def assert_pinned_waits():
    """The job pinned to the saved node is still pending and the node holds no allocation."""
    pinned, saved = SEEN["pinned"], SEEN["node"]
    assert job_states([pinned]) == {pinned: "PENDING"}
    state = node_info(saved)["State"]
    assert state.split("+")[0] not in ("ALLOCATED", "MIXED") and "DOWN" not in state, state


HYPERVISORS = ("hv1", "hv2")


def hypervisor(virt, hv2, host):
    """``(connection, QEMU run directory)`` of hypervisor ``host``."""
    return {"hv1": (virt, "/run/libvirt"), "hv2": (hv2["conn"], hv2["run_dir"])}[host]


def assert_moved(stack, virt, hv2, name, address, dest, instance, path, before):
    """The node runs on ``dest`` only, keeps its name and address, and its job counts there again.

    The registry's host follows, and Slurm's Extra where the release has it; the guest clock is
    within a second of the host's; the job pinned to the saved node still waits.
    """
    job = SEEN["job2"]
    source = next(h for h in HYPERVISORS if h != dest)
    assert job_states([job]) == {job: "RUNNING"}
    assert qemu_pid(name, hypervisor(virt, hv2, dest)[1]) is not None
    assert domain(hypervisor(virt, hv2, source)[0], name) is None
    status = registry(stack, name)
    assert (status["state"], status["host"], status["address"]) == ("ready", dest, address), status
    info = node_info(name)
    assert info["NodeName"] == name and info["NodeAddr"] == address
    if slurm_has_instance_fields():  # Slurm is told where the instance runs now
        assert info.get("InstanceId") == instance and parse_extra(info.get("Extra"))["host"] == dest, info
    wait_lines(stack, name, path, len(before) + 2, 60)  # counting where it arrived
    assert abs(guest_offset(hypervisor(virt, hv2, dest)[0], name)) < 1
    assert_pinned_waits()


def resume_on_hv1(stack, event_listener, name, label):
    """``vcluster.resume host=hv1`` of suspended ``name`` on hv2: ready, and the move's event says hv2 -> hv1.

    The node moved while suspended (its ``suspended`` event of the move), then ran again on hv1.
    """
    since = time.time()
    ret, resume_s = timed_run(stack, "vcluster.resume", f"nodes={name}", "host=hv1")
    assert ret.data["result"] is True, ret.data
    assert ret.data["nodes"] == {name: "ready"}, ret.data
    moved = node_event(stack, event_listener, name, "suspended", since)
    print(f"\n{label} {resume_s} s: {ret.data.get('resumed')}; the move's event {moved}")
    assert moved and moved.get("migrated") is True and (moved["source"], moved["host"]) == ("hv2", "hv1"), moved


def test_counter_job_survives_a_pause_and_a_resume_on_another_host(vm_stack, vms, virt, hv2, event_listener):
    """Meanwhile on hv2: a pause of PAUSE_FOR s, then ``vcluster.resume host=hv1``: moved paused, resumed on hv1."""
    name = SEEN["other"]
    job, path = counter_job(name, COUNT_TO_2)
    SEEN.update(job2=job, path2=path)
    wait_lines(vm_stack, name, path, 3, 60)
    pid = qemu_pid(name, hv2["run_dir"])
    instance = node_info(name).get("InstanceId")

    ret, took = timed_run(vm_stack, "vcluster.suspend", f"nodes={name}", "mode=pause")
    assert ret.data["result"] is True, ret.data
    assert ret.data["freed_mib"] == {name: 0}  # a pause keeps QEMU and its memory
    assert job_states([job]) == {job: "SUSPENDED"}
    assert qemu_pid(name, hv2["run_dir"]) == pid
    time.sleep(PAUSE_FOR)  # the node stays paused this long
    assert_pinned_waits()
    resume_on_hv1(vm_stack, event_listener, name,
                  f"pause: suspend {took} s, {PAUSE_FOR} s paused, resume host=hv1 (moved paused, then resumed)")
    before = counter_lines(vm_stack, name, path)  # the resume returns once the moved node's minion answers
    assert_moved(vm_stack, virt, hv2, name, vms[name], "hv1", instance, path, before)


def test_live_migration_with_a_running_job(vm_stack, vms, virt, hv2):
    """``vcluster.migrate`` back while the job counts, to the hypervisor the provider picks (hv2).

    Name, address, NodeAddr and the job are kept (Slurm never sees it stop); the registry's host
    follows, and Slurm's Extra where the release has it.
    """
    name, job, path = SEEN["other"], SEEN["job2"], SEEN["path2"]
    instance = node_info(name).get("InstanceId")
    before = counter_lines(vm_stack, name, path)
    assert len(before) < COUNT_TO_2 - 5, f"the job is nearly done ({len(before)} lines): nothing left to move"
    ret, took = timed_run(vm_stack, "vcluster.migrate", f"node={name}")
    assert ret.data["result"] is True, ret.data
    print(f"\nlive migration hv1 -> hv2 with job {job} running: vcluster.migrate {took} s, "
          f"provider {ret.data.get('migration')}")
    assert (ret.data["host"], ret.data["address"], ret.data["state"]) == ("hv2", vms[name], "ready"), ret.data
    assert ret.data["migration"]["live"] is True and ret.data["migration"]["source"] == "hv1"
    assert_moved(vm_stack, virt, hv2, name, vms[name], "hv2", instance, path, before)


def test_counter_job_survives_a_save_and_a_resume_on_another_host(vm_stack, vms, virt, hv2, event_listener):
    """Back on hv2: ``vcluster.suspend mode=save``, then ``vcluster.resume host=hv1``: moved saved, restored on hv1.

    The saved guest is restored paused on hv2, moved paused and saved again on hv1 (libvirt_migrate),
    then the resume restores it there: the job counts on, name and address kept.
    """
    name, job, path = SEEN["other"], SEEN["job2"], SEEN["path2"]
    instance = node_info(name).get("InstanceId")
    before = counter_lines(vm_stack, name, path)
    assert len(before) < COUNT_TO_2 - 5, f"the job is nearly done ({len(before)} lines): nothing left to move"
    ret, took = timed_run(vm_stack, "vcluster.suspend", f"nodes={name}", "mode=save")
    assert ret.data["result"] is True, ret.data
    freed = ret.data["freed_mib"][name]
    assert freed > 0, ret.data  # QEMU gone, its memory with it
    assert job_states([job]) == {job: "SUSPENDED"}
    assert qemu_pid(name, hv2["run_dir"]) is None
    assert domain(hv2["conn"], name).hasManagedSaveImage(0)
    resume_on_hv1(vm_stack, event_listener, name,
                  f"save: suspend {took} s (freed {freed} MiB), resume host=hv1 (moved saved, then restored)")
    assert_moved(vm_stack, virt, hv2, name, vms[name], "hv1", instance, path, before)


def test_the_moved_nodes_job_completes_unbroken(vm_stack):
    name, job, path = SEEN["other"], SEEN["job2"], SEEN["path2"]
    final = wait_jobs([job], timeout=COUNT_TO_2 + 120)
    assert final == {job: "COMPLETED"}
    assert show_job(job)["Restarts"] == "0"
    assert_not_requeued([job])
    lines = counter_lines(vm_stack, name, path)
    assert lines == list(range(1, COUNT_TO_2 + 1)), lines  # one run, no gap, no repeat: paused, moved paused, moved live


def test_a_vm_whose_qemu_is_killed_is_set_down(vm_stack, vms, virt, hv2):
    victim = SEEN["other"]
    pid = qemu_pid(victim, hypervisor(virt, hv2, registry(vm_stack, victim)["host"])[1])
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
    assert_pinned_waits()  # the saved node is never judged dead
    SEEN["dead"] = victim


def test_the_preempting_jobs_end_restores_the_vm_and_its_job_finishes(vm_stack, vms, virt, event_listener):
    job, name, path, pinned, high = SEEN["job"], SEEN["node"], SEEN["path"], SEEN["pinned"], SEEN["high"]
    assert job_states([job, pinned]) == {job: "SUSPENDED", pinned: "PENDING"}
    SEEN["ended_at"] = time.time()
    assert wait_jobs([high], timeout=SAVE_FOR + 120) == {high: "COMPLETED"}
    ended = time.monotonic()
    dom = domain(virt, name)
    wait_until(dom.isActive, 120, f"{name} restored after job {high} ended", every=0.2)
    restored = time.monotonic() - ended
    final = wait_jobs([job, pinned], timeout=300 + COUNT_TO)
    print(f"\npreemption over: {name} running again {restored:.1f} s after job {high} was seen completed; "
          f"its job and the pinned one completed {time.monotonic() - ended:.0f} s after "
          f"({time.monotonic() - SEEN['high_started']:.0f} s after the job started)")
    assert final == {job: "COMPLETED", pinned: "COMPLETED"}
    assert show_job(job)["Restarts"] == "0"
    assert_not_requeued([job, pinned, high])
    lines = counter_lines(vm_stack, name, path)
    print(f"counter: {len(lines)} lines, first {lines[:3]}, last {lines[-3:]}")
    assert lines == list(range(1, COUNT_TO + 1)), lines  # one run, no gap, no repeat
    assert show_job(pinned)["NodeList"] == name  # it ran once the node was back
    # the jobs resume once slurmd answers; the node is ready once its restarted minion answers too
    wait_until(lambda: registry(vm_stack, name)["state"] == "ready", 180, f"{name} ready after its restore")
    status = registry(vm_stack, name)
    assert (status["state"], status["host"]) == ("ready", "hv1"), status
    offset = guest_offset(virt, name)
    print(f"guest clock offset now {offset:+.3f} s")
    assert abs(offset) < 1


def test_resume_event_shows_the_guest_clock_offsets(vm_stack, event_listener):
    name = SEEN["node"]
    data = node_event(vm_stack, event_listener, name, "ready", SEEN["ended_at"])
    assert data, f"no ready event of {name} after the preempting job ended"
    print(f"\nready event: guest clock {data['clock_offset_before']} s before the step, "
          f"{data['clock_offset_after']} s after; restore {data.get('seconds')} s; "
          f"minion reconnect {data.get('minion_reconnect')}, restart {data.get('minion_restart')}")
    # saved longer than munge's credential TTL, and the clock put right
    assert data["clock_offset_before"] <= -MUNGE_TTL and abs(data["clock_offset_after"]) < 1, data


def test_retire_leaves_nothing(vm_stack, vms, virt, vm_network, hv2):
    ret = vm_stack.run("vcluster.retire", f"nodes={','.join(sorted(vms))}", "wait=120")
    assert ret.data["result"] is True, ret.data
    assert set(ret.data["nodes"].values()) == {"released"}
    keys = vm_stack.master.salt_key_cli().run("--list", "accepted", "--out", "json").data.get("minions", [])
    pool_volumes = virt.storagePoolLookupByName(VIRT_POOL)
    pool_volumes.refresh(0)
    volumes = pool_volumes.listVolumes()
    net_xml = vm_network["net"].XMLDesc(0)
    for name, address in vms.items():
        assert domain(virt, name) is None and domain(hv2["conn"], name) is None  # instance, on either hypervisor
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
