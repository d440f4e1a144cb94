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
  ran, as read in SchedMD's source (``as_mysql_get_instances``: an
  instance is made from a node's POWERED_DOWN event rows, so a cloud node
  needs a recorded power-down before its first instance shows). Not seen
  yet: in the one run of a test for it (2026-12-07) the powered-up cloud
  node's instance did not appear within 30 s, and that test was taken out
  rather than kept as an expected failure; neither it nor the drained
  dynamic node's ``node-update`` event has been measured.
"""

import time

import pytest

from tests.harness.chroot_slurm import DEFAULT_CHROOT, ChrootSlurmHarness, accounting_unavailable
from vcluster.slurm import client, instance

# Slurm's power-save pass every second (10 s by default; the later SlurmctldParameters line
# replaces the harness's): power ups and downs end in seconds.
CLOUD = ["SuspendProgram=/bin/true", "ResumeProgram=/bin/true", "SuspendTime=3600", "ResumeTimeout=60",
         "SuspendTimeout=3", "SlurmctldParameters=enable_configless,power_save_interval=1",
         "NodeName=cl1 CPUs=1 RealMemory=300 Feature=cloud State=CLOUD"]
FORMAT = "format=NodeName,InstanceId,InstanceType,Extra,Start,End"


@pytest.fixture(scope="module")
def harness():
    reason = accounting_unavailable(DEFAULT_CHROOT)
    if reason:
        pytest.skip(reason)
    h = ChrootSlurmHarness(chroot=DEFAULT_CHROOT, accounting=True, extra_conf=CLOUD)
    h.start()
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
    """``sacctmgr show instance`` rows of ``node`` as dicts keyed by the FORMAT fields."""
    keys = FORMAT.split("=", 1)[1].split(",")
    return [dict(zip(keys, row, strict=False)) for row in harness.sacctmgr("show", "instance", f"nodes={node}", FORMAT)]


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



def _power_up(harness, name, instance_args):
    """``scontrol power up``, then the node's slurmd started as a freshly booted machine's would be.

    The 2 s stand for the boot: slurmctld takes a powering-up node's
    registration only when the node's boot time is not older than the
    power-up request (whole seconds; ``waiting_for_node_boot``).
    """
    harness.run("scontrol", "power", "up", name)
    harness.wait_node(name, ("POWERING_UP",), timeout=30)
    time.sleep(2)
    harness.start_slurmd(name, args=[harness._daemon("slurmd"), "-N", name, "--conf-server",
                                     harness.conf_server, *instance_args], booted_now=True)
    poll(f"{name} up", lambda: (lambda s: "IDLE" in s and not {"POWERING_UP", "NOT_RESPONDING"} & set(s))(
        harness.node_state(name)), timeout=60)


def _power_down(harness, name):
    """``scontrol power down``, the instance gone, and Slurm's SuspendTimeout passed (POWERED_DOWN)."""
    harness.run("scontrol", "power", "down", name)
    harness.stop_slurmd(name)
    harness.wait_node(name, ("POWERED_DOWN",), timeout=60)


def _instance(harness, node, instance_id, ended=None):
    """The ``sacctmgr show instance`` row of ``instance_id`` (``ended``: only once it has an End)."""
    for row in instances(harness, node):
        if row.get("InstanceId") == instance_id and (ended is None or (row["End"] != "Unknown") == ended):
            return row
    return None


def test_each_power_up_of_a_cloud_node_is_an_instance(harness, slurm):
    """``sacctmgr show instance`` lists every power-up of a cloud node, with the fields last set.

    slurmdbd writes InstanceId/InstanceType/Extra onto the node's newest
    ``POWERED_DOWN`` event row (``as_mysql_node_update``) and makes an
    instance from the end of that row (power-up) to the start of the next
    one (power-down) (``as_mysql_get_instances``). slurmctld records a
    ``Powered down`` row when a CLOUD node first powers up, so even the
    first power-up counts. Set by vcluster after the join (``scontrol
    update``, here) or by slurmd's ``--instance-id``/``--instance-type``:
    the same row; a later update during the same power-up replaces it.
    """
    harness.reserve_address("cl1")  # cl1's namespace and its /etc/hosts line (CLOUD: no NodeAddr)
    extra = {"provider": "lxd", "host": "h1", "profile": "cloud"}
    try:
        _power_up(harness, "cl1", [])
        slurm.set_instance("cl1", "vcluster-cl1-a", "1cpu-300mb", extra=extra)
        first = poll("cl1's first power-up in sacctmgr show instance",
                     lambda: _instance(harness, "cl1", "vcluster-cl1-a", ended=False))
        assert (first["InstanceType"], instance.parse_extra(first["Extra"])) == ("1cpu-300mb", extra)
        _power_down(harness, "cl1")
        assert not slurm.node("cl1").instance_id  # power-down clears the node's fields
        poll("cl1's first instance ended by its power-down", lambda: _instance(harness, "cl1", "vcluster-cl1-a",
                                                                                ended=True))

        # the second power-up: slurmd registers the fields itself
        _power_up(harness, "cl1", ["--instance-id", "vcluster-cl1-b", "--instance-type", "2cpu-300mb"])
        node = slurm.node("cl1")
        assert (node.instance_id, node.instance_type) == ("vcluster-cl1-b", "2cpu-300mb")
        second = poll("cl1's second power-up", lambda: _instance(harness, "cl1", "vcluster-cl1-b", ended=False))
        assert second["Start"] >= first["End"] if first["End"] != "Unknown" else True
        # updated while it runs (vcluster after a migrate): the same instance, new values
        slurm.set_instance("cl1", "vcluster-cl1-c", "2cpu-300mb", extra=dict(extra, host="h2"))
        _power_down(harness, "cl1")
        ended = poll("cl1's second instance ended", lambda: _instance(harness, "cl1", "vcluster-cl1-c", ended=True))
        assert ended["Start"] == second["Start"]
        assert instance.parse_extra(ended["Extra"])["host"] == "h2"
        # plus, at times, an instance without fields: slurmctld's "First Registration" event of a node
        # still flagged POWERED_DOWN (seen in 1 run of 3); a report must not count it as a VM
        rows = instances(harness, "cl1")
        named = sorted(r["InstanceId"] for r in rows if r["InstanceId"])
        assert named == ["vcluster-cl1-a", "vcluster-cl1-c"], (rows, events(harness, "cl1"))
    finally:
        harness.remove_node("cl1", delete=False)
