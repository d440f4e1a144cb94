"""Slurm's cloud accounting of nodes on a real 24.11 controller with slurmdbd (Debian 13 chroot).

:class:`tests.harness.chroot_slurm.ChrootSlurmHarness` with
``accounting=True``: slurmctld, slurmd, slurmdbd 24.11.5 and MariaDB 11.8,
all from the chroot that ``tests/harness/trixie_chroot.sh`` builds (skipped,
with the reason, where it is missing). The client sets InstanceId,
InstanceType and Extra (:meth:`vcluster.slurm.client.Slurm.set_instance`)
and reads them back from ``scontrol show node``; ``sacctmgr show instance``
is read from slurmdbd.

What these tests pin down (and docs/slurm-versions.md reports):

* on a dynamic node (``slurmd -Z``, vcluster's dynamic membership) the
  fields show in ``scontrol show node``, and a restarted slurmd's first
  registration clears InstanceId and InstanceType but keeps Extra
  (passed, with slurmdbd running);
* ``sacctmgr show instance`` should list only nodes that were
  ``POWERED_DOWN`` (cloud nodes, vcluster's cloud membership): one
  instance from power-up to power-down, with the fields last set while it
  ran, as read in SchedMD's source. Not seen yet: in the first run the
  cloud node's instance did not appear within 30 s (marked xfail, why is
  open), so neither that nor the drained dynamic node's ``node-update``
  event has been measured.
"""

import json
import time

import pytest

from tests.harness.chroot_slurm import DEFAULT_CHROOT, ChrootSlurmHarness, accounting_unavailable
from vcluster.slurm import client, instance, vmtime

CLOUD = ["SuspendProgram=/bin/true", "ResumeProgram=/bin/true", "SuspendTime=3600", "ResumeTimeout=60",
         "NodeName=cl1 CPUs=1 RealMemory=300 Feature=cloud State=CLOUD"]
FORMAT = "format=NodeName,InstanceId,InstanceType,Extra,Start,End"


@pytest.fixture(scope="module")
def harness():
    reason = accounting_unavailable(DEFAULT_CHROOT)
    if reason:
        pytest.skip(reason)
    h = ChrootSlurmHarness(chroot=DEFAULT_CHROOT, accounting=True, extra_conf=CLOUD)
    started = time.monotonic()
    h.start()
    h.start_seconds = time.monotonic() - started
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def slurm(harness):
    def runner(argv, env, timeout, stdin=None):
        return client.subprocess_runner(["chroot", harness.chroot, *argv], env, timeout, stdin)

    return client.Slurm(conf=harness.conf, runner=runner)


