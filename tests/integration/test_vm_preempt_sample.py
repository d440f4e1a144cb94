"""bench/preempt.py's VM rows: preemption latency of libvirt VM nodes saved by a job on their host.

Run by bench/preempt.py only: skipped at collection (no fixture, stack,
libvirtd or VM started) unless ``VCLUSTER_BENCH_OUT`` is set. Writes JSON
to ``VCLUSTER_BENCH_VM_OUT`` (else ``VCLUSTER_BENCH_OUT``).

The session's stack with a libvirt provider of one hypervisor, ``hv1``
(this host's libvirtd; the host is also the bare-metal Slurm node of
partition ``batch``), on a libvirt network of the module's own
(``vcl-vm-bench``, 10.85.0.1/24, ``forward mode='open'``), a profile per
guest size (``VCLUSTER_BENCH_VM_SIZES``, MiB, default ``512,1024,2048``;
partition ``htc``) and preemption of ``htc`` by ``batch`` in ``mode: save``
with ``hypervisors: {<host>: hv1}``, as tests/integration/test_vm_nodes.py.

Per size, one node at a time (so that a save has the host to itself): one
``vcluster.expand``, a counter job on the node (a line a second of running
time), then ``VCLUSTER_BENCH_REPEAT`` times a ``batch`` job of
:data:`HIGH_SECONDS` s on the host, watched by one loop every 0.1 s (as
bench/preempt.py's ``watch()``):

* ``save``: high job seen RUNNING -> the node's domain seen shut off with a
  managed save image (libvirt: QEMU gone, its memory given back);
* ``restore``: high job seen ended -> the domain active again *and* the
  counter job RUNNING in Slurm (``domain_active`` beside it: the domain
  alone);
* ``freed_mib``: from the node's ``vcluster/node/<name>/suspended`` event
  (QEMU's PSS before the save, vcluster.providers.libvirt_memory), with
  ``available_delta_mib`` and QEMU's VmRSS read here before each save.

The counter job must survive every save: it ends COMPLETED with lines
1..N unbroken, one ``sacct -D`` record and ``Restarts=0`` (reported, and
asserted after the numbers are written).
"""

import ipaddress
import json
import os
import pathlib
import platform
import time

import pytest

if not os.environ.get("VCLUSTER_BENCH_OUT"):
    pytest.skip("run by bench/preempt.py (VCLUSTER_BENCH_OUT)", allow_module_level=True)

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")

