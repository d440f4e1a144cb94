"""No secret leaves where it belongs: the LXD stack, searched by value.

While this module runs, a subscriber of the master event bus keeps every
event, a watcher pulls the private key of every node container as soon as
LXD holds it (``/etc/salt/pki/minion/minion.pem``, pushed before the first
start), and every runner return is kept. The operations: expand (and the
reactor's join), a job on the node, suspend, resume, reconcile apply,
retire, a failed join (profile ``broken``: its highstate fails), and Slurm's
power saving in cloud membership (a pending job resumes a node, idling
suspends it). Then the master's job cache (``jobs.list_jobs`` +
``jobs.lookup_jid``, and its files), the master's, controller's and nodes'
minion logs, slurmctld's log, the Slurm event spool, every event and every
runner return are searched for the nodes' private keys, the munge key
(base64 text and raw bytes) and nothing is allowed to hold one.

Where a node's key does live, the test checks what limits it: LXD gets it
as a file pushed into the root file system (0400 root), never in instance
config (``user.*``) or cloud-init user data, and an unprivileged user in
the node cannot read it; retire deletes the master's copy of the public key,
and a name handed out again gets a new pair. File modes of the registry, the
site pillar, the master's key material and the power-save helper's inputs
are checked while the stack runs.
"""

import json
import pathlib
import pwd
import stat
import subprocess
import time

import pytest
import yaml

from tests.integration.secrets_scan import PEM, KeyCollector, Secrets, Watch, mode
from tests.integration.stack import EVENTS_SPOOL, REPO, job_states, sbatch, slurm, wait_jobs
from tests.integration.test_cloud_mode import SUSPEND_TIME, cloud_stack, lxd_instances  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def watch(stack):
    secrets = Secrets()
    site = yaml.safe_load((stack.site / "secrets.sls").read_text())
    secrets.add_value("munge key (pillar base64)", site["munge"]["key"])
    secrets.add_bytes("munge key", pathlib.Path("/etc/munge/munge.key").read_bytes())
    accounting = yaml.safe_load((stack.site / "accounting.sls").read_text())
    secrets.add_value("accounting database password", accounting["slurm"]["accounting"]["storage_pass"])
    watching = Watch(stack.master, secrets).start()
    keys = KeyCollector(secrets).start()
    watching.keys = keys
    try:
        yield watching
    finally:
        keys.stop()
        watching.stop()


def run(stack, watch, fun, *args, timeout=900):
    return watch.record(f"{fun} {' '.join(args)}", stack.run(fun, *args, timeout=timeout))


def master_keys(stack):
    data = stack.master.salt_key_cli().run("--list", "all", "--out", "json").data
    return {name: state for state, names in data.items() if isinstance(names, list) for name in names}


def test_expand_join_suspend_resume_reconcile_retire(stack, watch):
    ret = run(stack, watch, "vcluster.expand", "count=1", "profile=htc")
    assert ret.data["result"] is True, ret.data
    (name,) = ret.data["nodes"]
    pem = watch.keys.pull(name) or watch.keys.pems[name][-1]
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----")

    # LXD: the key is a root-only file in the node, not instance config or user data
    config = json.loads(subprocess.run(["lxc", "query", f"/1.0/instances/{name}"], capture_output=True, text=True,
                                       check=True).stdout)
    assert watch.secrets.found_in(json.dumps(config)) == [], "the private key is in the LXD instance config"
    assert not any(k.startswith(("user.user-data", "cloud-init.")) for k in config["expanded_config"])
    st = subprocess.run(["lxc", "exec", name, "--", "stat", "-c", "%a %U %G", PEM], capture_output=True,
                        text=True, check=True).stdout.split()
    assert st == ["400", "root", "root"], st
    nobody = subprocess.run(["lxc", "exec", name, "--", "setpriv", "--reuid=65534", "--regid=65534",
                             "--clear-groups", "cat", PEM], capture_output=True, text=True, check=False)
    assert nobody.returncode != 0 and "PRIVATE" not in nobody.stdout, "an unprivileged user read the node's key"

    # the accounting database password is the controller's alone: not in a
    # node's pillar. Asked key by key: the node's whole pillar holds the
    # munge key, and its return would put it on the bus this test watches.
    cli = stack.master.salt_cli(timeout=120)
    enabled = cli.run("pillar.get", "slurm:accounting:enabled", "unmask=True", minion_tgt=name, _timeout=120)
    assert enabled.returncode == 0 and enabled.data is True, enabled.stdout[-500:]  # the node sees unmasked values
    stored = cli.run("pillar.get", "slurm:accounting:storage_pass", "unmask=True", minion_tgt=name, _timeout=120)
    assert stored.returncode == 0 and stored.data == "", stored.stdout[-500:]

    job = sbatch("-p", "htc", "-w", name, script="hostname")
    assert wait_jobs([job], timeout=180) == {job: "COMPLETED"}

    assert run(stack, watch, "vcluster.suspend", f"nodes={name}").data["result"] is True
    assert run(stack, watch, "vcluster.resume", f"nodes={name}").data["result"] is True
    assert run(stack, watch, "vcluster.reconcile", "apply=True").data["result"] is True
    pub = pathlib.Path(watch.opts["pki_dir"], "minions", name)
    assert mode(pub) & 0o077 == 0, oct(mode(pub))  # the master's copy, as Salt writes it

    watch.pull_node_log(name)
    ret = run(stack, watch, "vcluster.retire", f"nodes={name}")
    assert ret.data["result"] is True, ret.data
    # what limits a node's key: the master forgets it with the node
    assert name not in master_keys(stack)
    assert job_states([job]) == {job: "COMPLETED"}


