"""A real vcluster stack for integration tests and benchmarks.

What runs, all on this machine:

* a ``salt-master`` (pytest-salt-factories) listening on the test bridge's
  gateway address, configured exactly like production: this repo's state
  tree, pillar, reactor and ext_pillar, no ``auto_accept``, no ``open_mode``;
* a ``salt-minion`` for the host itself, which is the Slurm controller *and* a
  bare-metal compute node. Its highstate, from the same states the virtual
  nodes get, installs and starts munged, slurmctld and slurmd on the host;
* LXD containers from the node image as virtual nodes, created by
  ``salt-run vcluster.expand``;
* Slurm accounting: MariaDB started by ``scripts/accounting-up.sh`` (Unix
  socket only, password in a root-only file) and slurmdbd configured by the
  same states (``slurm:accounting``), so tests read jobs back from ``sacct``.

The host's /etc/slurm, /etc/munge and Slurm daemons are those of the test:
the demo stack (``scripts/stack.sh``) must be down while tests run.
"""

import base64
import contextlib
import copy
import os
import pathlib
import socket
import subprocess
import time
import uuid

import yaml

from vcluster.masterconf import addition, master_config
from vcluster.slurm.parse import jobs_from_squeue_json, parse_record

REPO = pathlib.Path(__file__).resolve().parents[2]
POOL_NAMES = "tnode[01-16]"
POOL_PREFIX = "tnode"
#: Where the controller's PrologSlurmctld/EpilogSlurmctld write job events (salt/slurm/defaults.yaml).
EVENTS_SPOOL = "/var/spool/vcluster-slurm/events"
#: Stacks started and not yet stopped (see tests/integration/conftest.py).
LIVE = []
#: The host's daemons the controller's highstate (and accounting-up.sh) starts, in stopping order.
HOST_DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "munge", "mariadb")
#: scripts/accounting-up.sh: MariaDB, database and user; the password file it keeps (root only)
ACCOUNTING_UP = REPO / "scripts" / "accounting-up.sh"
#: libvirt: the URI and the storage pool of the VM image and the VM nodes' volumes (scripts/libvirt-up.sh)
VIRT_URI = "qemu:///system"
VIRT_POOL = os.environ.get("VCLUSTER_VIRT_POOL", "vcl-virt")


def _host_memory_mb():
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=False).stdout
    for word in out.split():
        if word.startswith("RealMemory="):
            return int(word.split("=", 1)[1])
    return 1024


