#!/usr/bin/env python3
"""Preemption latency: vcluster's event-driven VM freeze against Slurm's own SUSPEND,GANG.

Prints one JSON object. Both sides run the same two jobs, measured the same
way (one poll loop every 0.1 s watching both the high-priority job and the
victim):

- ``vcluster``: on the real local stack (salt-master, reactor, controller
  minion, slurmctld, LXD). A low-priority counter job runs on a virtual node
  (profile ``htc``); a high-priority job (partition ``batch``) starts on the
  host, which is the bare-metal Slurm node and the LXD server. Measured:
  seconds from the high job seen RUNNING to the virtual node seen ``Frozen``
  (PrologSlurmctld -> spool line -> events engine -> reactor ->
  ``vcluster.on_slurm_event`` -> scontrol suspend + LXD freeze), and from the
  high job seen ended to the node ``Running`` again with its job RUNNING.
  The stack is the pytest integration stack: this script runs
  ``tests/integration/test_suspend_resume.py::test_preemption_latency_sample``
  and reads the timings it writes.
- ``baseline_slurm``: a throwaway slurmctld (tests/harness) with
  ``PreemptType=preempt/partition_prio`` and ``PreemptMode=SUSPEND,GANG``;
  the low job in a PriorityTier=1 partition, the high job in a PriorityTier=10
  partition, on the same 1-CPU node. Measured: high RUNNING -> low
  SUSPENDED, and high ended -> low RUNNING.

- ``vm``: libvirt VM nodes (TCG or KVM, as the provider detects) of
  512 MiB, 1 GiB and 2 GiB (``--vm-sizes``), preempted with ``mode: save``
  on the same stack:
  ``tests/integration/test_vm_preempt_sample.py``, in the same pytest run as
  the container sample. Measured per size: high job seen RUNNING -> the
  node's domain seen shut off with a managed save image (QEMU gone), high
  job seen ended -> domain active again with the node's counter job
  RUNNING, ``freed_mib`` from the node's ``suspended`` event (QEMU's PSS
  before the save) and its share of the guest's RAM; the counter job must
  complete unbroken (reported under ``low_job_survived``).

Goals: the container freeze adds at most 2 s to each of the baseline's two
latencies; a VM save adds at most 3 s over the baseline for 1 GiB, a VM
restore takes at most 3 s, and a save frees at least 90% of the guest's RAM.

Usage (root; the stack's host-wide lock serialises it with tests)::

    VCLUSTER_TEST_LXD_NETWORK=vc4br VCLUSTER_TEST_LXD_CIDR=10.84.0.1/24 \\
        /opt/vcluster/venv/bin/python bench/preempt.py [--repeat 3] [--skip-stack] [--skip-vm]
            [--vm-sizes 512,1024,2048]

The VM rows need libvirt-python and QEMU; the sample module starts libvirtd
(scripts/libvirt-up.sh) and builds or reuses the VM image (image-vm/build.sh)
itself. Do not wrap this script in ``flock`` on the stack lock: the pytest
run it starts takes that lock itself.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.slurm import SlurmHarness, unavailable  # noqa: E402

GOAL_ADDED_SECONDS = 2.0
GOAL_VM_SAVE_ADDED_SECONDS = 3.0  # for the 1 GiB guest
GOAL_VM_RESTORE_SECONDS = 3.0
GOAL_VM_FREED_OF_GUEST = 0.9
VM_GOAL_SIZE = 1024
POLL = 0.1


def _mem_total_mib():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def _stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "samples": len(values)}


def watch(high_state, victim_frozen, timeout=120):
    """Poll both; return (seconds high RUNNING -> victim frozen, high ended -> victim thawed)."""
    t_run = t_frozen = t_end = t_thawed = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        state = high_state()
        frozen = victim_frozen()
        if t_run is None and state in ("RUNNING", "COMPLETING", "COMPLETED"):
            t_run = now
        if t_run is not None and t_frozen is None and frozen:
            t_frozen = now
        if t_run is not None and t_end is None and state in ("COMPLETING", "COMPLETED", ""):
            t_end = now
        if t_end is not None and t_frozen is not None and not frozen:
            t_thawed = now
            break
        time.sleep(POLL)
    freeze = (t_frozen - t_run) if (t_frozen and t_run) else None
    thaw = (t_thawed - t_end) if (t_thawed and t_end) else None
    return freeze, thaw


def baseline(repeat):
    reason = unavailable()
    if reason:
        return {"error": reason}
    SlurmHarness.purge_stale()
    partitions = {
        "low": "Nodes=ALL PriorityTier=1 Default=YES MaxTime=INFINITE State=UP",
        "high": "Nodes=ALL PriorityTier=10 MaxTime=INFINITE State=UP",
    }
    extra = ["PreemptType=preempt/partition_prio", "PreemptMode=SUSPEND,GANG", "SchedulerTimeSlice=30"]
    freezes, thaws = [], []
    with SlurmHarness(partitions=partitions, extra_conf=extra) as h:
        h.add_node("bn1", cpus=1, memory=400)
        for _ in range(repeat):
            low = h.sbatch(wrap="for i in $(seq 1 40); do sleep 1; done", partition="low", nodelist="bn1", mem=100)
            h.wait_job(low, ("RUNNING",), timeout=60)
            high = h.sbatch(wrap="sleep 5", partition="high", nodelist="bn1", mem=100)
            freeze, thaw = watch(lambda high=high: h.job_state(high), lambda low=low: h.job_state(low) == "SUSPENDED")
            freezes.append(freeze)
            thaws.append(thaw)
            h.cancel_all()
    return {"freeze_seconds": _stat(freezes), "resume_seconds": _stat(thaws),
            "config": extra, "samples_raw": {"freeze": freezes, "resume": thaws}}


def vcluster_stack(repeat, vm_sizes=None):
    """The container sample and (``vm_sizes``) the VM one, in one pytest run (one stack lock)."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="vcbench-"))
    out, vm_out = tmp / "preempt.json", tmp / "preempt-vm.json"
    env = dict(os.environ, VCLUSTER_BENCH_OUT=str(out), VCLUSTER_BENCH_VM_OUT=str(vm_out),
               VCLUSTER_BENCH_REPEAT=str(repeat))
    tests = ["tests/integration/test_suspend_resume.py::test_preemption_latency_sample"]
    if vm_sizes:
        env["VCLUSTER_BENCH_VM_SIZES"] = ",".join(str(s) for s in vm_sizes)
        # a module of the session stack: pytest runs it before the container module's own stack
        tests.insert(0, "tests/integration/test_vm_preempt_sample.py::test_vm_preemption_latency_sample")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "--show-capture=no", *tests]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    (tmp / "pytest.log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    if out.exists():
        data = json.loads(out.read_text())
        container = {"freeze_seconds": _stat(data["freeze"]), "resume_seconds": _stat(data["resume"]),
                     "samples_raw": data}
    else:
        container = {"error": f"stack run failed: {tail} (log {tmp / 'pytest.log'})"}
    vm = None
    if vm_sizes:
        vm = _vm_rows(json.loads(vm_out.read_text())) if vm_out.exists() else \
            {"error": f"VM run failed: {tail} (log {tmp / 'pytest.log'})"}
    return container, vm


def _vm_rows(data):
    rows = []
    for size in data["sizes"]:
        samples = size["samples"]
        freed = [s["freed_of_guest"] for s in samples]
        rows.append({
            "guest_mib": size["guest_mib"], "domain_type": size["domain_type"],
            "save_seconds": _stat([s["save_s"] for s in samples]),
            "restore_seconds": _stat([s["restore_s"] for s in samples]),
            "restore_domain_seconds": _stat([s["restore_domain_s"] for s in samples]),
            "freed_mib": _stat([s["freed_mib"] for s in samples]),
            "freed_of_guest": _stat(freed),
            "qemu_rss_mib_before": _stat([s["qemu_rss_mib_before"] for s in samples]),
            "available_delta_mib": _stat([s["available_delta_mib"] for s in samples]),
            "low_job_survived": size["low_job_survived"], "expand_seconds": size["expand_s"],
            "samples_raw": samples,
        })
    return {"machine": data.get("machine"), "high_job_seconds": data.get("high_job_seconds"), "sizes": rows}


def _median(row, key):
    try:
        return row[key]["median"]
    except (KeyError, TypeError):
        return None


def _added(value, base):
    return round(value - base, 3) if value is not None and base is not None else None


def vm_goals(vm, baseline_row):
    """Per size: added over Slurm's baseline; the goals checked on the 1 GiB guest (freed on every size)."""
    base_freeze, base_resume = _median(baseline_row, "freeze_seconds"), _median(baseline_row, "resume_seconds")
    goals = {}
    for row in vm.get("sizes", []):
        row["added_seconds"] = {"save": _added(_median(row, "save_seconds"), base_freeze),
                                "restore": _added(_median(row, "restore_seconds"), base_resume)}
        freed = _median(row, "freed_of_guest")
        survived = row["low_job_survived"]
        row["goals"] = {
            "restore_le_3s": (_median(row, "restore_seconds") or 1e9) <= GOAL_VM_RESTORE_SECONDS,
            "freed_ge_90pct": freed is not None and freed >= GOAL_VM_FREED_OF_GUEST,
            "low_job_survived": survived["state"] == "COMPLETED" and survived["lines_unbroken"]
            and not survived["requeued"],
        }
        if row["guest_mib"] == VM_GOAL_SIZE:
            added = row["added_seconds"]["save"]
            row["goals"]["save_added_le_3s"] = added is not None and added <= GOAL_VM_SAVE_ADDED_SECONDS
        goals[str(row["guest_mib"])] = row["goals"]
    return goals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-stack", action="store_true", help="baseline only")
    parser.add_argument("--skip-vm", action="store_true", help="no VM rows")
    parser.add_argument("--vm-sizes", default="512,1024,2048", help="VM guest sizes, MiB")
    args = parser.parse_args(argv)
    result = {"benchmark": "preempt", "goal_added_seconds": GOAL_ADDED_SECONDS,
              "goal_vm": {"save_added_seconds_1gib": GOAL_VM_SAVE_ADDED_SECONDS,
                          "restore_seconds": GOAL_VM_RESTORE_SECONDS, "freed_of_guest": GOAL_VM_FREED_OF_GUEST},
              "machine": {"host": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
                          "mem_total_mib": _mem_total_mib()},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "baseline_slurm": baseline(args.repeat)}
    if not args.skip_stack:
        sizes = None if args.skip_vm else [int(x) for x in args.vm_sizes.split(",")]
        result["vcluster"], vm = vcluster_stack(args.repeat, sizes)
        if vm is not None:
            result["vm"] = vm
            result["vm_goals"] = vm_goals(vm, result["baseline_slurm"]) if "sizes" in vm else None
    added = {}
    for key in ("freeze_seconds", "resume_seconds"):
        try:
            added[key] = round(result["vcluster"][key]["median"] - result["baseline_slurm"][key]["median"], 3)
        except (KeyError, TypeError):
            added[key] = None
    result["added_seconds"] = added
    result["goal_met"] = all(v is not None and v <= GOAL_ADDED_SECONDS for v in added.values())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
