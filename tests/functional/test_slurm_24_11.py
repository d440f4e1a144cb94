"""The Slurm client against a real Slurm 24.11 controller (Debian 13 chroot).

:class:`tests.harness.chroot_slurm.ChrootSlurmHarness` runs slurmctld and
dynamic slurmds of 24.11.5 from a chroot built by
``tests/harness/trixie_chroot.sh``; the client runs the chroot's commands
(``chroot DIR scontrol ...``). Skipped, with the reason, where there is no
chroot (it is built outside the repository, about 35 s). What the version
table chooses for 24.11 is exercised on the real daemons: the version read,
the list-shaped ``job_state``, hold/release of a node with a job, and
``scontrol power up|down`` for a cloud node.
"""

import pytest

from tests.harness.chroot_slurm import DEFAULT_CHROOT, ChrootSlurmHarness, chroot_unavailable
from vcluster.slurm import client, versions

# SuspendTimeout 3 s and Slurm's power-save pass every second (10 s by default; the later
# SlurmctldParameters line replaces the harness's): a power down ends in seconds, not 30-40.
CLOUD = ["SuspendProgram=/bin/true", "ResumeProgram=/bin/true", "SuspendTime=3600", "ResumeTimeout=60",
         "SuspendTimeout=3", "SlurmctldParameters=enable_configless,power_save_interval=1",
         "NodeName=cl1 CPUs=1 RealMemory=300 Feature=cloud State=CLOUD"]


@pytest.fixture(scope="module")
def harness():
    reason = chroot_unavailable(DEFAULT_CHROOT)
    if reason:
        pytest.skip(reason)
    h = ChrootSlurmHarness(chroot=DEFAULT_CHROOT, extra_conf=CLOUD)
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def slurm(harness):
    calls = []

    def runner(argv, env, timeout, stdin=None):
        calls.append(list(argv))
        return client.subprocess_runner(["chroot", harness.chroot, *argv], env, timeout, stdin)

    s = client.Slurm(conf=harness.conf, runner=runner)
    s.calls = calls
    return s


def test_version_is_read_from_the_real_controller(slurm):
    assert slurm.version().startswith("24.11.")
    assert slurm.release is versions.RELEASES["24.11"]
    assert slurm.release.job_state_list and slurm.release.power_command
    assert slurm.nodes("cl1")[0].state == ["IDLE", "CLOUD", "POWERED_DOWN"]
    assert [c for c in slurm.calls if c[1:] == ["--version"]] == [["scontrol", "--version"]]


def test_jobs_hold_and_release_on_24_11(harness, slurm):
    harness.add_node("vn1", cpus=1, memory=400, features=["virtual"])
    before = slurm.job_count()
    job = slurm.submit(wrap="sleep 300", nodelist="vn1", mem=50,
                       output=f"{harness._path('jobs')}/slurm-%j.out")  # noqa: SLF001 - the harness's own dir
    try:
        harness.wait_job(job, ("RUNNING",))
        (seen,) = slurm.jobs(nodes="vn1")
        assert (seen.id, seen.state, seen.nodes, seen.node_count) == (job, "RUNNING", ["vn1"], 1)
        assert slurm.job_count() == before + 1
        held = slurm.hold_node("vn1", [job])
        assert held == {"drained": True, "suspended": [str(job)]}
        assert slurm.job(job).state == "SUSPENDED"
        assert [j.state for j in slurm.jobs(nodes="vn1")] == ["SUSPENDED"]
        # 24.11 shows the node of a suspended job MIXED (22.05: IDLE); drained either way
        assert slurm.node("vn1").state == ["MIXED", "DRAIN"]
        assert slurm.release_node("vn1", [job]) == {"resumed": [str(job)], "undrained": True}
        assert slurm.job(job).state == "RUNNING"
        assert slurm.job_count() == before + 1  # no job lost
    finally:
        harness.run("scancel", str(job), check=False)
        harness.remove_node("vn1")


def test_power_up_and_down_use_scontrol_power(slurm):
    slurm.update_node("cl1", "POWER_UP")
    assert ["scontrol", "power", "up", "cl1"] in slurm.calls
    words = slurm.wait_node_state("cl1", "POWERING_UP", timeout=30)
    assert "POWERING_UP" in words
    slurm.update_node("cl1", "POWER_DOWN_FORCE")
    assert ["scontrol", "power", "down", "force", "cl1"] in slurm.calls
    assert "POWERED_DOWN" in slurm.wait_node_state("cl1", "POWERED_DOWN", timeout=60)
