"""bench/resume_after.py --provider libvirt: resume time of a VM node after a save of each length.

Run by bench/resume_after.py only: skipped at collection (no fixture, stack,
libvirtd or VM started) unless ``VCLUSTER_BENCH_OUT`` is set. Writes JSON
to ``VCLUSTER_BENCH_OUT``.

The session's stack with a libvirt provider of one hypervisor (this host's
libvirtd) on a libvirt network of the module's own (``vcl-vm-resume``,
10.86.0.1/24, ``forward mode='open'``) and a ``vm`` profile
(:data:`MEMORY` MiB, partition ``htc``), as tests/integration/test_vm_nodes.py;
no preemption. One ``vcluster.expand`` of one node, a counter job on it (a
line a second of running time), then for each length of
``VCLUSTER_BENCH_FREEZES`` (seconds, comma-separated, shortest first):
``vcluster.suspend mode=save`` (libvirt managed save: QEMU gone), the wait,
and ``vcluster.resume``, measured:

* ``resume_seconds``: the runner's wall time (CLI included);
* ``job_running_seconds``: from the resume call to the job RUNNING in Slurm
  (polled every 0.2 s while the runner works: it resumes the jobs once the
  node's slurmd listens, then waits for the node's minion);
* from the return's ``resumed`` (the engine's and provider's report): the
  restore's ``restore_seconds``, ``jobs_resumed_seconds`` and
  ``minion_answered_seconds`` (from the start of the node's resume), the
  guest clock offset before and after its step, the queueing of the guest
  minion's restart;
* ``minion_start_seconds``: from the resume call to the node's
  ``salt/minion/<name>/start`` event (its restarted minion back on the
  master's bus), ``ready_event_seconds`` likewise to its
  ``vcluster/node/<name>/ready`` event, whose clock offsets are reported too;
* the guest clock offset read here after the resume (guest agent).

The counter job must survive every save: COMPLETED, lines 1..N unbroken, one
``sacct -D`` record, ``Restarts=0`` (reported, and asserted after the
numbers are written).
"""

import ipaddress
import json
import os
import pathlib
import platform
import threading
import time

import pytest

if not os.environ.get("VCLUSTER_BENCH_OUT"):
    pytest.skip("run by bench/resume_after.py --provider libvirt (VCLUSTER_BENCH_OUT)", allow_module_level=True)

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")