def _merge(base, extra):
    """Deep-merge ``extra`` into ``base`` (dicts merge, anything else replaces)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


class ClusterStack:
    """Master + controller minion, configured from this checkout.

    A variant overrides :meth:`master_config` and :meth:`before_master_start`
    (tests/integration/site_stack.py: a site's own master, vcluster from a wheel).
    """

    def __init__(self, factories, network, root, membership="dynamic", site_extra=None):
        self.factories = factories
        self.network = network
        self.root = pathlib.Path(root)
        self.membership = membership
        self.site_extra = site_extra or {}
        # Slurm site mode (use_site_slurm): pillar merged over the site pillar
        self.slurm_site = None
        self.hostname = socket.gethostname()
        self.controller_id = self.hostname
        self.master_id = "vct_master"
        self.site = self.root / "site-pillar"
        self.registry = self.root / "registry.sqlite"
        self.master = None
        self.minion = None
        self._host_daemons_before = {}  # {service: running before start()}
        self.admin_accepts = {self.controller_id}
        self.cluster = "vct" + uuid.uuid4().hex[:8]

    # -- configuration --------------------------------------------------------

    def _addresses(self, first=100, last=115):
        base = self.network["gateway"].rsplit(".", 1)[0]
        return f"{base}.{first}-{base}.{last}"

    def write_site_pillar(self):
        """The site files the stack script writes in production."""
        self.site.mkdir(parents=True, exist_ok=True)
        self.site.chmod(0o700)  # as scripts/stack.sh: the site pillar may hold credentials
        gw = self.network["gateway"]
        site = {
            "slurm": {
                "membership": self.membership,
                # slurmdbd on the controller (salt/slurm/accounting.sls)
                "accounting": {"enabled": True},
                "controller": {"host": self.hostname, "address": gw},
                "nodes": {
                    self.hostname: {
                        "address": gw,
                        "cpus": os.cpu_count() or 1,
                        "memory": max(256, _host_memory_mb() - 512),
                        "features": ["baremetal"],
                    }
                },
            },
            "chrony": {"allow": [self.network["cidr"]]},
            "vcluster": {
                # A cluster tag of its own: reconcile and list() only ever
                # touch instances of their own cluster.
                "cluster": self.cluster,
                "controller": self.controller_id,
                "master": gw,
                "registry": str(self.registry),
                "membership": self.membership,
                "pools": {
                    "local": {"names": POOL_NAMES, "addresses": self._addresses(), "gateway": gw},
                    # Names outside the munge-key nodegroup: their highstate
                    # fails (no munge:key), which the failure tests rely on.
                    "rogue": {"names": "tbad[1-2]", "addresses": self._addresses(120, 121), "gateway": gw},
                },
                "providers": {"lxd": {"network": self.network["name"]}},
                "profiles": {
                    "broken": {"provider": "lxd", "pool": "rogue", "image": "vcluster-node",
                               "features": ["virtual"], "join_timeout": 180},
                },
            },
        }
        _merge(site, self.site_extra)
        if self.slurm_site is not None:
            # the site's own slurm.conf declares its bare-metal nodes
            site["slurm"].pop("nodes", None)
            _merge(site, self.slurm_site)
        (self.site / "site.sls").write_text(yaml.safe_dump(site))
        secrets = self.site / "secrets.sls"
        if not secrets.exists():  # nodes hold the key: made once per stack
            key = base64.b64encode(os.urandom(1024)).decode()
            secrets.write_text(yaml.safe_dump({"munge": {"key": key}}))
            secrets.chmod(0o600)
        # the database password, for the controller only (pillar/top.sls)
        accounting = self.site / "accounting.sls"
        if not accounting.exists():
            accounting.touch(0o600)
            accounting.write_text(yaml.safe_dump({"slurm": {"accounting": {"storage_pass": _storage_pass()}}}))

    def master_config(self):
        # what vcluster adds to a master with no settings of its own (as stack.sh)
        conf, _, _ = addition({}, master_config(
            REPO, self.site, self.registry, self.network["gateway"], self.master_id,
            self.controller_id, [f"{POOL_PREFIX}*"],
        ))
        conf["log_level_logfile"] = os.environ.get("VCLUSTER_TEST_LOG_LEVEL", "info")
        return conf

    def before_master_start(self):
        """Called once the master's config file is written, before the master starts."""

    # -- lifecycle ------------------------------------------------------------

    def _accept_only_controller(self, master, payload):
        """Accept keys an admin would accept by hand (the host's own), nothing else.

        vcluster nodes never need this: their keys are pre-accepted by expand.
        """
        if payload.get("act") == "pend" and payload.get("id") in self.admin_accepts:
            master.salt_key_cli().run("--yes", "--accept", payload["id"])

    def remove_leftovers(self):
        """Remove what an earlier stack left: its Salt daemons and containers.

        A master that outlived its stack keeps running its schedules
        (liveness, reconcile) against this host's slurmctld and LXD, on
        names this stack is about to hand out again; leftover containers'
        daemons would answer for the host's in name-based init-script checks.
        """
        subprocess.run(["pkill", "-f", "/tmp/vc[ts]/scripts/cli_salt_"], check=False)  # vcs: site_stack.py
        out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True,
                             check=False)
        for name in out.stdout.split():
            if name.startswith((POOL_PREFIX, "tbad")):
                subprocess.run(["lxc", "delete", "--force", name], capture_output=True, check=False)
        remove_leftover_vms()

    def start(self):
        self.remove_leftovers()
        self._host_daemons_before = {svc: _service_running(svc) for svc in HOST_DAEMONS}
        accounting_up()
        if not ACCOUNTING_SINCE:
            ACCOUNTING_SINCE.append(time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.write_site_pillar()
        self.master = self.factories.salt_master_daemon(
            self.master_id,
            overrides=self.master_config(),
            on_auth_event_callback=self._accept_only_controller,
        )
        self.before_master_start()
        self.master.start(start_timeout=120)
        self.minion = self.master.salt_minion_daemon(
            self.controller_id,
            overrides={
                "master": self.network["gateway"],
                "grains": {"roles": ["slurm-controller", "slurm-compute"]},
                # This host has systemctl but is not booted with systemd: the
                # offline systemd_service module would shadow debian_service
                # and make every service state a no-op.
                "disable_modules": ["systemd_service"],
                # Slurm job events for preemption (salt/slurm/events.sls)
                "engines": [{"vcluster_slurm_events": {"spool": EVENTS_SPOOL}}],
            },
        )
        self.minion.start(start_timeout=120)
        LIVE.append(self)
        return self

    @contextlib.contextmanager
    def extended_site(self, extra):
        """Site pillar ``extra`` merged over the stack's for the ``with`` block, then the stack's again.

        The runner compiles pillar at every call, so a provider, pool or
        profile added here is in use at once (tests/integration/test_vm_nodes.py
        adds libvirt VM nodes to the session's stack this way).
        """
        before = copy.deepcopy(self.site_extra)
        _merge(self.site_extra, copy.deepcopy(extra))
        self.write_site_pillar()
        try:
            yield self
        finally:
            self.site_extra = before
            self.write_site_pillar()

    def highstate_controller(self):
        """Configure the host with the same states as every other node."""
        ret = self.master.salt_cli(timeout=900).run(
            "state.highstate", minion_tgt=self.controller_id, _timeout=900
        )
        failed = {
            k: v.get("comment")
            for k, v in (ret.data or {}).items()
            if isinstance(v, dict) and v.get("result") is False
        }
        if ret.returncode != 0 or failed or not isinstance(ret.data, dict):
            raise AssertionError(f"controller highstate failed: {failed or ret.stdout[-3000:]}")
        self.forget_slurm_nodes()
        return ret.data

    def set_membership(self, mode):
        """Switch the cluster's membership mode and re-apply the controller's Slurm states."""
        self.membership = mode
        self.write_site_pillar()
        ret = self.master.salt_cli(timeout=600).run("state.apply", "slurm.controller,slurm.compute", minion_tgt=self.controller_id,
                                                    _timeout=600)
        if ret.returncode != 0:
            raise AssertionError(f"state.apply slurm.controller,slurm.compute failed: {ret.stdout[-3000:]}")

    def use_site_slurm(self, extra):
        """Slurm site mode (slurm:manage include, salt/slurm) with pillar ``extra``; None: back to the full file.

        Only rewrites the site pillar: the caller applies the states (the
        site's own slurm.conf must be in place first).
        """
        self.slurm_site = extra
        self.write_site_pillar()

    def forget_slurm_nodes(self):
        """Remove this stack's pool nodes from the host's slurmctld.

        slurmctld keeps dynamic nodes in its state across restarts; stale
        ones of a finished session would take jobs and be pinged forever.
        """
        names = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                               check=False).stdout.split()
        stale = sorted({n for n in names if n.startswith((POOL_PREFIX, "tbad"))})
        for name in stale:
            subprocess.run(["scancel", "-f", "-w", name], capture_output=True, check=False)
            subprocess.run(["scontrol", "update", f"nodename={name}", "state=down", "reason=stale test node"],
                           capture_output=True, check=False)
            subprocess.run(["scontrol", "delete", f"nodename={name}"], capture_output=True, check=False)

    def retire_everything(self):
        """Leave no node behind for the next module: a failed test may have
        stopped anywhere, so unstick interrupted transitions (reconcile with
        no grace), resume frozen nodes, then retire the rest by force."""
        self.run("vcluster.reconcile", "apply=True", "grace=0", timeout=600)
        nodes = (self.run("vcluster.status", timeout=120).data or {}).get("nodes") or {}
        # warm-pool nodes are retired frozen (vcluster.resume leaves them to Slurm)
        warm = {n for n, v in nodes.items() if v.get("state") == "suspended" and v.get("reason") == "warm pool"}
        frozen = sorted(n for n, v in nodes.items() if v.get("state") == "suspended" and n not in warm)
        if frozen:
            self.run("vcluster.resume", f"nodes={','.join(frozen)}", timeout=600)
        nodes = (self.run("vcluster.status", timeout=120).data or {}).get("nodes") or {}
        names = sorted(n for n, v in nodes.items() if v.get("state") in ("ready", "draining", "failed") or n in warm)
        if names:
            self.run("vcluster.retire", f"nodes={','.join(names)}", "force=True", "wait=120", timeout=600)
        left = (self.run("vcluster.status", timeout=120).data or {}).get("nodes") or {}
        if left:
            self.run("vcluster.reconcile", "apply=True", "grace=0", timeout=600)

    def stop(self):
        if self in LIVE:
            LIVE.remove(self)
        self.forget_slurm_nodes()
        self.remove_leftovers()
        for daemon in (self.minion, self.master):
            if daemon is not None and daemon.is_running():
                daemon.terminate()
        # The controller's highstate started the host's Slurm and munge
        # daemons: stop those that were not running before this stack.
        for svc, was_running in self._host_daemons_before.items():
            if not was_running:
                subprocess.run(["service", svc, "stop"], capture_output=True, check=False, timeout=120)

    # -- helpers for tests ----------------------------------------------------

    def run(self, fun, *args, timeout=900):
        """``salt-run fun args`` through the real CLI; returns the CLI result."""
        return self.master.salt_run_cli(timeout=timeout).run(fun, *args, _timeout=timeout)

    def call(self, fun, *args, timeout=300):
        """``salt-call`` on the controller's minion."""
        return self.minion.salt_call_cli(timeout=timeout).run(fun, *args, _timeout=timeout)


