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
"""

import os
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


class ChrootSlurmHarness(_h.SlurmHarness):
    """:class:`SlurmHarness` whose Slurm binaries come from ``chroot``."""

    def __init__(self, chroot=DEFAULT_CHROOT, **kwargs):
        super().__init__(**kwargs)
        self.chroot = os.path.realpath(chroot)
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
            self._start_slurmctld(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
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

    def start_slurmd(self, name, args=None):
        node = self.nodes[name]
        if args is not None:
            node.args = list(args)
        run = self._inside("run")
        inner = (f"mount -t tmpfs tmpfs {run} && mkdir {run}/munge && "
                 f"mount --bind {shlex.quote(self.munge_dir)} {run}/munge && "
                 f"hostname {shlex.quote(name)} && exec chroot {shlex.quote(self.chroot)} "
                 f"bash -c {shlex.quote('exec -a slurmd ' + shlex.join(node.args))}")
        proc = _h._run(["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--mount", "--uts",
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