from tests.integration.libvirt_fixtures import module_network  # noqa: E402
from tests.integration.stack import (  # noqa: E402
    accounted_jobs,
    job_states,
    sbatch,
    slurm,
    vm_site,
    wait_jobs,
)
from tests.integration.test_vm_nodes import (  # noqa: E402
    guest_offset,
    node_event,
    on_node,
    virt,  # noqa: F401 - the fixture: libvirtd up, the VM image built or cached
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NETWORK = "vcl-vm-resume"
BRIDGE = "vclvmr0"
CIDR = os.environ.get("VCLUSTER_BENCH_VM_RESUME_CIDR", "10.86.0.1/24")
MEMORY = int(os.environ.get("VCLUSTER_BENCH_VM_MEMORY", "512"))  # MiB
COUNTER = "/tmp/vm-resume.$SLURM_JOB_ID"
LINES_BETWEEN = 3  # counter lines written between two saves (the job really runs again)


@pytest.fixture(scope="module")
def resume_stack(stack, virt):  # noqa: F811
    with module_network(virt, NETWORK, BRIDGE, CIDR, 10, forward="open") as net:
        base = str(ipaddress.ip_interface(CIDR).ip).rsplit(".", 1)[0]
        extra = vm_site(net, "tnoder[1-2]", f"{base}.100-{base}.101", MEMORY, pool="vmresume")
        with stack.extended_site(extra):
            try:
                yield stack
            finally:
                if (stack.run("vcluster.status").data or {}).get("nodes"):
                    stack.retire_everything()


def counted(stack, name, path):
    return [int(x) for x in on_node(stack, name, f"cat {path} 2>/dev/null || true").split()]


def wait_lines(stack, name, path, at_least, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = counted(stack, name, path)
        except AssertionError:  # its minion reconnecting after the resume
            lines = []
        if len(lines) >= at_least:
            return lines
        assert time.monotonic() < deadline, f"{path} on {name}: {len(lines)} lines after {timeout} s"
        time.sleep(1)


def event_after(stack, event_listener, tag, since):
    """Seconds from ``since`` (time.time()) to the first ``tag`` event after it, or None."""
    events = event_listener.get_events([(stack.master_id, tag)], after_time=since)
    return round(min(e.stamp.timestamp() for e in events) - since, 3) if events else None


def one_save(stack, conn, event_listener, name, job, path, length):
    assert job_states([job]) == {job: "RUNNING"}, f"counter job {job} is no longer running"
    before = len(counted(stack, name, path))
    start = time.monotonic()
    ret = stack.run("vcluster.suspend", f"nodes={name}", "mode=save")
    suspend_s = time.monotonic() - start
    assert ret.data["result"] is True, ret.stdout[-3000:]
    saved_at = time.monotonic()
    dom = conn.lookupByName(name)
    assert not dom.isActive() and dom.hasManagedSaveImage(0), f"{name} is not saved"
    time.sleep(max(0.0, length - (time.monotonic() - saved_at)))  # the save being measured
    since = time.time()
    start = time.monotonic()
    running = {}
    watcher = threading.Thread(target=watch_running, args=(job, start, running), daemon=True)
    watcher.start()
    ret = stack.run("vcluster.resume", f"nodes={name}")
    resumed = time.monotonic() - start
    assert ret.data["result"] is True, ret.stdout[-3000:]
    watcher.join(130)
    assert "seconds" in running, f"job {job} not running 120 s after the resume began"
    offset_now = guest_offset(conn, name)
    report = (ret.data.get("resumed") or {}).get(name) or {}
    ready = node_event(stack, event_listener, name, "ready", since) or {}
    reconnect = report.get("minion_reconnect") or {}
    restart = report.get("minion_restart") or {}
    wait_lines(stack, name, path, before + LINES_BETWEEN)  # counting again before the next save
    sample = {
        "saved_seconds": round(start - saved_at, 1),
        "suspend_seconds": round(suspend_s, 3),
        "resume_seconds": round(resumed, 3),
        "job_running_seconds": running["seconds"],
        "restore_seconds": report.get("seconds"),
        "jobs_resumed_seconds": report.get("jobs_resumed"),
        "minion_answered_seconds": report.get("minion_answered"),
        "clock_offset_before": report.get("clock_offset_before"),
        "clock_offset_after": report.get("clock_offset_after"),
        "minion_reconnect_seconds": reconnect.get("seconds"),
        "minion_connections_reset": reconnect.get("connections"),
        "minion_reconnect_ok": reconnect.get("ok"),
        # the runner's fallback restart, when the minion stayed silent after the reset (None: not needed)
        "minion_restart_queued_seconds": restart.get("seconds"),
        # the minion's start event, if it started again (the fallback restart; a reconnect fires none)
        "minion_start_seconds": event_after(stack, event_listener, f"salt/minion/{name}/start", since),
        "ready_event_seconds": event_after(stack, event_listener, f"vcluster/node/{name}/ready", since),
        "ready_event_clock_offsets": [ready.get("clock_offset_before"), ready.get("clock_offset_after")],
        "guest_clock_offset_after_resume": round(offset_now, 3),
    }
    print(f"\nsaved {sample['saved_seconds']} s: {json.dumps(sample)}")
    return sample


def watch_running(job, start, out, timeout=120):
    """Poll Slurm every 0.2 s (while the resume runs) until ``job`` is RUNNING; seconds since ``start`` in ``out``."""
    deadline = start + timeout
    while time.monotonic() < deadline:
        if slurm("squeue", "-h", "-j", job, "-o", "%T", check=False).strip() == "RUNNING":
            out["seconds"] = round(time.monotonic() - start, 3)
            return
        time.sleep(0.2)


def test_vm_resume_time_after_save_sample(resume_stack, virt, event_listener):  # noqa: F811
    """Per save length: ``vcluster.resume`` wall time, job RUNNING again, clock offsets, minion reconnection."""
    stack = resume_stack
    lengths = sorted(int(x) for x in os.environ.get("VCLUSTER_BENCH_FREEZES", "5,60").split(","))
    start = time.monotonic()
    ret = stack.run("vcluster.expand", "count=1", "profile=vm", timeout=900)
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout[-3000:]
    [name] = ret.data["nodes"]
    expand_s = round(time.monotonic() - start, 1)
    dom_xml = virt.lookupByName(name).XMLDesc(0)
    domain_type = dom_xml.split("type='", 1)[1].split("'", 1)[0]
    count = 15 + 40 * len(lengths)  # running seconds: a few before, between and after the saves
    job = sbatch("-p", "htc", "-w", name, script=f"for i in $(seq 1 {count}); do echo $i >> {COUNTER}; sleep 1; done")
    path = COUNTER.replace("$SLURM_JOB_ID", job)
    wait_jobs([job], states=("RUNNING",), timeout=120)
    wait_lines(stack, name, path, LINES_BETWEEN)
    samples = [one_save(stack, virt, event_listener, name, job, path, length) for length in lengths]
    final = wait_jobs([job], timeout=count + 180)
    lines = counted(stack, name, path)
    records = accounted_jobs([job])
    shown = slurm("scontrol", "show", "-o", "job", job, check=False)
    restarts = next((w.split("=", 1)[1] for w in shown.split() if w.startswith("Restarts=")), None)
    survived = {"state": final[job], "lines_unbroken": lines == list(range(1, count + 1)), "lines": len(lines),
                "expected": count, "sacct_records": 1 + records.get(job, (None, 0))[1], "restarts": restarts}
    ret = stack.run("vcluster.retire", f"nodes={name}", "wait=120")
    result = {"provider": "libvirt", "machine": platform.node(), "domain_type": domain_type, "guest_mib": MEMORY,
              "guest_cpus": 1, "node": name, "expand_seconds": expand_s, "job": job, "samples": samples,
              "job_survived": survived, "retired": ret.data.get("result") if isinstance(ret.data, dict) else None}
    pathlib.Path(os.environ["VCLUSTER_BENCH_OUT"]).write_text(json.dumps(result))
    assert survived["state"] == "COMPLETED" and survived["lines_unbroken"], survived
    assert survived["sacct_records"] == 1 and restarts in ("0", None), survived
    assert result["retired"] is True, ret.data
