"""A throwaway Slurm controller and nodes from another Debian release's chroot.

:class:`ChrootSlurmHarness` is :class:`tests.harness.slurm.SlurmHarness` with
slurmctld, slurmd and every client command taken from a root file system
built by ``tests/harness/trixie_chroot.sh`` (Debian 13, Slurm 24.11): it runs
a real 24.11 controller beside the host's 22.05 packages. munged is the
host's (the munge socket protocol does not depend on the release).

How it differs from the parent, and why (measured with 24.11.5):

* The harness directory (``/tmp/vcsh...``) is bind-mounted at the same path
  inside the chroot, so slurm.conf, the munge socket and job output have
  one path for both sides.
* The chroot gets /proc, /sys and /dev mounted (slurmctld and slurmd need
  them); mounts this harness made are undone in :meth:`stop`.
* ``cgroup.conf`` says ``CgroupPlugin=disabled``: without it 24.11's slurmd
  stops with "No filesystem mounted on /sys/fs/cgroup".
* The daemons run as renamed copies (process name ``vcsh-slurmctld``, see
  the parent) but with ``argv[0]`` set back to ``slurmctld``/``slurmd``:
  24.11 decides which daemon it is from ``argv[0]`` and otherwise stops
  with "certmgr plugin only allowed on slurmctld and slurmd".
* The chroot's /etc/hosts and /etc/resolv.conf are bind-mounted from the
  harness directory: the controller's host name and the node names resolve
  from the file, and nothing waits on an unreachable name server (without
  it, RPCs stalled for 5 s and clients timed out).
* Each slurmd runs like the parent's (own network, mount and UTS
  namespace), with the private tmpfs on the chroot's /run.

With ``accounting=True`` the controller also has Slurm accounting, all of
it the chroot's: a MariaDB server of its own (``mariadbd`` 11.8, data
directory and socket in the harness directory, TCP on 127.0.0.1 at a free
port, no other clients) and ``slurmdbd`` 24.11 on it, registered for the
cluster before slurmctld starts with
``AccountingStorageType=accounting_storage/slurmdbd``. Both run as renamed
copies (``vcsh-mariadbd``, ``vcsh-slurmdbd``: the host's own MariaDB and
slurmdbd init scripts look for their names) and are stopped in
:meth:`stop`. Measured: about 6 s more to start (most of it
``mariadb-install-db``). ``tests/harness/trixie_chroot.sh`` installs
``slurmdbd``, ``mariadb-server`` and ``mariadb-client`` in the chroot.

Measured: Debian 13's slurmdbd 24.11.5 stops at start with Debian 13's own
client library (libmariadb3 1:11.8.9+ds-0+deb13u1, Connector/C 3.4.10):
``mysql_query failed: 5027 Number of columns in result (=1) set execeeds
maxmimum allowed number of columns (=0)`` on its first query (``select @var
:= concat('');``, accounting_storage_mysql.c), then ``fatal``. The same
query from the chroot's ``mariadb`` client works, and the same slurmdbd
with Debian 12's libmariadb3 (1:10.11, same soname) through
``LD_LIBRARY_PATH`` starts and works against the same 11.8 server. So the
harness starts slurmdbd as Debian 13 ships it first and, only when it
stops on that error, again with the host's library (``dbd_library`` says
which ran). A real Debian 13 controller with slurmdbd needs the same
workaround (or a fixed libmariadb3) until Debian fixes it.
"""

import os
import secrets
import shlex
import subprocess

from tests.harness import slurm as _h

#: Where tests/harness/trixie_chroot.sh builds its chroot by default.
DEFAULT_CHROOT = os.environ.get("VCLUSTER_SLURM_CHROOT", "/var/tmp/vcluster-trixie")


def chroot_unavailable(chroot=DEFAULT_CHROOT):
    """Why a chroot harness cannot run here (a sentence), or None when it can."""
    if os.geteuid() != 0:
        return "the chroot Slurm harness needs root"
    if not os.path.exists(resolve_in(chroot, "/usr/sbin/slurmctld")):
        return f"no Slurm chroot at {chroot}: build it with tests/harness/trixie_chroot.sh"
    for prog in ("munged", "nsenter", "unshare", "ip", "chroot", "mount"):
        if _h.shutil.which(prog) is None:
            return f"the chroot Slurm harness needs {prog} on PATH"
    return None


def accounting_unavailable(chroot=DEFAULT_CHROOT):
    """Why the chroot cannot run slurmdbd with MariaDB (a sentence), or None when it can."""
    reason = chroot_unavailable(chroot)
    if reason:
        return reason
    for path in ("/usr/sbin/slurmdbd", "/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db", "/usr/bin/mariadb",
                 "/usr/bin/sacctmgr"):
        if not os.path.exists(resolve_in(chroot, path)):
            return (f"the chroot at {chroot} has no {path}: run tests/harness/trixie_chroot.sh {chroot} "
                    "(it installs slurmdbd and MariaDB into an existing chroot)")
    return None