def test_failed_join(stack, watch):
    ret = run(stack, watch, "vcluster.expand", "count=1", "profile=broken")
    assert ret.data["result"] is False, ret.data
    (name,) = ret.data["nodes"]
    assert ret.data["nodes"][name]["state"] == "released" and "highstate failed" in ret.data["comment"]
    # the collector caught the failed node's key while its container lived
    assert watch.keys.pems.get(name), f"the key of {name} was never seen: nothing to search for"
    assert name not in master_keys(stack)


def test_power_save_resume_and_suspend(cloud_stack, watch):
    stack = cloud_stack
    job = sbatch("-p", "htc", script="hostname; sleep 2")
    assert wait_jobs([job], timeout=240) == {job: "COMPLETED"}
    name = slurm("squeue", "-h", "-j", job, "-o", "%N", "--states=all").strip()
    assert name.startswith("tnode"), name
    assert watch.keys.pems.get(name), f"the key of {name} was never seen"
    watch.pull_node_log(name)
    check_power_helper_modes(stack)
    # idle for SuspendTime: SuspendProgram -> the node and its key go
    deadline = time.monotonic() + SUSPEND_TIME + 120
    while lxd_instances(name):
        assert time.monotonic() < deadline, f"{name} not removed after idling"
        time.sleep(1)
    deadline = time.monotonic() + 60
    while name in master_keys(stack):
        assert time.monotonic() < deadline, f"{name}'s key kept after its suspend"
        time.sleep(1)
    # a name handed out again got a new key pair (Slurm resumed the pool's
    # first name, which the expand above had used and retire freed)
    reused = {node: len(pems) for node, pems in watch.keys.pems.items() if len(pems) > 1}
    assert reused, {node: len(pems) for node, pems in watch.keys.pems.items()}
    for node, pems in watch.keys.pems.items():
        assert len(set(pems)) == len(pems), node
    assert job_states([job]) == {job: "COMPLETED"}


def check_power_helper_modes(stack):
    """Slurm's power-saving programs and their sudo helper: root's, not writable by SlurmUser."""
    conf = slurm("scontrol", "show", "config")
    programs = [ln.split("=", 1)[1].strip() for ln in conf.splitlines()
                if ln.split("=", 1)[0].strip() in ("ResumeProgram", "SuspendProgram", "ResumeFailProgram")]
    assert len(programs) == 3, programs
    power = yaml.safe_load((REPO / "salt" / "slurm" / "defaults.yaml").read_text())["slurm"]["power"]
    helper, sudoers = power["event_helper"], power["sudoers"]
    for path in (*programs, helper):
        st = pathlib.Path(path).stat()
        assert st.st_uid == 0 and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) == 0, (path, oct(st.st_mode))
    st = pathlib.Path(sudoers).stat()
    assert st.st_uid == 0 and mode(sudoers) == 0o440, (sudoers, oct(mode(sudoers)))
    # the helper fires events with the controller minion's key: root's alone
    pki = pathlib.Path(stack.minion.config["pki_dir"])
    assert mode(pki / "minion.pem") & 0o077 == 0, oct(mode(pki / "minion.pem"))
    assert mode(pki) & 0o077 == 0, oct(mode(pki))
    # ... and its configuration (which master, which key) is not SlurmUser's to change
    config_dir = pathlib.Path(stack.minion.config_file).parent
    assert mode(config_dir) & (stat.S_IWGRP | stat.S_IWOTH) == 0, oct(mode(config_dir))