def vm_site(network, pool_names, addresses, memory, provider="virt", profile="vm", pool="vm"):
    """Site pillar for libvirt VM nodes: a provider on ``network`` (``{"name", "gateway"}``), a pool, a profile.

    The profile's partition and features are the LXD profile's (``htc``,
    ``[virtual, htc]``): VM nodes join Slurm like containers. Its pool names
    must start with :data:`POOL_PREFIX` (the munge-key nodegroup, and what
    the stack's clean-ups look for).
    """
    return {
        "vcluster": {
            "pools": {pool: {"names": pool_names, "addresses": addresses, "gateway": network["gateway"]}},
            "providers": {provider: {"driver": "libvirt", "uri": VIRT_URI, "network": network["name"],
                                     "storage_pool": VIRT_POOL}},
            "profiles": {profile: {"provider": provider, "pool": pool, "image": "vcluster-node", "cpus": 1,
                                   "memory": memory, "features": ["virtual", "htc"], "partition": "htc",
                                   "join_timeout": 600}},
        }
    }


def _virsh(*args, timeout=60):
    return subprocess.run(["virsh", "-q", "-c", VIRT_URI, *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


def remove_leftover_vms():
    """Destroy libvirt domains of an earlier stack (pool names) with their managed save and volumes.

    Nothing to do (and no error) when libvirtd is not running.
    """
    if not subprocess.run(["sh", "-c", "command -v virsh"], capture_output=True, check=False).stdout:
        return
    listed = _virsh("list", "--all", "--name")
    if listed.returncode != 0:
        return  # libvirtd not running
    for name in listed.stdout.split():
        if not name.startswith((POOL_PREFIX, "tbad")):
            continue
        _virsh("destroy", name)
        _virsh("undefine", name, "--managed-save")
        for vol in (f"{name}.qcow2", f"{name}-seed.iso"):
            _virsh("vol-delete", "--pool", VIRT_POOL, vol)


def _service_running(name):
    """Does the host's init script report ``name`` running (``service NAME status``)?"""
    proc = subprocess.run(["service", name, "status"], capture_output=True, check=False, timeout=60)
    return proc.returncode == 0


def slurm(*cmd, check=True, timeout=60):
    """Run a Slurm client command on the host."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def sbatch(*args, script="hostname"):
    """Submit a job; return its id."""
    out = slurm("sbatch", "--parsable", "-o", "/tmp/vcluster-job-%j.out", *args, "--wrap", script)
    return out.strip().split(";")[0]


def accounting_up():
    """MariaDB with Slurm's accounting database and user (idempotent, about a second when up)."""
    proc = subprocess.run(["bash", str(ACCOUNTING_UP)], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"scripts/accounting-up.sh failed: {proc.stderr.strip()[-2000:]}")


def _storage_pass():
    path = subprocess.run(["bash", str(ACCOUNTING_UP), "--print-pass-file"], capture_output=True, text=True,
                          check=True).stdout.strip()
    return pathlib.Path(path).read_text().strip()


def accounting_on():
    """Does the controller store jobs in slurmdbd (``AccountingStorageType`` of ``scontrol show config``)?"""
    out = slurm("scontrol", "show", "config")
    return any(line.split("=", 1)[-1].strip() == "accounting_storage/slurmdbd"
               for line in out.splitlines() if line.startswith("AccountingStorageType"))


#: Local time of the first stack start (``sacct`` Submit format): older records of a reused job id are not ours.
ACCOUNTING_SINCE = []


def accounted_jobs(job_ids):
    """``{job_id: (state, requeues)}`` from ``sacct`` (slurmdbd), for the jobs it knows.

    ``sacct -X -D -n -P -o JobIDRaw,State,Submit``: with ``-D`` every run of
    a job leaves its own allocation record, and a requeue gives the job a
    new submit time. Each record but the newest is therefore a run that was
    requeued, whatever its state says: REQUEUED for ``scontrol requeue``,
    NODE_FAIL for a node failure, PREEMPTED for preemption (Slurm 22.05's
    sacct has no Restarts field to count them). Records submitted before
    the first stack start are left out; the state is the newest record's,
    as one word ("CANCELLED by 0" -> CANCELLED). Unlike slurmctld's memory,
    which drops a finished job after MinJobAge, the accounting database
    keeps every job.
    """
    if not job_ids:
        return {}
    out = slurm("sacct", "-X", "-D", "-n", "-P", "-o", "JobIDRaw,State,Submit",
                "-j", ",".join(str(j) for j in job_ids))
    wanted = {str(j) for j in job_ids}
    since = ACCOUNTING_SINCE[0] if ACCOUNTING_SINCE else ""
    runs = {}
    for line in out.splitlines():
        jid, state, submit = (line.split("|") + ["", "", ""])[:3]
        if jid in wanted and submit >= since:
            runs.setdefault(jid, []).append((submit, state.split()[0] if state.strip() else ""))
    found = {}
    for jid, records in runs.items():
        records.sort(key=lambda rec: rec[0])  # stable: same-second records keep sacct's order
        found[jid] = (records[-1][1], len(records) - 1)
    return found


def live_jobs(job_ids):
    """``{job_id: state}`` for the jobs slurmctld still holds in memory (``squeue --json --states=all``).

    Parsed by the product's version-aware parser; a finished job stays
    there for MinJobAge only. The accounting database lags slurmctld: a job
    Slurm just requeued shows its failed run (NODE_FAIL) in ``sacct`` until
    its new pending record is written.
    """
    wanted = {str(j) for j in job_ids}
    jobs = jobs_from_squeue_json(slurm("squeue", "--json", "--states=all"))
    return {str(j.id): j.state for j in jobs if str(j.id) in wanted}


def job_states(job_ids):
    """``{job_id: state}``: slurmctld's word for the jobs it still holds, ``sacct`` for the rest.

    Without accounting (a site's own slurm.conf in test_site_slurm) only
    slurmctld's memory is asked, see :func:`live_jobs`.
    """
    states = live_jobs(job_ids)
    if accounting_on():
        missing = [j for j in job_ids if str(j) not in states]
        states.update({jid: state for jid, (state, _) in accounted_jobs(missing).items()})
    return states


def assert_not_requeued(job_ids):
    """Every job is in the accounting database and none was requeued (one ``sacct -D`` record each)."""
    found = accounted_jobs(job_ids)
    missing = sorted({str(j) for j in job_ids} - set(found))
    requeued = {jid: r for jid, (_, r) in found.items() if r}
    assert not missing, f"jobs missing from sacct: {missing}"
    assert not requeued, f"jobs requeued (earlier sacct -D records): {requeued}"


def wait_jobs(job_ids, states=("COMPLETED",), timeout=300):
    """Poll (sacct, see :func:`job_states`) until every job is in ``states``; return the final states.

    With accounting on, a job that was requeued on the way fails at once
    (an earlier ``sacct -D`` record, see :func:`accounted_jobs`): no test
    here expects one.
    """
    deadline = time.monotonic() + timeout
    accounting = accounting_on()
    while True:
        if accounting:
            found = accounted_jobs(job_ids)
            requeued = {jid: r for jid, (_, r) in found.items() if r}
            if requeued:
                raise AssertionError(f"jobs requeued (earlier sacct -D records): {requeued}")
            seen = {jid: state for jid, (state, _) in found.items()}
        else:
            seen = job_states(job_ids)
        if len(seen) == len(job_ids) and all(s in states for s in seen.values()):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not reach {states} in {timeout}s: {seen}")
        time.sleep(1)


def node_info(name):
    """``scontrol show -o node NAME`` as a dict, or None when Slurm has no such node."""
    proc = subprocess.run(["scontrol", "show", "-o", "node", name], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    # values may hold spaces (Reason=vcluster: resume failed: ...): the product's parser keeps them whole
    return parse_record(proc.stdout.strip().splitlines()[0])