def resolve_in(chroot, path, depth=20):
    """Host path of ``path`` as the chroot sees it (absolute symlinks followed inside it)."""
    for _ in range(depth):
        host = os.path.join(chroot, path.lstrip("/"))
        if not os.path.islink(host):
            return host
        target = os.readlink(host)
        path = target if target.startswith("/") else os.path.join(os.path.dirname(path), target)
    raise RuntimeError(f"too many symlinks at {path} in {chroot}")


def _mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        return any(line.split()[1] == path for line in fh)


class _DebianLibmariadb(RuntimeError):
    """slurmdbd stopped on error 5027 of the chroot's libmariadb3 (see the module docstring)."""


def _host_libmariadb():
    """The host's ``libmariadb.so.3`` (Debian 12's, which slurmdbd 24.11 works with), or None."""
    for path in ("/usr/lib/x86_64-linux-gnu/libmariadb.so.3", "/usr/lib/aarch64-linux-gnu/libmariadb.so.3"):
        if os.path.exists(path):
            return os.path.realpath(path)
    return None


class ChrootSlurmHarness(_h.SlurmHarness):
    """:class:`SlurmHarness` whose Slurm binaries come from ``chroot``."""

    def __init__(self, chroot=DEFAULT_CHROOT, accounting=False, **kwargs):
        super().__init__(**kwargs)
        self.chroot = os.path.realpath(chroot)
        self.accounting = accounting
        self.dbd_port = None
        self.dbd_library = None  # the host's libmariadb slurmdbd runs with, when the chroot's fails
        self._mariadb = None  # its Popen, reaped in stop
        self._mounts = []  # what this harness mounted, undone in reverse

    def _inside(self, path):
        return os.path.join(self.chroot, path.lstrip("/"))

    def _mount(self, *args, target):
        _h._run(["mount", *args, target])
        self._mounts.append(target)

    def start(self, timeout=30):
        reason = chroot_unavailable(self.chroot)
        if reason:
            raise RuntimeError(reason)
        self.root = _h.tempfile.mkdtemp(prefix=f"{_h.PREFIX}{self.token}-", dir="/tmp")
        os.chmod(self.root, 0o755)
        for sub in ("munge", "state", "spool", "log", "run", "jobs", "bin"):
            os.makedirs(self._path(sub), mode=0o755, exist_ok=True)
        self._save_record()
        try:
            for fstype, src, dst in (("proc", "proc", "proc"), ("sysfs", "sysfs", "sys")):
                if not _mounted(self._inside(dst)):
                    self._mount("-t", fstype, src, target=self._inside(dst))
            if not _mounted(self._inside("dev")):
                self._mount("--bind", "/dev", target=self._inside("dev"))
            os.makedirs(self._inside(self.root), exist_ok=True)
            self._mount("--bind", self.root, target=self._inside(self.root))
            self._start_bridge()
            self._write_hosts()
            with open(self._path("resolv.conf"), "w", encoding="utf-8") as fh:
                fh.write("# no name server: the harness's names are in /etc/hosts\n")
            for name in ("hosts", "resolv.conf"):
                target = self._inside(f"/etc/{name}")
                if not os.path.exists(target):
                    open(target, "a", encoding="utf-8").close()  # a mount point
                self._mount("--bind", self._path(name), target=target)
            _h.PrivateMunged(self.munge_dir).start(timeout)
            self._write_conf()
            with open(self._path("cgroup.conf"), "w", encoding="utf-8") as fh:
                fh.write("CgroupPlugin=disabled\n")
            if self.accounting:
                self._start_accounting(timeout)
            self._start_slurmctld(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.root:  # before the parent removes the directory with their pid files
            for name in ("slurmdbd", "mariadbd"):
                pid = _h._read_pid(self._path("run", f"{name}.pid"))
                if pid and _h._comm(pid) == _h.DAEMON_PREFIX + name:
                    _h._kill_pids([pid], timeout=30)
        if self._mariadb is not None:
            try:
                self._mariadb.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._mariadb.kill()
                self._mariadb.wait()
            self._mariadb = None
        try:
            super().stop()
        finally:
            for target in reversed(self._mounts):
                _h._run(["umount", "-l", target], check=False)
            self._mounts = []
            if self.root and os.path.isdir(self._inside(self.root)) and not _mounted(self._inside(self.root)):
                os.rmdir(self._inside(self.root))
            # files that were bind-mounted into the chroot (hosts, resolv.conf)
            # once outlived the parent's removal: remove what is left
            if self.root and os.path.isdir(self.root) and not os.environ.get("VCLUSTER_KEEP_SLURM_HARNESS"):
                _h.shutil.rmtree(self.root, ignore_errors=True)

    # -- accounting (slurmdbd on a MariaDB of its own) -------------------------

    def _write_conf(self):
        super()._write_conf()
        if not self.accounting:
            return
        self.dbd_port = _h._free_port(self.port + 2)
        with open(self.conf, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        lines = [ln for ln in lines if not ln.startswith("AccountingStorage")]
        lines += ["AccountingStorageType=accounting_storage/slurmdbd",
                  f"AccountingStorageHost={self.hostname}", f"AccountingStoragePort={self.dbd_port}",
                  # the munge socket of connections to slurmdbd (AuthInfo is not used for them)
                  f"AccountingStoragePass={self.munge_socket}"]
        with open(self.conf, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def _start_accounting(self, timeout):
        """MariaDB (own data directory, 127.0.0.1 at a free port), then slurmdbd on it, then the cluster."""
        data, sock = self._path("mysql"), self._path("run", "mysqld.sock")
        db_port = _h._free_port(self.dbd_port + 2)
        password = secrets.token_hex(12)
        self.run("mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
                 "--auth-root-authentication-method=socket", "--skip-test-db", "--basedir=/usr", timeout=120)
        self._mariadb = subprocess.Popen(  # noqa: S603 - a daemon of this harness; stopped by its pid file
            ["chroot", self.chroot, "bash", "-c",
             f"exec -a mariadbd {shlex.quote(self._daemon('mariadbd'))} --no-defaults --user=root "
             f"--basedir=/usr --lc-messages-dir=/usr/share/mariadb --datadir={shlex.quote(data)} "
             f"--socket={shlex.quote(sock)} --port={db_port} --bind-address=127.0.0.1 "
             f"--pid-file={shlex.quote(self._path('run', 'mariadbd.pid'))} "
             f"--log-error={shlex.quote(self._path('log', 'mariadbd.log'))}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _h.wait_for(lambda: os.path.exists(sock), timeout, "MariaDB's socket", interval=0.1)
        sql = (f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        self.run("mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql)
        dbd_conf = self._path("slurmdbd.conf")  # beside slurm.conf: slurmdbd looks there (SLURM_CONF)
        lines = [f"DbdHost={self.hostname}", f"DbdPort={self.dbd_port}", "SlurmUser=root",
                 "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
                 f"PidFile={self._path('run', 'slurmdbd.pid')}", f"LogFile={self._path('log', 'slurmdbd.log')}",
                 "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={db_port}",
                 "StorageUser=slurm", f"StoragePass={password}", "StorageLoc=slurm_acct_db"]
        with open(os.open(dbd_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        try:
            self._start_slurmdbd(timeout)
        except _DebianLibmariadb:
            # Debian 13's libmariadb3 (1:11.8.9+ds-0+deb13u1) fails slurmdbd's
            # first query; Debian 12's client library (same soname) works
            lib = _host_libmariadb()
            if lib is None:
                raise RuntimeError("slurmdbd 24.11 fails with the chroot's libmariadb3 (error 5027 on its "
                                   "first query) and this host has no libmariadb.so.3 to run it with") from None
            os.makedirs(self._path("lib"), exist_ok=True)
            _h.shutil.copy2(lib, self._path("lib", "libmariadb.so.3"))
            if os.path.exists(self._path("run", "slurmdbd.pid")):
                os.unlink(self._path("run", "slurmdbd.pid"))
            self.dbd_library = lib
            self._start_slurmdbd(timeout, library_path=self._path("lib"))
        self.run("sacctmgr", "-i", "add", "cluster", "vcstest")

    def _start_slurmdbd(self, timeout, library_path=None):
        env = f"LD_LIBRARY_PATH={shlex.quote(library_path)} " if library_path else ""
        self.run("bash", "-c", f"{env}exec -a slurmdbd {shlex.quote(self._daemon('slurmdbd'))}")

        def dbd_up():
            pid = _h._read_pid(self._path("run", "slurmdbd.pid"))
            if pid and not _h._pid_alive(pid):
                log = self.log_tail("slurmdbd.log", lines=8)
                if "mysql_query failed: 5027" in log and library_path is None:
                    raise _DebianLibmariadb(log)
                raise RuntimeError(f"slurmdbd exited: {log}")
            return self.run("sacctmgr", "-n", "show", "cluster", check=False, timeout=15).returncode == 0

        _h.wait_for(dbd_up, timeout, "slurmdbd to answer sacctmgr", interval=0.2)

    def sacctmgr(self, *args):
        """``sacctmgr -nP ARGS`` of this cluster's slurmdbd; list of rows (fields split on ``|``)."""
        out = self.run("sacctmgr", "-n", "-P", *args).stdout
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def _write_hosts(self):
        lines = ["127.0.0.1 localhost", f"{self.address} {self.hostname}"]
        lines += [f"{n.address} {n.name}" for n in self.nodes.values()]
        with open(self._path("hosts"), "w", encoding="utf-8") as fh:  # same inode: the bind mount sees it
            fh.write("\n".join(lines) + "\n")

    def _make_netns(self, name):
        node = super()._make_netns(name)
        self._write_hosts()
        return node

    def _daemon(self, name):
        """A renamed copy of the chroot's daemon ``name``, at a path valid inside the chroot."""
        copy = self._path("bin", _h.DAEMON_PREFIX + name)
        if not os.path.exists(copy):
            _h.shutil.copy2(resolve_in(self.chroot, f"/usr/sbin/{name}"), copy)
        return copy

    def run(self, *cmd, check=True, timeout=60):
        return _h._run(["chroot", self.chroot, *cmd], check=check, env=self.env, timeout=timeout)

    def _start_slurmctld(self, timeout):
        self.run("bash", "-c", f"exec -a slurmctld {shlex.quote(self._daemon('slurmctld'))} -f {shlex.quote(self.conf)}")

        def up():
            pid = _h._read_pid(self._path("run", "slurmctld.pid"))
            if pid and not _h._pid_alive(pid):
                raise RuntimeError(f"slurmctld exited: {self.log_tail('slurmctld.log')}")
            return "is UP" in self.run("scontrol", "ping", check=False, timeout=15).stdout

        _h.wait_for(up, timeout, "slurmctld to answer scontrol ping", interval=0.2)

    def start_slurmd(self, name, args=None, booted_now=False):
        """Start ``name``'s slurmd in its namespace.

        ``booted_now``: in a time namespace whose CLOCK_BOOTTIME starts at
        zero, so slurmd reports a boot time of now (what a powered-up VM
        reports). slurmctld ignores a POWERING_UP node's registrations while
        the node's boot time is older than the power-up request
        (``waiting_for_node_boot``), and a namespace otherwise reports the
        host's uptime.
        """
        node = self.nodes[name]
        if args is not None:
            node.args = list(args)
        clock = []
        if booted_now:
            with open("/proc/uptime", encoding="ascii") as fh:
                clock = ["--time", f"--boottime=-{int(float(fh.read().split()[0]))}"]
        run = self._inside("run")
        inner = (f"mount -t tmpfs tmpfs {run} && mkdir {run}/munge && "
                 f"mount --bind {shlex.quote(self.munge_dir)} {run}/munge && "
                 f"hostname {shlex.quote(name)} && exec chroot {shlex.quote(self.chroot)} "
                 f"bash -c {shlex.quote('exec -a slurmd ' + shlex.join(node.args))}")
        proc = _h._run(["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--mount", "--uts", *clock,
                        "--propagation", "private", "sh", "-c", inner], check=False, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(f"slurmd {name} did not start: {(proc.stderr or '').strip()[-300:]}"
                               f" log: {self.log_tail(f'slurmd-{name}.log')}")

    def node_state(self, name):
        proc = self.run("scontrol", "-F", "show", "-o", "node", name, check=False)
        match = _h._STATE_RE.search(proc.stdout) if proc.returncode == 0 else None
        if not match:
            return []
        words = []
        for word in match.group(1).split("+"):
            words += [word.rstrip("*"), "NOT_RESPONDING"] if word.endswith("*") else [word]
        return words

    def sbatch(self, wrap=None, script=None, name=None, nodelist=None, partition=None,
               constraint=None, cpus=None, mem=None, hold=False, extra=()):
        cmd = ["sbatch", "--parsable", f"--chdir={self._path('jobs')}",
               f"--output={self._path('jobs', 'slurm-%j.out')}"]
        for flag, value in (("--job-name", name), ("--nodelist", nodelist), ("--partition", partition),
                            ("--constraint", constraint), ("--cpus-per-task", cpus), ("--mem", mem)):
            if value is not None:
                cmd.append(f"{flag}={value}")
        if hold:
            cmd.append("--hold")
        cmd += list(extra)
        if (wrap is None) == (script is None):
            raise ValueError("sbatch needs exactly one of wrap= and script=")
        if wrap is not None:
            cmd += ["--wrap", wrap]
        proc = subprocess.run(["chroot", self.chroot, *cmd], input=script, capture_output=True,
                              text=True, env=self.env, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed: {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def squeue(self):
        return _h.json.loads(self.run("squeue", "--json").stdout)

    def sinfo(self):
        return _h.json.loads(self.run("sinfo", "--json").stdout)
