"""Slurm site mode on the real stack: the site's own slurm.conf, vcluster's part Included.

The test writes the controller's slurm.conf as a site would (accounting
off, its own PrologSlurmctld that appends the job id to a file, the host's
NodeName line, ``Include vcluster.conf``), switches the stack's pillar to
``slurm:manage: include`` with preemption of partition ``batch`` on (so
vcluster needs its PrologSlurmctld and jobcomp/script program, which run
the site's prolog first), and highstates the controller. Then a job runs
on bare metal, one dynamic node is expanded, a job runs on it, the node is
retired. Checked: every job COMPLETED and none of the jobs slurmctld knew
before was lost, the site's prolog ran for both jobs, vcluster's spool got
the start and end of the batch job, and the site's slurm.conf is byte for
byte what the test wrote. The stack's own slurm.conf is restored by a
highstate in full mode afterwards, and slurmctld must answer.
"""

import pathlib
import shutil
import subprocess

import pytest

from tests.integration.site_stack import SITE_DIR, SITE_PROLOG, site_slurm_conf
from tests.integration.stack import EVENTS_SPOOL, job_states, node_info, sbatch, slurm, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLURM_CONF = pathlib.Path("/etc/slurm/slurm.conf")
INCLUDE = pathlib.Path("/etc/slurm/vcluster.conf")
SITE_LOG = SITE_DIR / "prolog.log"
VCLUSTER_PROLOG = "/usr/local/libexec/vcluster/slurmctld-prolog"

#: Settings the test's site file takes from the stack's own slurm.conf, so
#: that slurmctld keeps its state (ClusterName) and this host's paths.
KEPT = ("SlurmctldHost", "ClusterName", "SlurmUser", "StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile",
        "SlurmdPidFile", "SlurmctldLogFile", "SlurmdLogFile")


def _site_conf(stack_conf, hostname):
    lines = stack_conf.splitlines()
    kept = dict(ln.split("=", 1) for ln in lines if ln.split("=", 1)[0] in KEPT)
    node = [ln for ln in lines if ln.startswith(f"NodeName={hostname} ")]
    assert len(node) == 1 and len(kept) == len(KEPT), (kept, node)
    return site_slurm_conf(kept, node[0], accounting=False)


@pytest.fixture(scope="module")
def site_stack(stack):
    stack_conf = SLURM_CONF.read_text()
    SITE_DIR.mkdir(mode=0o755, exist_ok=True)
    SITE_PROLOG.write_text(f'#!/bin/sh\necho "job=$SLURM_JOB_ID" >> {SITE_LOG}\n')
    SITE_PROLOG.chmod(0o755)
    SITE_LOG.write_text("")
    shutil.chown(SITE_LOG, "slurm", "slurm")
    site_bytes = _site_conf(stack_conf, stack.hostname).encode()
    SLURM_CONF.write_bytes(site_bytes)
    stack.use_site_slurm({
        "slurm": {"manage": "include"},
        "vcluster": {"preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"]}},
    })
    try:
        stack.highstate_controller()
        yield stack, site_bytes
    finally:
        stack.use_site_slurm(None)
        stack.highstate_controller()
        INCLUDE.unlink(missing_ok=True)
        shutil.rmtree(SITE_DIR, ignore_errors=True)
        assert "is UP" in slurm("scontrol", "ping"), "slurmctld does not answer after the restore"
        assert "Include" not in SLURM_CONF.read_text()
        assert _config_value("PrologSlurmctld") == "(null)"


def _config_value(key):
    """One setting as the running slurmctld has it (``scontrol show config``)."""
    for line in slurm("scontrol", "show", "config").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def _spool_lines(job):
    text = pathlib.Path(EVENTS_SPOOL).read_text() if pathlib.Path(EVENTS_SPOOL).exists() else ""
    return [ln for ln in text.splitlines() if f" job={job} " in ln]


def test_site_slurm_conf_is_kept_and_its_prolog_chained(site_stack):
    stack, site_bytes = site_stack
    assert SLURM_CONF.read_bytes() == site_bytes
    include = INCLUDE.read_text()
    assert "NodeSet=ns_htc Feature=htc" in include and f"PrologSlurmctld={VCLUSTER_PROLOG}" in include
    # slurmctld runs vcluster's hook (the Include's line is the later one), which runs the site's
    assert _config_value("PrologSlurmctld") == VCLUSTER_PROLOG
    assert _config_value("JobCompType") == "jobcomp/script"

    known_before = _live_jobs()

    # bare metal first: a preempting job while no virtual node exists preempts nothing
    bare = sbatch("-p", "batch", "-w", stack.hostname, script="hostname")
    assert wait_jobs([bare], timeout=180) == {bare: "COMPLETED"}

    ret = stack.run("vcluster.expand", "count=1", "profile=htc")
    assert ret.data["result"] is True, ret.data
    (name,) = ret.data["nodes"]
    assert "DYNAMIC" in node_info(name)["State"]
    virt = sbatch("-p", "htc", "-w", name, script="hostname")
    assert wait_jobs([virt], timeout=180) == {virt: "COMPLETED"}

    ret = stack.run("vcluster.retire", f"nodes={name}")
    assert ret.data["result"] is True, ret.data
    assert node_info(name) is None

    # no job lost: both jobs COMPLETED, every job slurmctld knew before still known
    assert job_states([bare, virt]) == {bare: "COMPLETED", virt: "COMPLETED"}
    assert set(known_before) <= set(job_states(list(known_before))), known_before

    # the site's prolog ran once for each job, through vcluster's
    assert sorted(SITE_LOG.read_text().split()) == sorted([f"job={bare}", f"job={virt}"])
    # vcluster's own lines: start and end of the preempting batch job only
    assert [ln.split()[2] for ln in _spool_lines(bare)] == ["start", "end"], _spool_lines(bare)
    assert _spool_lines(virt) == []
    # and the site's slurm.conf was never written
    assert SLURM_CONF.read_bytes() == site_bytes


def _live_jobs():
    """Ids of the jobs slurmctld knows that have not ended (they must survive the restarts)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return out.split()
