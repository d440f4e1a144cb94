"""A vcluster stack on Slurm 24.11: the controller in a Debian 13 container, trixie virtual nodes.

:class:`TrixieStack` is :class:`~tests.integration.stack.ClusterStack` (its
own salt-master from salt-factories on the test bridge, this checkout's
states, pillar, reactor and ext_pillar, ``vcluster.expand`` with the LXD
provider) with the Slurm controller moved off the host:

* the controller is a container of the trixie node image
  (``vcluster-node-trixie``, slurmd 24.11.5) given Debian 13's
  ``slurmctld``, ``slurmdbd`` and ``slurm-wlm-mysql-plugin`` .debs (fetched
  once into the image's .deb cache, :func:`fetch_debs`: the containers have
  no route out) and vcluster's library (:meth:`TrixieStack.install_vcluster`,
  the checkout's files as an editable install has them, with the
  ``salt.loader`` entry point the controller minion needs for
  ``_modules/slurm.py`` and the events engine);
* its ``salt-minion`` (the image's Salt 3008.3) is the master's minion, its
  key accepted as an admin would (the stack's auth callback); the master's
  ``state.highstate`` configures it with the same states as the 22.05
  stack's controller (munge, slurm.controller with accounting, chrony.server);
* accounting: slurmdbd 24.11 runs in the container and stores in the host's
  MariaDB (``scripts/accounting-up.sh``, the 22.05 stack's), reached on its
  Unix socket, which an LXD disk device shares into the container
  (``/run/mysqld``), in a database of its own (``slurm_acct_db_2411``:
  slurmdbd 24.11 converts the tables it opens, and 22.05's slurmdbd could
  not read them after). Debian 13's slurmdbd needs Debian 12's libmariadb3
  (docs/slurm-versions.md): the host's ``libmariadb.so.3`` is copied into
  the container and a systemd drop-in gives slurmdbd ``LD_LIBRARY_PATH``
  (:data:`DBD_DROPIN`), written by the test before the highstate: the
  states install and configure slurmdbd, the test only adds the library;
* Slurm's client commands run in the controller container
  (:class:`Slurm24`: sbatch, scontrol, sacct with the same job counting as
  stack.py's helpers);
* with ``baremetal=True`` the container is also the cluster's bare-metal
  node (a 24.11 slurmd beside slurmctld, as the 22.05 stack's host is):
  pillar ``slurm:nodes`` declares it (feature ``baremetal``, so partition
  ``batch``) and its minion gets role ``slurm-compute`` too, so the same
  highstate gives it slurm.compute. A preemption policy then names the LXD
  server as its hypervisor (``vcluster:preemption:hypervisors``,
  :func:`lxd_server_name`): the host's own slurmd 22.05 cannot join a 24.11
  controller, so a job on this node stands for a job on the hypervisor.

Virtual nodes are the trixie image (profile ``htc``'s image), expanded,
joined, suspended and retired by the real runner and reactor.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import time
import urllib.request

import yaml

from tests.integration.stack import LIVE, REPO, ClusterStack, accounting_up
from vcluster.slurm.parse import parse_record

SUITE = "trixie"
IMAGE_ALIAS = "vcluster-node-trixie"
CACHE_DIR = pathlib.Path("/var/cache/vcluster/trixie")
MIRROR = os.environ.get("MIRROR", "http://deb.debian.org/debian")  # image/build.sh's default
TRIXIE_PACKAGES = (pathlib.Path(os.environ.get("VCLUSTER_SLURM_CHROOT", "/var/tmp/vcluster-trixie"))
                   / "var/lib/apt/lists/deb.debian.org_debian_dists_trixie_main_binary-amd64_Packages")
#: What the controller container gets on top of the node image.
CONTROLLER_PACKAGES = ("slurmctld", "slurmdbd", "slurm-wlm-mysql-plugin", "sudo")  # sudo: slurm.power
#: slurmdbd 24.11's own database in the host's MariaDB (see the module docstring).
DATABASE = "slurm_acct_db_2411"
HOST_LIBMARIADB = pathlib.Path("/usr/lib/x86_64-linux-gnu/libmariadb.so.3")
LIBMARIADB_DIR = "/opt/vcluster-libmariadb-bookworm"
DBD_DROPIN = f"""\
# vcluster test stack: Debian 13's slurmdbd 24.11.5 fails its first query with
# Debian 13's libmariadb3 (error 5027, docs/slurm-versions.md); Debian 12's works.
[Service]
Environment=LD_LIBRARY_PATH={LIBMARIADB_DIR}
"""
#: The controller container as a bare-metal node (TrixieStack baremetal=True): at most its LXD
#: limits (the module's controller container has 1 CPU and 1024 MiB), leaving slurmctld and slurmdbd room.
BAREMETAL_CPUS = 1
BAREMETAL_MEMORY_MB = 256
BOOT_TIMEOUT = 120
BOOTED_STATES = ("running", "degraded", "maintenance")
EVENTS_SPOOL = "/var/spool/vcluster-slurm/events"
SRC = "/opt/vcluster-src"


# -- containers ------------------------------------------------------------------


def lxc_exec(name, *cmd, timeout=120, check=True, input=None):  # noqa: A002 - subprocess's word
    """Run a command in the container; its stripped stdout."""
    proc = subprocess.run(["lxc", "exec", name, "--", *cmd], capture_output=True, text=True, input=input,
                          timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} in {name} exited {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout.strip()


def wait_booted(name):
    """Poll until the container's systemd has finished booting; fail unless it is "running".

    `lxc exec` can run before the container's systemd answers, and then
    systemctl prints "offline" (or nothing, or "starting") although boot goes
    on: such answers are polled past, not taken as the result (a CI run on a
    loaded 2-core host saw "offline" once). The failure message carries what
    tells a stuck boot apart: PID 1's command, the failed units, the console.
    """
    deadline = time.monotonic() + BOOT_TIMEOUT
    state = ""
    while time.monotonic() < deadline:
        state = lxc_exec(name, "systemctl", "is-system-running", "--wait", check=False)
        if state in BOOTED_STATES:
            break
        time.sleep(0.5)
    if state != "running":
        pid1 = lxc_exec(name, "cat", "/proc/1/comm", check=False)
        failed = lxc_exec(name, "systemctl", "--failed", "--no-legend", "--plain", check=False)
        console = subprocess.run(["lxc", "console", name, "--show-log"], capture_output=True, text=True,
                                 timeout=60, check=False).stdout[-2000:]
        raise AssertionError(f"systemd in {name} is {state!r} after {BOOT_TIMEOUT} s (PID 1: {pid1!r}; "
                             f"failed units: {failed!r}); console:\n{console}")


def push(name, path, data, mode="0644"):
    """Write ``data`` (str or bytes) to ``path`` in the container, parents created, mode set first."""
    script = 'mkdir -p "$(dirname "$1")" && : > "$1" && chmod "$2" "$1" && cat > "$1"'
    subprocess.run(["lxc", "exec", name, "--", "sh", "-c", script, "sh", path, mode],
                   input=data.encode() if isinstance(data, str) else data, check=True, timeout=60)


def push_tree(name, source, dest, *members):
    """Copy ``members`` of directory ``source`` into ``dest`` in the container (one tar, no caches)."""
    tar = subprocess.run(["tar", "-C", str(source), "--exclude=__pycache__", "-cf", "-", *members],
                         capture_output=True, check=True, timeout=120).stdout
    subprocess.run(["lxc", "exec", name, "--", "sh", "-c", f"mkdir -p {dest} && tar -C {dest} -xf -"],
                   input=tar, check=True, timeout=120)


def lxd_server_name():
    """The LXD server's name, the host of every LXD instance in vcluster's registry (the provider's ``host``)."""
    out = subprocess.run(["lxc", "query", "/1.0"], capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(out)["environment"]["server_name"]


# -- Debian 13 packages for the controller ---------------------------------------------


def packages_index():
    """``{name: {Version, Filename, SHA256, Depends, Pre-Depends}}`` and ``{provided: name}`` of the list."""
    index, provides, entry = {}, {}, {}
    with open(TRIXIE_PACKAGES, encoding="utf-8") as fh:
        for line in fh:
            if line == "\n":
                if "Package" in entry:
                    index.setdefault(entry["Package"], entry)
                    for prov in entry.get("Provides", "").split(","):
                        if prov.strip():
                            provides.setdefault(prov.split("(")[0].strip(), entry["Package"])
                entry = {}
            elif not line[0].isspace() and ": " in line:
                key, value = line.rstrip("\n").split(": ", 1)
                if key in ("Package", "Version", "Filename", "SHA256", "Depends", "Pre-Depends", "Provides"):
                    entry[key] = value
    return index, provides


def resolve_debs(wanted, installed):
    """The .deb entries to add for ``wanted``, with what they need that ``installed`` lacks."""
    index, provides = packages_index()
    todo, chosen = list(wanted), {}
    while todo:
        name = todo.pop()
        name = name if name in index else provides.get(name, name)
        if name in chosen or name in installed:
            continue
        assert name in index, f"{name} is not in the Debian 13 package list {TRIXIE_PACKAGES}"
        chosen[name] = index[name]
        for field in ("Pre-Depends", "Depends"):
            for clause in index[name].get(field, "").split(","):
                alternatives = [a.split("(")[0].split(":")[0].strip() for a in clause.split("|") if a.strip()]
                if not alternatives:
                    continue
                if not any(a in installed or provides.get(a) in installed for a in alternatives):
                    todo.append(alternatives[0])
    return list(chosen.values())


def fetch_debs(entries):
    """Each entry's .deb in the image's .deb cache (fetched once, checksum checked); their paths."""
    paths = []
    for entry in entries:
        path = CACHE_DIR / "debs" / os.path.basename(entry["Filename"])
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["SHA256"]:
            with urllib.request.urlopen(f"{MIRROR}/{entry['Filename']}", timeout=120) as resp:  # noqa: S310
                data = resp.read()
            assert hashlib.sha256(data).hexdigest() == entry["SHA256"], f"{entry['Filename']}: checksum mismatch"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        paths.append(path)
    return paths


def install_controller_packages(name):
    """slurmctld, slurmdbd and the MySQL plugin of the node image's Slurm version, by dpkg (no network)."""
    installed = set(lxc_exec(name, "dpkg-query", "-W", "-f", "${Package}\\n").split())
    version = lxc_exec(name, "dpkg-query", "-W", "-f", "${Version}", "slurmd")
    entries = resolve_debs(CONTROLLER_PACKAGES, installed)
    wrong = {e["Package"]: e["Version"] for e in entries if e["Package"].startswith("slurm") and e["Version"] != version}
    assert not wrong, f"the package list at {TRIXIE_PACKAGES} has {wrong}, the image slurmd {version}: rebuild one"
    debs = fetch_debs(entries)
    for deb in debs:
        subprocess.run(["lxc", "file", "push", "-q", str(deb), f"{name}/tmp/"], check=True, timeout=60,
                       capture_output=True)
    lxc_exec(name, "env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", *(f"/tmp/{d.name}" for d in debs),
             timeout=300)
    # the packages start their daemons unconfigured; the states start them
    lxc_exec(name, "systemctl", "stop", "slurmctld", "slurmdbd", check=False)
    return [d.name for d in debs]


# -- Slurm through the controller container ---------------------------------------------


class Slurm24:
    """Slurm's commands on the controller container, and stack.py's job counting with them."""

    def __init__(self, controller):
        self.controller = controller
        # local time of the stack's start (sacct's Submit format): the database outlives the
        # controller, whose job ids start again at 1, so older records of an id are not ours
        self.since = time.strftime("%Y-%m-%dT%H:%M:%S")

    def __call__(self, *cmd, check=True, timeout=60):
        proc = subprocess.run(["lxc", "exec", self.controller, "--", *cmd], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} on {self.controller}: {proc.stderr.strip()}")
        return proc.stdout

    def sbatch(self, *args, script="hostname"):
        return self("sbatch", "--parsable", "-o", "/dev/null", *args, "--wrap", script).strip().split(";")[0]

    def node_info(self, name):
        proc = subprocess.run(["lxc", "exec", self.controller, "--", "scontrol", "show", "-o", "node", name],
                              capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        return parse_record(proc.stdout.strip().splitlines()[0])

    def show_job(self, job_id):
        out = self("scontrol", "show", "-o", "job", str(job_id), check=False)
        return dict(w.split("=", 1) for w in out.split() if "=" in w)

    def accounted_jobs(self, job_ids):
        """``{job_id: (state, requeues)}`` from ``sacct -X -D`` (stack.accounted_jobs, on this controller)."""
        if not job_ids:
            return {}
        out = self("sacct", "-X", "-D", "-n", "-P", "-o", "JobIDRaw,State,Submit",
                   "-j", ",".join(str(j) for j in job_ids))
        wanted = {str(j) for j in job_ids}
        runs = {}
        for line in out.splitlines():
            jid, state, submit = (line.split("|") + ["", "", ""])[:3]
            if jid in wanted and submit >= self.since:
                runs.setdefault(jid, []).append((submit, state.split()[0] if state.strip() else ""))
        return {jid: (sorted(recs, key=lambda r: r[0])[-1][1], len(recs) - 1) for jid, recs in runs.items()}

    def live_jobs(self, job_ids):
        """``{job_id: state}`` of the jobs slurmctld holds (``scontrol show job``: 24.11's squeue --json
        leaves finished jobs out)."""
        found = {}
        for jid in job_ids:
            state = self.show_job(jid).get("JobState")
            if state:
                found[str(jid)] = state
        return found

    def job_states(self, job_ids):
        """slurmctld's word for the jobs it holds, sacct's for the rest."""
        states = self.live_jobs(job_ids)
        missing = [j for j in job_ids if str(j) not in states]
        states.update({jid: state for jid, (state, _) in self.accounted_jobs(missing).items()})
        return states

    def assert_not_requeued(self, job_ids):
        found = self.accounted_jobs(job_ids)
        missing = sorted({str(j) for j in job_ids} - set(found))
        requeued = {jid: r for jid, (_, r) in found.items() if r}
        assert not missing, f"jobs missing from sacct: {missing}"
        assert not requeued, f"jobs requeued (earlier sacct -D records): {requeued}"

    def wait_jobs(self, job_ids, states=("COMPLETED",), timeout=300):
        """Poll sacct until every job is in ``states`` (a requeue on the way fails at once)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.accounted_jobs(job_ids)
            requeued = {jid: r for jid, (_, r) in found.items() if r}
            assert not requeued, f"jobs requeued (earlier sacct -D records): {requeued}"
            seen = {jid: state for jid, (state, _) in found.items()}
            if len(seen) == len(job_ids) and all(s in states for s in seen.values()):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs did not reach {states} in {timeout}s: {seen}")
            time.sleep(1)


# -- the stack ---------------------------------------------------------------------------


def create_database():
    """slurmdbd 24.11's database in the host's MariaDB, for the user accounting-up.sh made."""
    sql = (f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`; "
           f"GRANT ALL ON `{DATABASE}`.* TO 'slurm'@'localhost';")
    subprocess.run(["mariadb", "--no-defaults", "--socket=/run/mysqld/mysqld.sock", "-e", sql],
                   check=True, capture_output=True, timeout=60)


class TrixieStack(ClusterStack):
    """Master on the host, Slurm 24.11 controller (with slurmdbd) in the trixie container ``controller``."""

    def __init__(self, factories, network, root, controller, membership="dynamic", site_extra=None,
                 baremetal=False):
        super().__init__(factories, network, root, membership=membership, site_extra=site_extra)
        self.ctl = controller  # an InstanceSpec: .name, .address
        self.baremetal = baremetal  # the controller container is also partition batch's node
        self.controller_id = controller.name
        self.admin_accepts = {controller.name}
        self.master_id = "vct24_master"
        self.slurm = Slurm24(controller.name)

    def write_site_pillar(self):
        """The 22.05 stack's site files, with the controller in the container, which is the
        bare-metal node with ``baremetal`` (else there is none)."""
        super().write_site_pillar()
        path = self.site / "site.sls"
        site = yaml.safe_load(path.read_text())
        site["slurm"]["controller"] = {"host": self.ctl.name, "address": self.ctl.address}
        site["slurm"].pop("nodes", None)
        if self.baremetal:
            site["slurm"]["nodes"] = {self.ctl.name: {"address": self.ctl.address, "cpus": BAREMETAL_CPUS,
                                                      "memory": BAREMETAL_MEMORY_MB, "features": ["baremetal"]}}
        site["slurm"]["accounting"]["storage_loc"] = DATABASE
        # the trixie image for the stack's virtual nodes (policy.md: a profile's image)
        for profile in ("htc", "mem"):
            site["vcluster"]["profiles"].setdefault(profile, {}).setdefault("image", IMAGE_ALIAS)
        path.write_text(yaml.safe_dump(site))

    def prepare_controller(self):
        """Packages, library, MariaDB socket and the libmariadb drop-in: what the states cannot do offline."""
        name = self.ctl.name
        wait_booted(name)
        install_controller_packages(name)
        push(name, f"{LIBMARIADB_DIR}/libmariadb.so.3", HOST_LIBMARIADB.read_bytes())
        push(name, "/etc/systemd/system/slurmdbd.service.d/vcluster-libmariadb.conf", DBD_DROPIN)
        subprocess.run(["lxc", "config", "device", "add", name, "mysqld", "disk", "source=/run/mysqld",
                        "path=/run/mysqld"], check=True, capture_output=True, timeout=60)
        self.install_vcluster()
        lxc_exec(name, "systemctl", "daemon-reload")

    def install_vcluster(self):
        """vcluster's library and Salt modules for the container's Salt, as an editable install has them."""
        name = self.ctl.name
        push_tree(name, REPO, SRC, "vcluster", "_modules", "_states", "_engines")
        import hostlist  # python-hostlist, vcluster's one dependency Salt lacks

        push(name, f"{SRC}/hostlist.py", pathlib.Path(hostlist.__file__).read_text())
        purelib = lxc_exec(name, "/opt/salt/bin/python3", "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        push(name, f"{purelib}/vcluster-src.pth", f"{SRC}\n")
        info = f"{purelib}/vcluster-0.1.0.dist-info"
        push(name, f"{info}/METADATA", "Metadata-Version: 2.1\nName: vcluster\nVersion: 0.1.0\n")
        push(name, f"{info}/entry_points.txt", "[salt.loader]\nvcluster = vcluster.loader:get_dirs\n")

    def start_controller_minion(self):
        """The image's salt-minion, pointed at this master; its key accepted by the auth callback."""
        minion = {
            "id": self.ctl.name,
            "master": self.network["gateway"],
            # salt-factories gives the master free ports of its own
            "master_port": self.master.config["ret_port"],
            "publish_port": self.master.config["publish_port"],
            "grains": {"roles": ["slurm-controller", "slurm-compute"] if self.baremetal else ["slurm-controller"]},
            "engines": [{"vcluster_slurm_events": {"spool": EVENTS_SPOOL}}],
            "acceptance_wait_time": 2,
            "enable_fqdns_grains": False,
        }
        push(self.ctl.name, "/etc/salt/minion.d/vcluster.conf", yaml.safe_dump(minion))
        lxc_exec(self.ctl.name, "systemctl", "restart", "salt-minion")
        deadline = time.monotonic() + 120
        while True:
            ret = self.master.salt_cli(timeout=10).run("test.ping", minion_tgt=self.ctl.name, _timeout=10)
            if ret.data is True:
                return
            if time.monotonic() > deadline:
                journal = lxc_exec(self.ctl.name, "journalctl", "-u", "salt-minion", "--no-pager", "-n", "40",
                                   check=False)
                keys = self.master.salt_key_cli().run("--list", "all").stdout
                raise AssertionError(f"{self.ctl.name}'s minion did not answer: {ret.stdout[-2000:]}\n"
                                     f"keys: {keys}\nits journal:\n{journal}")
            time.sleep(1)

    def start(self):
        self.remove_leftovers()
        self._host_daemons_before = {"mariadb": subprocess.run(["service", "mariadb", "status"],
                                                               capture_output=True, check=False).returncode == 0}
        accounting_up()
        create_database()
        self.prepare_controller()
        self.write_site_pillar()
        self.master = self.factories.salt_master_daemon(
            self.master_id, overrides=self.master_config(), on_auth_event_callback=self._accept_only_controller)
        self.master.start(start_timeout=120)
        LIVE.append(self)
        self.start_controller_minion()
        return self

    def highstate_controller(self):
        ret = self.master.salt_cli(timeout=900).run("state.highstate", minion_tgt=self.controller_id, _timeout=900)
        failed = {k: v.get("comment") for k, v in (ret.data or {}).items()
                  if isinstance(v, dict) and v.get("result") is False}
        if ret.returncode != 0 or failed or not isinstance(ret.data, dict):
            raise AssertionError(f"controller highstate failed: {failed or ret.stdout[-3000:]}")
        return ret.data

    def set_membership(self, mode):
        self.membership = mode
        self.write_site_pillar()
        # the bare-metal slurmd reads the same slurm.conf (the 22.05 stack applies both too)
        states = "slurm.controller,slurm.compute" if self.baremetal else "slurm.controller"
        ret = self.master.salt_cli(timeout=600).run("state.apply", states, minion_tgt=self.controller_id,
                                                    _timeout=600)
        if ret.returncode != 0:
            raise AssertionError(f"state.apply {states} failed: {ret.stdout[-3000:]}")

    def forget_slurm_nodes(self):
        """Nothing: the controller container goes with the stack."""

    def call(self, fun, *args, timeout=300):
        """``salt CONTROLLER fun args`` from this master."""
        return self.master.salt_cli(timeout=timeout).run(fun, *args, minion_tgt=self.controller_id, _timeout=timeout)

    def stop(self):
        if self in LIVE:
            LIVE.remove(self)
        self.remove_leftovers()
        if self.master is not None and self.master.is_running():
            self.master.terminate()
        if not self._host_daemons_before.get("mariadb", True):
            subprocess.run(["service", "mariadb", "stop"], capture_output=True, check=False, timeout=120)

