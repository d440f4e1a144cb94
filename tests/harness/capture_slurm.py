"""Capture real Slurm outputs from a harness controller into a directory.

Usage (root)::

    # the host's Slurm (Debian 12: 22.05)
    python -m tests.harness.capture_slurm tests/unit/data/slurm/22.05
    # Slurm 24.11 from a Debian 13 chroot (tests/harness/trixie_chroot.sh builds it)
    python -m tests.harness.capture_slurm --chroot /var/tmp/vcluster-trixie tests/unit/data/slurm/24.11

It builds a small cluster whose nodes are idle, allocated, mixed, draining,
drained, down and future, with running, pending, held, suspended, completed
and failed jobs, and writes what ``squeue --json``, ``sinfo --json`` and
``scontrol show -o node|job|partition`` print for it, plus the messages of a
few failing commands (``errors.json``). With ``--chroot`` it adds two
``State=CLOUD`` nodes (powered down, power saving configured) and the
output of ``squeue --json --states=PENDING`` (which 22.05 does not filter).
The unit tests parse these files.
"""

import argparse
import json
import os
import sys

from tests.harness.slurm import SlurmHarness, wait_for

PARTITIONS = {
    "batch": "Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    "htc": "Nodes=htcset MaxTime=1-00:00:00 State=UP PriorityTier=1",
    "big": "Nodes=mpiset MaxTime=60 State=DOWN",
}
EXTRA = ["NodeSet=htcset Feature=htc", "NodeSet=mpiset Feature=mpi"]

#: Power saving and two cloud nodes (powered down until a job needs them).
CLOUD = ["SuspendProgram=/bin/true", "ResumeProgram=/bin/true", "SuspendTime=3600",
         "ResumeTimeout=60", "NodeName=cl[1-2] CPUs=1 RealMemory=500 Feature=cloud State=CLOUD"]


def _write(out, name, text):
    with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
        fh.write(text)


