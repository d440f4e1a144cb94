"""An existing site joined by vcluster as docs/quickstart.md says; the site's own Salt and Slurm keep working.

The site (site_stack.py) is not vcluster's: a master with its own
``file_roots`` and ``pillar_roots`` (tops holding its own targets and, as
quickstart step 2 asks, vcluster's), an engine of its own that counts its
ticks into a file, a reactor of its own on tag ``site/ping``, and a
slurm.conf of its own with job accounting (``jobcomp/filetxt``,
``jobacct_gather/linux``, records in its own slurmdbd brought up by
``scripts/accounting-up.sh --slurmdbd``) and its own
``PrologSlurmctld``, which Includes vcluster.conf (``slurm:manage:
include``). vcluster is installed from the wheel into a fresh venv
(package_venv.py); ``python -m vcluster.masterconf --check``, then
``--write master.d/vcluster.conf``, both from that venv, add vcluster to
the site's master; master, controller minion and every CLI run that venv's
Python outside the checkout. The controller is highstated from the site's
top.

Then one LXD node is expanded (its highstate also applies the site's state
with the site's pillar), a job runs on bare metal and one on the new node,
and the node is retired. Checked afterwards: a state of the site's
file_roots applies with a value of the site's pillar, the pillar key is
read, the site's reactor fires on its event, the site's engine still
ticks, the site's PrologSlurmctld ran for both jobs (on the vcluster node
too), the site's accounting recorded both, and the site's slurm.conf is
byte for byte what it was. The metrics file that pillar
``vcluster:metrics`` asks for counts the node's expand.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import yaml

from tests.integration.package_venv import REPO, build_wheel, make_venv, run
from tests.integration.site_stack import (
    JOBCOMP_LOG,
    PROLOG_LOG,
    REACTOR_LOG,
    SITE_DIR,
    SITE_PILLAR,
    SiteStack,
    install_site_slurm,
    venv_factories,
    write_site,
)
from tests.integration.stack import _host_memory_mb, _service_running, job_states, node_info, sbatch, slurm, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.own_stack]

SLURM_CONF = pathlib.Path("/etc/slurm/slurm.conf")
INCLUDE = pathlib.Path("/etc/slurm/vcluster.conf")

#: Host paths and names of the site's Slurm (what its own formula would write).
KEPT = {"ClusterName": "vcluster", "SlurmUser": "slurm", "StateSaveLocation": "/var/lib/slurm/slurmctld",
        "SlurmdSpoolDir": "/var/lib/slurm/slurmd", "SlurmctldPidFile": "/run/slurmctld.pid",
        "SlurmdPidFile": "/run/slurmd.pid", "SlurmctldLogFile": "/var/log/slurm/slurmctld.log",
        "SlurmdLogFile": "/var/log/slurm/slurmd.log"}


@pytest.fixture(scope="module")
def site(host_slurm_lock, salt_factories, lxd_network, lxd_image):
    work = pathlib.Path(tempfile.mkdtemp(prefix="vcsw", dir="/tmp"))  # short: Salt's unix sockets
    before = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    daemons = {svc: _service_running(svc) for svc in ("slurmdbd", "mariadb")}
    stack = None
    try:
        # the site's accounting: MariaDB and its own slurmdbd, cluster registered
        run(["bash", str(REPO / "scripts" / "accounting-up.sh"), "--slurmdbd", "--cluster", KEPT["ClusterName"]],
            timeout=600)
        venv = make_venv(work / "venv", build_wheel(work))
        hostname = socket.gethostname()
        gw = lxd_network["gateway"]
        trees = write_site(work, hostname)
        node_line = (f"NodeName={hostname} NodeAddr={gw} CPUs={os.cpu_count() or 1} "
                     f"RealMemory={max(256, _host_memory_mb() - 512)} Feature=baremetal")
        # with its address: the nodes cannot resolve the host's name
        site_conf = install_site_slurm(dict(KEPT, SlurmctldHost=f"{hostname}({gw})"), node_line, dbd_host=hostname)
        stack = SiteStack(venv_factories(salt_factories, venv, work), lxd_network, work / "stack", venv, trees)
        stack.use_site_slurm({"slurm": {"manage": "include"}})
        stack.start()
        stack.highstate_controller()
        yield stack, site_conf
    finally:
        if stack is not None:
            stack.stop()
        for svc, was_running in daemons.items():
            if not was_running:
                subprocess.run(["service", svc, "stop"], capture_output=True, check=False, timeout=120)
        if before is not None:
            SLURM_CONF.write_bytes(before)
        INCLUDE.unlink(missing_ok=True)
        shutil.rmtree(SITE_DIR, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} in {timeout} s"
        time.sleep(0.5)


def heartbeat(stack):
    path = stack.trees["heartbeat"]
    return int(path.read_text()) if path.exists() else 0


def test_vcluster_is_added_from_the_wheel_and_the_site_keeps_its_own(site):
    stack, site_conf = site
    share = stack.venv["site"] / "vcluster" / "share"
    text = stack.vcluster_conf.read_text()
    written = yaml.safe_load(text)
    assert "vcluster adds" in stack.masterconf_out and f"# written: {stack.vcluster_conf}" in stack.masterconf_out
    assert str(REPO) not in text  # nothing of the checkout
    # the site's entries first, then vcluster's
    assert written["file_roots"]["base"][-2:] == [str(stack.trees["states"]), str(share / "salt")]
    assert written["pillar_roots"]["base"][-3:] == [str(stack.trees["pillar"]), str(share / "pillar"),
                                                    str(stack.site)]
    engines = [next(iter(e)) if isinstance(e, dict) else e for e in written["engines"]]
    assert engines[-1] == "vcluster_tasks" and "site_heartbeat" in engines, engines
    assert next(iter(written["reactor"][0])) == "site/ping"
    assert "id" not in written and "interface" not in written
    # the daemons run the venv's Python (which cannot import the checkout: test_package.py)
    for daemon in (stack.master, stack.minion):
        # (Salt sets the process title to its whole command line)
        argv = pathlib.Path(f"/proc/{daemon.pid}/cmdline").read_bytes().decode().split()
        assert argv[0] == str(stack.venv["python"]), argv
        assert b"PYTHONPATH=" not in pathlib.Path(f"/proc/{daemon.pid}/environ").read_bytes()

    ticks = heartbeat(stack)
    assert ticks > 0, "the site's engine never ticked"

    bare = sbatch("-p", "batch", "-w", stack.hostname, script="hostname")
    ret = stack.run("vcluster.expand", "count=1", "profile=htc")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    (name,) = ret.data["nodes"]
    assert "DYNAMIC" in node_info(name)["State"]
    # the node's highstate read the site's top: the site's state ran there with the site's pillar
    marker = subprocess.run(["lxc", "exec", name, "--", "cat", f"{SITE_DIR}/state-{name}"], capture_output=True,
                            text=True, check=False)
    assert marker.stdout.strip() == SITE_PILLAR["site_motd"], marker
    virt = sbatch("-p", "htc", "-w", name, script="hostname")
    assert wait_jobs([bare, virt], timeout=180) == {bare: "COMPLETED", virt: "COMPLETED"}
    ret = stack.run("vcluster.retire", f"nodes={name}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    assert node_info(name) is None

    # the site's state, from its own file_roots, with its own pillar
    marker = SITE_DIR / f"state-{stack.controller_id}"
    marker.unlink()
    ret = stack.master.salt_cli(timeout=300).run("state.apply", "site.marker", minion_tgt=stack.controller_id)
    assert ret.returncode == 0, ret.stdout
    assert marker.read_text().strip() == SITE_PILLAR["site_motd"]
    # (Salt 3008 masks pillar values in CLI output unless asked)
    assert stack.call("pillar.get", "site_motd", "unmask=True").data == SITE_PILLAR["site_motd"]

    # the site's reactor
    token = uuid.uuid4().hex
    ret = stack.run("event.send", "site/ping", f'data={{"token": "{token}"}}')
    assert ret.returncode == 0, ret.stdout
    wait_for(lambda: REACTOR_LOG.exists() and token in REACTOR_LOG.read_text(), "the site's reactor did not run")

    # the site's engine still ticks
    now = heartbeat(stack)
    wait_for(lambda: heartbeat(stack) > now, "the site's engine stopped ticking")
    assert now > ticks

    # the site's PrologSlurmctld ran for both jobs, the vcluster node's too
    assert sorted(PROLOG_LOG.read_text().splitlines()) == sorted([
        f"job={bare} nodes={stack.hostname}", f"job={virt} nodes={name}"])
    # the site's accounting recorded both, in its slurmdbd and its completion log
    def sacct():
        out = slurm("sacct", "-X", "-n", "-P", "-j", f"{bare},{virt}", "-o", "JobID,State,NodeList")
        return sorted(line.split("|") for line in out.split())

    wait_for(lambda: sacct() == sorted([[bare, "COMPLETED", stack.hostname], [virt, "COMPLETED", name]]),
             f"slurmdbd does not hold both jobs: {sacct()}")
    wait_for(lambda: all(f"JobId={j} " in JOBCOMP_LOG.read_text() for j in (bare, virt)),
             "the site's job completion records are missing")
    records = {line.split()[0]: line for line in JOBCOMP_LOG.read_text().splitlines()}
    assert "JobState=COMPLETED" in records[f"JobId={virt}"] and f"NodeList={name} " in records[f"JobId={virt}"]
    assert "JobState=COMPLETED" in records[f"JobId={bare}"]
    # vcluster's metrics file, from pillar vcluster:metrics, counts the node's expand
    prom = stack.trees["metrics"] / "vcluster.prom"
    wait_for(lambda: prom.exists() and 'vcluster_expand_duration_seconds_count{profile="htc"} 1' in prom.read_text(),
             "the metrics file does not count the expand", timeout=40)
    # and the site's slurm.conf was never written
    assert SLURM_CONF.read_bytes() == site_conf
    assert job_states([bare, virt]) == {bare: "COMPLETED", virt: "COMPLETED"}
