"""A real, throwaway Slurm 22.05 controller with dynamic nodes, for tests.

:class:`SlurmHarness` starts its own ``munged`` (own key, own socket) and its
own ``slurmctld`` (own ``slurm.conf``, ports, state directory), all under one
short temporary directory, so it never touches a production controller on the
same machine. Compute nodes are real ``slurmd -Z`` daemons in configless mode,
each in a network namespace of its own, wired with a veth pair to a bridge the
harness creates. Everything it starts it stops again in :meth:`stop`.

Measured on Debian 12 (Slurm 22.05.8), and why the node launcher looks as it
does:

* ``slurmd`` has to be entered with ``nsenter --net`` (``ip netns exec``
  remounts /sys and slurmd then fails to load its cgroup plugin).
* Before it has fetched its configuration, a configless ``slurmd`` talks to
  munge on the compiled-in socket ``/run/munge/munge.socket.2``, and once
  configured it writes ``/run/slurm/conf``. Each slurmd therefore runs in a
  private mount namespace with a tmpfs on ``/run`` and the harness's munge
  directory bound on ``/run/munge``: the host's ``/run`` is left alone.
* Each slurmd also gets its own UTS namespace, so ``hostname`` in a job is
  the node's name, as on a real node.
* ``SlurmdSpoolDir``, ``SlurmdPidFile`` and ``SlurmdLogFile`` use ``%n`` so
  several slurmd share one configuration.
"""

import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from vcluster.slurm.parse import jobs_from_squeue_json

#: Programs the harness needs; missing ones make :func:`unavailable` say so.
REQUIRED = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch",
            "scancel", "nsenter", "unshare", "ip")

#: Where the harness picks its bridge subnet (a free /24 inside it).
SUBNET_POOL = ipaddress.ip_network("10.231.0.0/16")

#: Prefix of every directory, bridge, veth and namespace the harness creates.
PREFIX = "vcsh"

_STATE_RE = re.compile(r"\bState=(\S+)")


def unavailable():
    """Why a harness cannot run here (a sentence), or None when it can."""
    if os.geteuid() != 0:
        return "the Slurm harness needs root (network namespaces, slurmd)"
    missing = [p for p in REQUIRED if shutil.which(p) is None]
    if missing:
        return f"the Slurm harness needs {', '.join(missing)} on PATH"
    return None


def wait_for(predicate, timeout, what, interval=0.1):
    """Poll ``predicate`` until it returns a truthy value before ``timeout`` seconds.

    Returns that value; raises TimeoutError naming ``what`` at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pids(pids, timeout=10.0):
    """SIGTERM ``pids``, then SIGKILL those still alive at the deadline."""
    pids = [p for p in pids if _pid_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        wait_for(lambda: not any(_pid_alive(p) and not _zombie(p) for p in pids), timeout, "processes to exit")
    except TimeoutError:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            wait_for(lambda: not any(_pid_alive(p) and not _zombie(p) for p in pids), 5, "killed processes")
        except TimeoutError:
            pass


#: Harness daemons run as renamed copies (see SlurmHarness._daemon).
DAEMON_PREFIX = "vcsh-"


def _comm(pid):
    """Command name of ``pid`` ('' when gone): pid files may outlive their process."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _run(cmd, check=True, env=None, timeout=60):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"{shlex.join(cmd)} failed: {msg[-1] if msg else proc.returncode}")
    return proc