def test_secret_file_modes(stack, watch):
    registry = pathlib.Path(stack.registry)
    for path in [registry, *registry.parent.glob(registry.name + "-*"), pathlib.Path(f"{registry}.lock")]:
        if path.exists():
            assert mode(path) == 0o600, (path, oct(mode(path)))
    assert mode(stack.site) == 0o700, oct(mode(stack.site))
    assert mode(stack.site / "secrets.sls") == 0o600
    pki = pathlib.Path(watch.opts["pki_dir"])
    assert mode(pki) & 0o077 == 0, oct(mode(pki))
    for path in pki.rglob("*"):
        if path.is_file() and path.suffix == ".pem":
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
        if path.is_file() and path.parent.name in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def test_accounting_password_stays_in_its_files(stack, watch):
    """slurmdbd.conf (0600 slurm) and the site pillar file hold the password; a state run that rewrites the file does not show it."""
    defaults = yaml.safe_load((REPO / "salt" / "slurm" / "defaults.yaml").read_text())["slurm"]
    dbd_conf = pathlib.Path(defaults["lookup"]["dbd_config_file"])
    assert mode(stack.site / "accounting.sls") == 0o600
    st = dbd_conf.stat()
    assert mode(dbd_conf) == 0o600 and pwd.getpwuid(st.st_uid).pw_name == "slurm", (oct(mode(dbd_conf)), st.st_uid)
    assert watch.secrets.found_in(dbd_conf.read_text()) == ["accounting database password"]
    # a local edit: the state rewrites the file, in test mode and for real, with no diff
    with dbd_conf.open("a") as conf:
        conf.write("# local edit\n")
    for args in (("test=True",), ()):
        ret = stack.master.salt_cli(timeout=600).run("state.apply", "slurm.controller", *args,
                                                     minion_tgt=stack.controller_id, _timeout=600)
        watch.record(f"state.apply slurm.controller {' '.join(args)}", ret)
        assert ret.returncode == 0, ret.stdout[-3000:]
        changed = {k: v for k, v in ret.data.items() if "slurm-accounting-config-managed" in k}
        assert len(changed) == 1 and list(changed.values())[0]["changes"], changed
    assert "# local edit" not in dbd_conf.read_text()
    assert mode(dbd_conf) == 0o600
    # slurmdbd still answers with the rewritten file, and the jobs so far are there
    assert "accounting_storage/slurmdbd" in slurm("scontrol", "show", "config")
    assert slurm("sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "now-1hour").strip()


def test_no_secret_anywhere(stack, watch):
    slurmctld_log = [ln.split("=", 1)[1].strip() for ln in slurm("scontrol", "show", "config").splitlines()
                     if ln.startswith("SlurmctldLogFile")]
    dbd_log = yaml.safe_load((REPO / "salt" / "slurm" / "defaults.yaml").read_text())["slurm"]["accounting"]["log_file"]
    extra = [stack.minion.config["log_file"], *slurmctld_log, dbd_log, EVENTS_SPOOL]
    places = watch.places(extra_files=extra)
    leaks = {where: hits for where, text in places if (hits := watch.secrets.found_in(text))}
    counts = {"events": len(watch.bus.events), "places": len(places), "secret labels": len(watch.secrets.labels())}
    print("searched:", counts)
    assert leaks == {}, leaks

    # the search had something to find, and finds it where it is
    labels = watch.secrets.labels()
    assert [lb for lb in labels if lb.startswith("private key of tbad")], labels
    assert len([lb for lb in labels if lb.startswith("private key of tnode")]) >= 2, labels
    for name, pems in watch.keys.pems.items():
        assert watch.secrets.found_in(pems[0]) == [f"private key of {name} #1"]
    assert watch.secrets.found_in(pathlib.Path("/etc/munge/munge.key").read_bytes())
    # ... in places that saw the whole flow
    tags = [t for t, _ in watch.bus.events]
    assert any(t.startswith("salt/run/") and t.endswith("/ret") for t in tags)
    assert any(t.startswith("salt/job/") and "/ret/tnode" in t for t in tags), sorted(set(tags))[:50]
    assert any(w.startswith("job cache") and "state.highstate" in w for w, _ in places)
    assert watch.node_logs, "no node's minion log was searched"

    # no node key reaches a minion's pillar (the controller's holds the policy
    # and the accounting database password, which slurmdbd.conf needs)
    pillar = stack.call("pillar.items", "unmask=True").stdout  # Salt 3008 masks pillar output by default
    assert watch.secrets.found_in(pillar, ignore=[lb for lb in labels if lb.startswith("munge")]) == [
        "accounting database password"]