def _errors(h):
    """What failing commands print: kept for the client's error handling tests."""
    cmds = {
        "show_node_unknown": ["scontrol", "show", "-o", "node", "nosuch"],
        "show_job_unknown": ["scontrol", "show", "-o", "job", "999999"],
        "delete_node_unknown": ["scontrol", "delete", "nodename=nosuch"],
        "delete_node_busy": ["scontrol", "delete", "nodename=vn1"],
        "update_node_bad_state": ["scontrol", "update", "nodename=vn2", "state=bogus"],
        "update_node_unknown": ["scontrol", "update", "nodename=nosuch", "state=resume"],
        "resume_idle_node": ["scontrol", "update", "nodename=vn2", "state=resume"],
        "create_node_exists": ["scontrol", "create", "nodename=vn2", "cpus=1", "state=future"],
        "create_node_bad_state": ["scontrol", "create", "nodename=vnx", "cpus=1", "state=idle"],
        "suspend_pending_job": ["scontrol", "suspend", "999999"],
        "requeue_unknown": ["scontrol", "requeue", "999999"],
    }
    out = {}
    for key, cmd in cmds.items():
        proc = h.run(*cmd, check=False)
        out[key] = {"cmd": cmd, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    return out


def capture(out, chroot=None):
    """Build the scenario on a fresh harness and write every capture into ``out``.

    ``chroot``: take Slurm from that root file system (see
    :mod:`tests.harness.chroot_slurm`) and add the cloud nodes.
    """
    os.makedirs(out, exist_ok=True)
    if chroot:
        from tests.harness.chroot_slurm import ChrootSlurmHarness  # pylint: disable=import-outside-toplevel

        harness = ChrootSlurmHarness(chroot=chroot, partitions=PARTITIONS, extra_conf=EXTRA + CLOUD)
    else:
        harness = SlurmHarness(partitions=PARTITIONS, extra_conf=EXTRA)
    with harness as h:
        _write(out, "scontrol_show_node_empty.txt", h.run("scontrol", "show", "-o", "node", check=False).stdout)
        _write(out, "scontrol_show_job_empty.txt", h.run("scontrol", "show", "-o", "job", check=False).stdout)
        _write(out, "squeue_empty.json", h.run("squeue", "--json").stdout)
        _write(out, "sinfo_empty.json", h.run("sinfo", "--json").stdout)

        h.add_node("vn1", features=["virtual", "htc"])
        h.add_node("vn2", features=["virtual", "htc"])
        h.add_node("vn3", features=["virtual"])
        h.add_node("vn4", features=["virtual"])
        h.add_node("vn5", cpus=2, memory=1000, features=["virtual", "htc"])
        h.add_node("vn6", features=["virtual"], gres=None)
        h.add_node("vn8", features=["virtual", "mpi"])
        h.add_node("vn9", features=["virtual", "mpi"])
        addr = h.reserve_address("vn7")
        h.scontrol("create", "NodeName=vn7", f"NodeAddr={addr}", "CPUs=1", "RealMemory=400",
                   "Feature=virtual,pre", "State=FUTURE")

        running = h.sbatch(wrap="sleep 600", name="run-htc", nodelist="vn1", mem=100)
        mixed = h.sbatch(wrap="sleep 600", name="run-mixed", nodelist="vn5", cpus=1, mem=100)
        draining = h.sbatch(wrap="sleep 600", name="run-draining", nodelist="vn6", mem=100)
        multi = h.sbatch(wrap="sleep 600", name="run-multi", nodelist="vn[8-9]", mem=100,
                         extra=["--nodes=2", "--partition=batch"])
        susp = h.sbatch(wrap="sleep 600", name="suspended", nodelist="vn2", mem=100)
        done = h.sbatch(wrap="true", name="done", nodelist="vn3", mem=10)
        failed = h.sbatch(wrap="exit 3", name="failed", nodelist="vn3", mem=10)
        for job in (running, mixed, draining, multi, susp):
            h.wait_job(job, ("RUNNING",))
        for job in (done, failed):
            h.wait_job(job, ("COMPLETED", "FAILED"))
        h.scontrol("suspend", str(susp))
        h.wait_job(susp, ("SUSPENDED",))
        pending = h.sbatch(wrap="sleep 60", name="pend-resources", nodelist="vn1", mem=100)
        held = h.sbatch(wrap="sleep 60", name="pend-held", partition="htc", hold=True,
                        extra=["--comment=vcluster-own:htc"])
        prio = h.sbatch(wrap="sleep 60", name="pend-htc", partition="htc", constraint="htc",
                        extra=["--nice=100", "--array=1-3"])

        h.scontrol("update", "nodename=vn3", "state=drain", "reason=vcluster retire")
        h.scontrol("update", "nodename=vn6", "state=drain", "reason=maintenance window")
        h.stop_slurmd("vn4")
        h.scontrol("update", "nodename=vn4", "state=down", "reason=hypervisor lost")
        h.scontrol("update", "nodename=vn4", "state=noresp")
        h.wait_node("vn3", ("DRAIN",))
        h.wait_node("vn4", ("DOWN", "NOT_RESPONDING"))
        wait_for(lambda: h.job_state(pending) == "PENDING" and "Reason=None" not in
                 h.run("scontrol", "show", "-o", "job", str(pending)).stdout, 30, "a pending reason")

        _write(out, "squeue.json", h.run("squeue", "--all", "--json").stdout)
        if chroot:
            h.wait_node("cl1", ("POWERED_DOWN",))
            _write(out, "squeue_pending.json", h.run("squeue", "--all", "--json", "--states=PENDING").stdout)
        _write(out, "sinfo.json", h.run("sinfo", "--json").stdout)
        _write(out, "scontrol_show_node.txt", h.scontrol("show", "-o", "node"))
        _write(out, "scontrol_show_node_future.txt", h.scontrol("-F", "show", "-o", "node"))
        _write(out, "scontrol_show_node_vn3.txt", h.scontrol("show", "-o", "node", "vn3"))
        _write(out, "scontrol_show_job.txt", h.scontrol("show", "-o", "job"))
        _write(out, "scontrol_show_job_running.txt", h.scontrol("show", "-o", "job", str(running)))
        _write(out, "scontrol_show_partition.txt", h.scontrol("show", "-o", "partition"))
        _write(out, "errors.json", json.dumps(_errors(h), indent=1) + "\n")
        ids = {"running": running, "mixed": mixed, "draining": draining, "multi": multi,
               "suspended": susp, "completed": done, "failed": failed, "pending": pending,
               "held": held, "array": prio}
        version = h.run("scontrol", "--version").stdout.strip()
        _write(out, "scontrol_version.txt", h.run("scontrol", "--version").stdout)
        _write(out, "meta.json", json.dumps({"version": version, "source": "captured", "jobs": ids},
                                            indent=1) + "\n")
        # Tidy up (stop() kills what is left anyway). In the 24.11 chroot the
        # suspended job, resumed and cancelled here, stayed CANCELLED+COMPLETING
        # for more than 30 s in three runs of this scenario, though alone
        # (one node, suspend, scancel) it ended at once: say so, do not fail
        # the capture, whose files are all written by now.
        h.scontrol("resume", str(susp))
        try:
            h.cancel_all()
        except TimeoutError as exc:
            print(f"warning: {exc}", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(description="capture real Slurm output for the unit tests")
    parser.add_argument("--chroot", help="root file system whose Slurm to run (tests/harness/trixie_chroot.sh)")
    parser.add_argument("out", nargs="?", default="tests/unit/data/slurm/22.05")
    args = parser.parse_args(argv)
    capture(args.out, chroot=args.chroot)


if __name__ == "__main__":
    main()