def _free_port(start):
    for port in range(start, start + 200, 2):
        if all(_port_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError(f"no two free TCP ports found from {start}")


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _used_networks():
    nets = []
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if route.get("type") == "unreachable":
            continue  # our own fail-safe routes (see start()): not in use
        if dst and dst != "default" and not dst.startswith(("local", "broadcast")):
            try:
                nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
            except ValueError:
                pass
    return nets


def _free_subnet():
    used = _used_networks()
    subnets = list(SUBNET_POOL.subnets(new_prefix=24))
    start = secrets.randbelow(len(subnets))
    for net in subnets[start:] + subnets[:start]:
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError(f"no free /24 left in {SUBNET_POOL}")


@dataclasses.dataclass
class HarnessNode:
    """One dynamic node the harness started: its namespace, veth and address."""

    name: str
    netns: str
    veth: str
    address: str
    args: list


def private_daemon(bin_dir, name):
    """A private, renamed copy of daemon ``name`` in ``bin_dir``.

    Debian's init scripts decide "already running" by executable
    (``start-stop-daemon --exec``) and by process name (``pgrep -x``):
    with a harness daemon of the same binary or name around, the host's
    munged, slurmctld or slurmd would silently not start, or fail to
    restart. The copy differs in both.
    """
    copy = os.path.join(bin_dir, DAEMON_PREFIX + name)
    if not os.path.exists(copy):
        os.makedirs(bin_dir, exist_ok=True)
        shutil.copy2(shutil.which(name), copy)
    return copy


class PrivateMunged:
    """A munged of its own (key, socket, pid, seed, log) under ``directory``.

    Point Slurm at it with ``AuthInfo=socket=<socket>``; the host's
    /run/munge is never used, so a test does not depend on the host's munged
    running, and never disturbs it.
    """

    def __init__(self, directory):
        self.directory = directory

    @property
    def socket(self):
        return os.path.join(self.directory, "munge.socket.2")

    @property
    def pidfile(self):
        return os.path.join(self.directory, "munged.pid")

    def start(self, timeout=30):
        """Write a fresh key, start munged, return self once its socket exists."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        key = os.path.join(self.directory, "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as fh:
            fh.write(os.urandom(1024))
        _run([private_daemon(os.path.join(self.directory, "bin"), "munged"), "--force",
              f"--socket={self.socket}", f"--key-file={key}", f"--pid-file={self.pidfile}",
              f"--log-file={os.path.join(self.directory, 'munged.log')}",
              f"--seed-file={os.path.join(self.directory, 'munged.seed')}"])
        wait_for(lambda: os.path.exists(self.socket), timeout, "munged's socket")
        return self

    def stop(self):
        """Stop this munged (only if the pid file still names it)."""
        pid = _read_pid(self.pidfile)
        if pid and _comm(pid) == DAEMON_PREFIX + "munged":
            _kill_pids([pid])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _read_pid(path):
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


class SlurmHarness:
    """Own munged + slurmctld + dynamic ``slurmd -Z`` nodes in network namespaces.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with SlurmHarness() as h:
            h.add_node("vn1", cpus=1, memory=500, features=["virtual"])
            job = h.sbatch(wrap="sleep 60", nodelist="vn1")
    """

    def __init__(self, max_nodes=32, slurmd_timeout=30, partitions=None, extra_conf=()):
        self.max_nodes = max_nodes
        self.slurmd_timeout = slurmd_timeout
        #: ``{name: "PartitionName=... rest"}``; default one partition "batch" on all nodes.
        self.partitions = partitions if partitions is not None else {
            "batch": "Nodes=ALL Default=YES MaxTime=INFINITE State=UP"}
        self.extra_conf = list(extra_conf)
        self.token = secrets.token_hex(3)
        self.root = None
        self.subnet = None
        self.address = None
        self.bridge = f"{PREFIX}{self.token}"
        self.port = None
        self.hostname = socket.gethostname()
        self.nodes = {}
        self._veth_index = 0
        self._host_index = 9

    # -- paths ---------------------------------------------------------------

    @property
    def conf(self):
        """Path of this controller's slurm.conf (use as SLURM_CONF)."""
        return os.path.join(self.root, "slurm.conf")

    @property
    def munge_dir(self):
        return os.path.join(self.root, "munge")

    @property
    def munge_socket(self):
        return PrivateMunged(self.munge_dir).socket

    @property
    def env(self):
        """Environment for Slurm client commands aimed at this controller."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SQUEUE_", "SINFO_", "SBATCH_"))}
        env["SLURM_CONF"] = self.conf
        return env

    @property
    def conf_server(self):
        """``host:port`` a slurmd passes as ``--conf-server``."""
        return f"{self.address}:{self.port}"

    def _daemon(self, name):
        return private_daemon(self._path("bin"), name)

    def _path(self, *parts):
        return os.path.join(self.root, *parts)

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=30):
        """Create the bridge, start munged and slurmctld; return self when it answers."""
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.root = tempfile.mkdtemp(prefix=f"{PREFIX}{self.token}-", dir="/tmp")
        os.chmod(self.root, 0o755)
        for sub in ("munge", "state", "spool", "log", "run", "jobs"):
            os.makedirs(self._path(sub), mode=0o755, exist_ok=True)
        self._save_record()
        try:
            self._start_bridge()
            PrivateMunged(self.munge_dir).start(timeout)
            self._write_conf()
            self._start_slurmctld(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop every daemon and job, delete namespaces, veths, bridge and files."""
        for name in list(self.nodes):
            self._teardown_node(name)
        if self.root:
            pid = _read_pid(self._path("run", "slurmctld.pid"))
            if pid and _comm(pid) == DAEMON_PREFIX + "slurmctld":
                _kill_pids([pid])
            PrivateMunged(self.munge_dir).stop()
        _run(["ip", "link", "del", self.bridge], check=False)
        if self.root and not os.environ.get("VCLUSTER_KEEP_SLURM_HARNESS"):
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.root:
            with contextlib.suppress(OSError):
                os.unlink(self._path("harness.json"))

    @classmethod
    def purge_stale(cls):
        """Tear down what harnesses of dead processes left behind (daemons, netns, bridge)."""
        for entry in os.listdir("/tmp"):
            record = os.path.join("/tmp", entry, "harness.json")
            if not entry.startswith(PREFIX) or not os.path.isfile(record):
                continue
            with open(record, encoding="utf-8") as fh:
                data = json.load(fh)
            if _pid_alive(data["owner"]):
                continue
            stale = cls.__new__(cls)
            stale.root = os.path.join("/tmp", entry)
            stale.bridge = data["bridge"]
            stale.nodes = {n["name"]: HarnessNode(**n) for n in data["nodes"]}
            stale.stop()

    def _save_record(self):
        data = {"owner": os.getpid(), "bridge": self.bridge,
                "nodes": [dataclasses.asdict(n) for n in self.nodes.values()]}
        with open(self._path("harness.json"), "w", encoding="utf-8") as fh:
            json.dump(data, fh)

    def _start_bridge(self):
        self.subnet = _free_subnet()
        self.address = str(self.subnet.network_address + 1)
        # Fail-safe: traffic to this subnet never leaves by the default
        # route, even after the bridge is gone (the bridge's route wins).
        _run(["ip", "route", "replace", "unreachable", str(self.subnet), "metric", "4000"])
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.address}/{self.subnet.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _write_conf(self):
        self.port = _free_port(6917)
        lines = [
            "ClusterName=vcstest",
            f"SlurmctldHost={self.hostname}({self.address})",
            f"SlurmctldPort={self.port}",
            f"SlurmdPort={self.port + 1}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={self._path('state')}",
            f"SlurmdSpoolDir={self._path('spool', '%n')}",
            f"SlurmctldPidFile={self._path('run', 'slurmctld.pid')}",
            f"SlurmdPidFile={self._path('run', 'slurmd-%n.pid')}",
            f"SlurmctldLogFile={self._path('log', 'slurmctld.log')}",
            f"SlurmdLogFile={self._path('log', 'slurmd-%n.log')}",
            "SlurmctldParameters=enable_configless",
            f"MaxNodeCount={self.max_nodes}",
            "TreeWidth=65533",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SlurmctldTimeout=10",
            f"SlurmdTimeout={self.slurmd_timeout}",
            "MessageTimeout=5",
            "InactiveLimit=0",
            "MinJobAge=60",
            "KillWait=2",
            "ReturnToService=2",
            *self.extra_conf,
        ]
        lines += [f"PartitionName={name} {rest}" for name, rest in self.partitions.items()]
        with open(self.conf, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def _start_slurmctld(self, timeout):
        _run([self._daemon("slurmctld"), "-f", self.conf], env=self.env)

        def up():
            pid = _read_pid(self._path("run", "slurmctld.pid"))
            if pid and not _pid_alive(pid):
                raise RuntimeError(f"slurmctld exited: {self.log_tail('slurmctld.log')}")
            proc = _run(["scontrol", "ping"], check=False, env=self.env, timeout=15)
            return "is UP" in proc.stdout

        wait_for(up, timeout, "slurmctld to answer scontrol ping", interval=0.2)

    def restart_slurmctld(self, timeout=30):
        """Stop slurmctld and start it again on the same state (StateSaveLocation kept)."""
        pid = _read_pid(self._path("run", "slurmctld.pid"))
        if pid:
            _kill_pids([pid], timeout)
        self._start_slurmctld(timeout)

    def log_tail(self, name, lines=5):
        """Last ``lines`` lines of a log under the harness's log directory."""
        try:
            with open(self._path("log", name), encoding="utf-8", errors="replace") as fh:
                return " | ".join(line.strip() for line in fh.readlines()[-lines:])
        except OSError:
            return f"(no {name})"

    # -- nodes ---------------------------------------------------------------

    def node_conf(self, cpus=1, memory=500, features=(), gres=None):
        """The ``--conf`` string of ``slurmd -Z`` for these resources."""
        parts = [f"CPUs={cpus}", f"RealMemory={memory}"]
        if features:
            parts.append("Feature=" + ",".join(features))
        if gres:
            parts.append(f"Gres={gres}")
        return " ".join(parts)

    def add_node(self, name, cpus=1, memory=500, features=(), gres=None, conf=None,
                 wait_idle=True, timeout=120):
        """Start ``slurmd -Z`` for ``name`` in a new namespace; wait until Slurm shows it idle.

        ``conf=False`` starts slurmd without ``--conf`` (for a node made
        beforehand with ``scontrol create ... State=FUTURE``). Returns the
        :class:`HarnessNode`; its ``address`` is the node's NodeAddr.
        """
        if conf is None:
            conf = self.node_conf(cpus, memory, features, gres)
        node = self._make_netns(name)
        args = [self._daemon("slurmd"), "-Z", "-N", name, "--conf-server", self.conf_server]
        if conf:
            args += ["--conf", conf]
        node.args = args
        self._save_record()
        self.start_slurmd(name)
        if wait_idle:
            self.wait_node(name, ("IDLE",), timeout)
        return node

    def reserve_address(self, name):
        """Create ``name``'s namespace now and return its address (for ``NodeAddr=``)."""
        return self._make_netns(name).address

    def _make_netns(self, name):
        if name in self.nodes:
            return self.nodes[name]
        self._veth_index += 1
        self._host_index += 1
        node = HarnessNode(name=name, netns=f"{PREFIX}{self.token}-{name}",
                           veth=f"{PREFIX}{self.token}v{self._veth_index}",
                           address=str(self.subnet.network_address + self._host_index), args=[])
        self.nodes[name] = node
        self._save_record()
        ns = node.netns
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "link", "set", node.veth, "master", self.bridge, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{node.address}/{self.subnet.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return node

    def start_slurmd(self, name, args=None):
        """(Re)start slurmd of ``name`` in its namespace with its saved or given arguments."""
        node = self.nodes[name]
        if args is not None:
            node.args = list(args)
        inner = (f"mount -t tmpfs tmpfs /run && mkdir /run/munge && "
                 f"mount --bind {shlex.quote(self.munge_dir)} /run/munge && "
                 f"hostname {shlex.quote(name)} && exec {shlex.join(node.args)}")
        proc = _run(["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--mount", "--uts",
                     "--propagation", "private", "sh", "-c", inner], check=False, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(f"slurmd {name} did not start: {(proc.stderr or '').strip()[-300:]}"
                               f" log: {self.log_tail(f'slurmd-{name}.log')}")

    def stop_slurmd(self, name, timeout=10.0):
        """Kill every process in ``name``'s namespace (slurmd, stepd, jobs); Slurm still lists the node."""
        node = self.nodes[name]
        proc = _run(["ip", "netns", "pids", node.netns], check=False)
        _kill_pids([int(p) for p in proc.stdout.split()], timeout)

    def remove_node(self, name, delete=True, timeout=30):
        """Cancel ``name``'s jobs, stop its processes and namespace, and (``delete``) the Slurm node."""
        if delete:
            self.cancel_all(timeout, nodes=[name])
        self._teardown_node(name)
        if delete:
            self.scontrol("delete", f"nodename={name}", check=False)

    def _teardown_node(self, name):
        node = self.nodes.get(name)
        if node is None:
            return
        if os.path.exists(f"/run/netns/{node.netns}"):
            self.stop_slurmd(name)
        _run(["ip", "link", "del", node.veth], check=False)
        _run(["ip", "netns", "del", node.netns], check=False)
        del self.nodes[name]
        if self.root and os.path.isdir(self.root):
            self._save_record()

    def node_state(self, name):
        """Words of ``name``'s State (``['IDLE', 'DRAIN']``), [] when Slurm does not know it."""
        proc = _run(["scontrol", "-F", "show", "-o", "node", name], check=False, env=self.env)
        match = _STATE_RE.search(proc.stdout) if proc.returncode == 0 else None
        if not match:
            return []
        words = []
        for word in match.group(1).split("+"):
            if word.endswith("*"):
                words += [word.rstrip("*"), "NOT_RESPONDING"]
            else:
                words.append(word)
        return words

    def wait_node(self, name, states, timeout=120):
        """Wait until ``name``'s State holds every word in ``states``; return its words."""
        wanted = set(states)
        return wait_for(lambda: (s := self.node_state(name)) and wanted <= set(s) and s,
                        timeout, f"node {name} to be {'+'.join(states)}")

    # -- clients -------------------------------------------------------------

    def run(self, *cmd, check=True, timeout=60):
        """Run a Slurm client command against this controller; CompletedProcess."""
        return _run(list(cmd), check=check, env=self.env, timeout=timeout)

    def scontrol(self, *args, check=True):
        """``scontrol ARGS`` against this controller; its stdout."""
        return self.run("scontrol", *args, check=check).stdout

    def sbatch(self, wrap=None, script=None, name=None, nodelist=None, partition=None,
               constraint=None, cpus=None, mem=None, hold=False, extra=()):
        """Submit a batch job; return its id (int). Output goes to the harness's jobs dir."""
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
        proc = subprocess.run(cmd, input=script, capture_output=True, text=True, env=self.env,
                              timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed: {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def squeue(self):
        """``squeue --json`` of this controller, parsed."""
        return json.loads(self.run("squeue", "--json").stdout)

    def sinfo(self):
        """``sinfo --json`` of this controller, parsed."""
        return json.loads(self.run("sinfo", "--json").stdout)

    def job_state(self, job_id):
        """JobState of ``job_id`` from ``scontrol show -o job`` ('' when unknown)."""
        proc = self.run("scontrol", "show", "-o", "job", str(job_id), check=False)
        match = re.search(r"\bJobState=(\S+)", proc.stdout)
        return match.group(1) if match else ""

    def wait_job(self, job_id, states, timeout=120):
        """Wait until ``job_id``'s JobState is one of ``states``; return it."""
        return wait_for(lambda: (s := self.job_state(job_id)) in states and s, timeout,
                        f"job {job_id} to be {'|'.join(states)}")

    #: Job states (``Job.state``, one word as scontrol shows it) of a job not yet over.
    LIVE_JOB_STATES = frozenset({"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED"})

    def cancel_all(self, timeout=30, nodes=None):
        """Cancel every job (or those on ``nodes``); wait until none of them is alive.

        Reads ``squeue --json`` with the product's version-aware parser
        (``job_state`` is one word on 22.05 and a list from 23.11 on).
        """
        if nodes:
            self.run("scancel", "--nodelist=" + ",".join(nodes), check=False)
        else:
            self.run("scancel", "--user=root", check=False)
        left = []

        def done():
            left[:] = [f"{j.id}:{j.state}" for j in jobs_from_squeue_json(self.run("squeue", "--json").stdout)
                       if j.state in self.LIVE_JOB_STATES and (not nodes or set(nodes) & set(j.nodes))]
            return not left

        try:
            wait_for(done, timeout, "jobs to end")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; still live: {', '.join(left)}") from None