from tests.integration.libvirt_fixtures import module_network, qemu_pid  # noqa: E402
from tests.integration.stack import (  # noqa: E402
    VIRT_URI,
    accounted_jobs,
    job_states,
    sbatch,
    slurm,
    vm_site,
    wait_jobs,
)
from tests.integration.test_vm_nodes import (  # noqa: E402
    apply_controller,
    node_event,
    on_node,
    virt,  # noqa: F401 - the fixture: libvirtd up, the VM image built or cached
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NETWORK = "vcl-vm-bench"
BRIDGE = "vclvmb0"
CIDR = os.environ.get("VCLUSTER_BENCH_VM_CIDR", "10.85.0.1/24")
SIZES = [int(x) for x in os.environ.get("VCLUSTER_BENCH_VM_SIZES", "512,1024,2048").split(",")]
REPEAT = int(os.environ.get("VCLUSTER_BENCH_REPEAT", "3"))
HIGH_SECONDS = 15  # the preempting job's length
POLL = 0.1
COUNTER = "/tmp/vm-bench.$SLURM_JOB_ID"


@pytest.fixture(scope="module")
def bench_stack(stack, virt):
    with module_network(virt, NETWORK, BRIDGE, CIDR, 20, forward="open") as net:
        base = str(ipaddress.ip_interface(CIDR).ip).rsplit(".", 1)[0]
        extra = vm_site(net, "tnodeb[1-4]", f"{base}.100-{base}.103", SIZES[0], pool="vmbench")
        profile = extra["vcluster"]["profiles"].pop("vm")
        extra["vcluster"]["profiles"] = {f"vm{size}": dict(profile, memory=size) for size in SIZES}
        extra["vcluster"]["providers"]["virt"].update(uri=None, hosts={"hv1": {"uri": VIRT_URI}})
        extra["vcluster"]["preemption"] = {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"],
                                           "mode": "save", "hypervisors": {stack.hostname: "hv1"}}
        with stack.extended_site(extra):
            try:
                apply_controller(stack)
                yield stack
            finally:
                stack.site_extra["vcluster"]["preemption"]["enabled"] = False
                stack.write_site_pillar()
                if (stack.run("vcluster.status").data or {}).get("nodes"):
                    stack.retire_everything()
        apply_controller(stack)


def vm_rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def high_state(job):
    return slurm("squeue", "-h", "-j", job, "-o", "%T", check=False).strip()


def watch(dom, high, low, timeout=240):
    """(high RUNNING -> saved, high ended -> domain active, high ended -> domain active and low RUNNING)."""
    t_run = t_saved = t_end = t_active = t_back = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        state = high_state(high)
        active = dom.isActive()
        saved = not active and dom.hasManagedSaveImage(0)
        if t_run is None and state in ("RUNNING", "COMPLETING", ""):
            t_run = now
        if t_run is not None and t_saved is None and saved:
            t_saved = now
        if t_run is not None and t_end is None and state in ("COMPLETING", "COMPLETED", ""):
            t_end = now
        if t_end is not None and t_saved is not None and active:
            t_active = t_active or now
            if high_state(low) == "RUNNING":
                t_back = now
                break
        time.sleep(POLL)

    def span(a, b):
        return round(b - a, 3) if a is not None and b is not None else None

    return span(t_run, t_saved), span(t_end, t_active), span(t_end, t_back)


def one_size(stack, conn, event_listener, size):
    start = time.monotonic()
    ret = stack.run("vcluster.expand", "count=1", f"profile=vm{size}", timeout=900)
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout[-3000:]
    [name] = ret.data["nodes"]
    row = {"guest_mib": size, "node": name, "expand_s": round(time.monotonic() - start, 1),
           "domain_type": conn.lookupByName(name).XMLDesc(0).split("type='", 1)[1].split("'", 1)[0],
           "samples": []}
    count = 25 * REPEAT + 10
    low = sbatch("-p", "htc", "-w", name, script=f"for i in $(seq 1 {count}); do echo $i >> {COUNTER}; sleep 1; done")
    path = COUNTER.replace("$SLURM_JOB_ID", low)
    row["low_job"] = low
    wait_jobs([low], states=("RUNNING",), timeout=120)
    dom = conn.lookupByName(name)
    for _ in range(REPEAT):
        assert job_states([low]) == {low: "RUNNING"}, f"counter job {low} is no longer running"
        pid = qemu_pid(name)
        rss = vm_rss_mib(pid) if pid else None
        since = time.time()
        high = sbatch("-p", "batch", "-w", stack.hostname, script=f"sleep {HIGH_SECONDS}")
        save, active, back = watch(dom, high, low)
        event = node_event(stack, event_listener, name, "suspended", since) or {}
        freed = event.get("freed_mib")
        row["samples"].append({"save_s": save, "restore_domain_s": active, "restore_s": back,
                               "qemu_rss_mib_before": rss, "freed_mib": freed,
                               "freed_of_guest": round(freed / size, 3) if isinstance(freed, int) else None,
                               "available_delta_mib": event.get("available_delta_mib")})
        print(f"\n{name} ({size} MiB): saved {save} s after job {high} ran, running with job {low} {back} s "
              f"after it ended; freed {freed} MiB (QEMU RSS before {rss})")
        wait_until(lambda: stack.run("vcluster.status").data["nodes"][name]["state"] == "ready", 120,
                   f"{name} ready", every=1)
    final = wait_jobs([low], timeout=count + 180)
    lines = [int(x) for x in on_node(stack, name, f"cat {path} 2>/dev/null || true").split()]
    records = accounted_jobs([low])
    restarts = slurm("scontrol", "show", "-o", "job", low, check=False)
    restarts = next((w.split("=", 1)[1] for w in restarts.split() if w.startswith("Restarts=")), None)
    row["low_job_survived"] = {"state": final[low], "lines_unbroken": lines == list(range(1, count + 1)),
                               "lines": len(lines), "expected": count,
                               "requeued": bool(records.get(low, (None, None))[1]), "restarts": restarts}
    ret = stack.run("vcluster.retire", f"nodes={name}", "wait=120")
    assert ret.data["result"] is True, ret.data
    return row


def test_vm_preemption_latency_sample(bench_stack, virt, event_listener):
    """Per guest size: high RUNNING -> VM saved, high ended -> VM running with its job; freed_mib."""
    rows = [one_size(bench_stack, virt, event_listener, size) for size in SIZES]
    out = os.environ.get("VCLUSTER_BENCH_VM_OUT") or os.environ["VCLUSTER_BENCH_OUT"]
    pathlib.Path(out).write_text(json.dumps({"sizes": rows, "machine": platform.node(),
                                             "high_job_seconds": HIGH_SECONDS}))
    for row in rows:
        assert all(s["save_s"] is not None and s["restore_s"] is not None for s in row["samples"]), row
        survived = row["low_job_survived"]
        assert survived["state"] == "COMPLETED" and survived["lines_unbroken"] and not survived["requeued"], row
