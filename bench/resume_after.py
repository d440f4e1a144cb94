#!/usr/bin/env python3
"""Resume time against the length of the freeze: must not grow with it.

Prints one JSON object. On the real local stack (the pytest integration
stack: salt-master, reactor, controller minion, slurmctld, LXD), a counter
job runs on a virtual node; the node is suspended (frozen) with
``vcluster.suspend`` for each length asked for, then resumed with
``vcluster.resume``, whose wall time is measured (provider thaw, minion and
slurmd check, ``scontrol resume`` of the job, drain lifted), together with
the time until Slurm shows the job RUNNING again. The baseline is the
shortest freeze of the same run; the goal is a resume after any freeze
within 1 s of it. The job must end COMPLETED with one accounting record
and an unbroken counter.

The stack is ``tests/integration/test_suspend_resume.py::
test_resume_time_after_freeze_sample``; this script runs it and reads the
timings it writes.

``--provider libvirt``: the same on a libvirt/QEMU VM node (TCG or KVM, as
the provider detects; ``--vm-memory`` MiB, 1 vCPU) suspended with
``vcluster.suspend mode=save`` (managed save: QEMU gone) for each length,
from ``tests/integration/test_vm_resume_sample.py`` on the session stack
(one hypervisor, this host's libvirtd, started by the module with
scripts/libvirt-up.sh; the VM image built or reused by image-vm/build.sh).
Besides the resume's wall time and the job RUNNING again, each sample has
what the resume return and the ``ready`` event tell (the restore's seconds,
the guest clock offset before and after the step, the guest minion's
restart) and the seconds from the resume call to the node's
``salt/minion/<name>/start`` event (its minion back on the master's bus).
300 s is munge's credential TTL: the length that matters.

Usage (root). Do not wrap it in ``flock`` on the stack lock: the pytest run
it starts takes that lock itself::

    /opt/vcluster/venv/bin/python bench/resume_after.py [--freezes 5,60,300]
        [--provider lxd|libvirt] [--vm-memory 512]
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
GOAL_ADDED_SECONDS = 1.0


SAMPLE = {
    "lxd": "tests/integration/test_suspend_resume.py::test_resume_time_after_freeze_sample",
    "libvirt": "tests/integration/test_vm_resume_sample.py::test_vm_resume_time_after_save_sample",
}


def run(freezes, provider="lxd", vm_memory=512):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="vcbench-"))
    out = tmp / "resume_after.json"
    env = dict(os.environ, VCLUSTER_BENCH_OUT=str(out), VCLUSTER_BENCH_FREEZES=",".join(map(str, freezes)),
               VCLUSTER_BENCH_VM_MEMORY=str(vm_memory))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "-s", SAMPLE[provider]]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    (tmp / "pytest.log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    if not out.exists():
        return None, f"stack run failed: {tail} (log {tmp / 'pytest.log'})"
    data = json.loads(out.read_text())
    if proc.returncode != 0:  # the VM sample writes its numbers before it asserts the job's survival
        data = {"samples": data} if isinstance(data, list) else data
        data["error"] = f"stack run failed after the numbers were written: {tail} (log {tmp / 'pytest.log'})"
    return data, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freezes", default="5,60,300", help="freeze lengths in seconds, comma-separated")
    parser.add_argument("--provider", choices=sorted(SAMPLE), default="lxd",
                        help="lxd: a container frozen (default); libvirt: a VM saved (mode=save)")
    parser.add_argument("--vm-memory", type=int, default=512, help="the VM guest's memory, MiB (--provider libvirt)")
    args = parser.parse_args(argv)
    try:
        freezes = sorted(int(x) for x in args.freezes.split(","))
    except ValueError:
        parser.error(f"--freezes must be whole seconds separated by commas, got {args.freezes!r}")
    if not freezes or freezes[0] <= 0:
        parser.error(f"--freezes must be positive, got {args.freezes!r}")
    if args.vm_memory <= 0:
        parser.error(f"--vm-memory must be positive MiB, got {args.vm_memory!r}")
    data, error = run(freezes, args.provider, args.vm_memory)
    result = {"benchmark": "resume_after", "provider": args.provider, "goal_added_seconds": GOAL_ADDED_SECONDS,
              "freezes": freezes, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"host": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release()}}
    if error:
        result["error"] = error
        print(json.dumps(result, indent=2))
        return 1
    if isinstance(data, list):  # the container sample: the samples only
        data = {"samples": data}
    samples = data.pop("samples")
    result.update(data)  # the VM sample: guest, domain type, the job's survival
    length = "frozen_seconds" if args.provider == "lxd" else "saved_seconds"
    base = samples[0]["resume_seconds"]
    result["baseline_shortest_freeze"] = samples[0]
    result["samples"] = samples
    result["added_seconds"] = {str(s[length]): round(s["resume_seconds"] - base, 3) for s in samples[1:]}
    if args.provider == "libvirt":
        base_job = samples[0]["job_running_seconds"]
        result["added_seconds_job_running"] = {str(s[length]): round(s["job_running_seconds"] - base_job, 3)
                                               for s in samples[1:]}
    result["goal_met"] = all(v <= GOAL_ADDED_SECONDS for v in result["added_seconds"].values())
    print(json.dumps(result, indent=2))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