def poll(what, check, timeout=30, interval=0.5):
    """``check()``'s first true value within ``timeout`` seconds; AssertionError with ``what`` after."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s (last: {value!r})")
        time.sleep(interval)


def events(harness, node):
    """``sacctmgr show event`` rows of ``node``: NodeName, Start, End, State, Reason."""
    return harness.sacctmgr("show", "event", f"nodes={node}", "format=NodeName,Start,End,State,Reason")


def instances(harness, node):
    return harness.sacctmgr("show", "instance", f"nodes={node}", FORMAT)


def test_fields_on_a_dynamic_node_and_what_a_slurmd_restart_keeps(harness, slurm):
    harness.add_node("vn1", cpus=1, memory=400, features=["virtual"])
    try:
        extra = {"provider": "lxd", "host": "h1", "profile": "htc"}
        node = slurm.set_instance("vn1", "vcluster-vn1", "1cpu-400mb", extra=extra)
        assert (node.instance_id, node.instance_type) == ("vcluster-vn1", "1cpu-400mb")
        assert instance.parse_extra(node.extra) == extra
        shown = harness.run("scontrol", "show", "node", "vn1").stdout  # the form an admin reads
        assert "InstanceId=vcluster-vn1 InstanceType=1cpu-400mb" in shown
        assert f"Extra={instance.extra_json(**extra)}" in shown
        # a new slurmd's first registration empties InstanceId/InstanceType; Extra stays
        harness.stop_slurmd("vn1")
        harness.start_slurmd("vn1")
        after = poll("vn1's instance fields cleared by its slurmd's registration",
                     lambda: (lambda n: n if not n.instance_id else None)(slurm.node("vn1")))
        assert (after.instance_id, after.instance_type) == ("", "")
        assert instance.parse_extra(after.extra) == extra
        # set again (what vcluster would do): back
        assert slurm.set_instance("vn1", "vcluster-vn1", "1cpu-400mb", extra=extra).instance_id == "vcluster-vn1"
    finally:
        harness.remove_node("vn1")


@pytest.mark.xfail(reason="not seen yet: in the one run so far (2026-12-07) cl1's instance did not appear in "
                          "sacctmgr show instance within 30 s after set_instance on the powered-up cloud node; "
                          "why is open (the instance query reads the node's POWERED_DOWN events)", strict=False)
def test_a_cloud_node_is_listed_by_sacctmgr_from_power_up_to_power_down(harness, slurm):
    assert "POWERED_DOWN" in slurm.node("cl1").state
    # a drained dynamic node with the fields set, for the contrast at the end
    harness.add_node("vn2", cpus=1, memory=400, features=["virtual"])
    slurm.update_node("vn2", "DRAIN", "held by a test")
    poll("vn2's drain in sacctmgr show event", lambda: [e for e in events(harness, "vn2") if e[4] == "held by a test"])
    slurm.set_instance("vn2", "vcluster-vn2", "1cpu-400mb", extra={"provider": "lxd", "host": "h1"})
    began = time.time()
    slurm.update_node("cl1", "POWER_UP")
    harness.reserve_address("cl1")
    harness.start_slurmd("cl1", [harness._daemon("slurmd"), "-N", "cl1",  # noqa: SLF001 - the harness's copy
                                 "--conf-server", harness.conf_server])
    harness.wait_node("cl1", ("IDLE",), timeout=60)
    slurm.set_instance("cl1", "i-0001", "m1.small", extra={"provider": "os1", "host": "h1"})
    row = poll("cl1's instance in sacctmgr", lambda: [r for r in instances(harness, "cl1") if r[1] == "i-0001"])
    # slurmdbd took vn2's update before cl1's (one queue), and lists no instance of it: never POWERED_DOWN
    assert instances(harness, "vn2") == []
    # ... but wrote a "node-update" event for it, which ended its open drain event (as_mysql_node_update)
    vn2 = events(harness, "vn2")
    assert [e[4] for e in vn2 if e[4] == "node-update"] == ["node-update"], vn2
    (drain,) = [e for e in vn2 if e[4] == "held by a test"]
    assert drain[2] != "Unknown", vn2
    assert "DRAIN" in slurm.node("vn2").state  # slurmctld still has it drained
    harness.remove_node("vn2")
    assert row[0][:4] == ["cl1", "i-0001", "m1.small", '{"host":"h1","provider":"os1"}']
    assert row[0][5] == "Unknown"  # still running
    # migrate: the same instance, its Extra names the new host
    slurm.set_instance("cl1", "i-0001", "m1.small", extra={"provider": "os1", "host": "h2"})
    poll("cl1's new host in sacctmgr",
         lambda: [r for r in instances(harness, "cl1") if json.loads(r[3] or "{}").get("host") == "h2"])
    # a job on it, then power-down ends the instance
    job = slurm.submit(wrap="sleep 2", nodelist="cl1", output=f"{harness._path('jobs')}/slurm-%j.out")  # noqa: SLF001
    harness.wait_job(job, ("COMPLETED",), timeout=60)
    harness.stop_slurmd("cl1")
    slurm.update_node("cl1", "POWER_DOWN_FORCE")
    slurm.wait_node_state("cl1", "POWERED_DOWN", timeout=60)
    (ended,) = poll("cl1's instance to end in sacctmgr",
                    lambda: [r for r in instances(harness, "cl1") if r[1] == "i-0001" and r[5] != "Unknown"])
    start, end = (time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S")) for t in ended[4:6])
    assert began - 2 <= start <= end <= time.time() + 1
    # the job's record in sacct names the node: the key of the per-job VM time report
    rows = poll(f"job {job} in sacct", lambda: harness.run(
        "sacct", "-n", "-P", "-X", "-j", str(job), "-o", "JobID,NodeList,Start,End,State").stdout.split())
    assert rows[0].split("|")[1] == "cl1"
    # docs/operations.md's report, on this run's real outputs
    jobs = harness.run("sacct", "-anP", "-X", "-j", str(job), "-o", "JobID,NodeList,Start,End").stdout
    insts = harness.run("sacctmgr", "-nP", "show", "instance", "nodes=cl1", FORMAT).stdout
    (row,) = vmtime.job_vm_seconds(jobs, insts)
    assert row[:5] == (str(job), "cl1", "i-0001", "m1.small", '{"host":"h2","provider":"os1"}')
    assert 2 <= row[5] <= 10, row
