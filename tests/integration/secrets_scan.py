"""Search everything a vcluster stack produced for secret *values*.

Used by tests/integration/test_secrets.py (LXD) and
tests/integration/openstack/test_secrets_openstack.py (Nova). A secret is
searched by its value, never by a field name: the base64 lines of a PEM
private key, windows of the munge key's base64 text and of its raw bytes,
the cloud password itself, the Slurm accounting database password. Where a secret may legitimately be (a node's own
key file, the munge key in a cluster node's pillar) the test says so.

Places searched (:class:`Watch`):

* the master event bus: a subscriber of its own (Salt's event client on the
  master's ``sock_dir``), every event from the start of the watch;
* the master job cache: ``jobs.list_jobs`` and ``jobs.lookup_jid`` of every
  job since the start (through Salt's runner client, as ``salt-run`` would),
  and the raw files under the cache's ``jobs`` directory;
* logs: the master's (runners run in salt-run processes that log there),
  the controller minion's, the nodes' minion logs (pulled before a node
  goes), slurmctld's, slurmdbd's, and the Slurm event spool;
* every runner return the test got (stdout, stderr, data).
"""

import base64
import os
import pathlib
import subprocess
import threading
import time

import salt.config
import salt.runner
import salt.utils.event

#: Where a node's minion keeps its private key (vcluster.bootstrap).
PEM = "/etc/salt/pki/minion/minion.pem"
#: Names of the test stacks' pools (tests/integration/stack.py).
PREFIXES = ("tnode", "tbad")

#: Characters of a text secret's windows (a leak cut short by a log line still shows).
WINDOW = 24


class Secrets:
    """Secret values by label, and the needles that find them."""

    def __init__(self):
        self.text = {}  # label -> [str]
        self.raw = {}  # label -> [bytes]

    def add_pem(self, label, pem):
        """A private key: each full base64 line of its body (64 characters)."""
        lines = [ln.strip() for ln in pem.splitlines() if ln.strip() and not ln.startswith("-----")]
        needles = [ln for ln in lines if len(ln) >= 40]
        assert needles, f"{label}: not a PEM key"
        self.text[label] = needles
        self.raw[label] = [n.encode() for n in needles]

    def add_value(self, label, value):
        """A text secret (password, base64 key): the whole value and every window of it."""
        assert len(value) >= 8, f"{label}: too short to search for"
        needles = {value}
        if len(value) > WINDOW:
            needles.update(value[i:i + WINDOW] for i in range(0, len(value) - WINDOW + 1, WINDOW))
        self.text[label] = sorted(needles)
        self.raw[label] = [n.encode() for n in sorted(needles)]

    def add_bytes(self, label, raw):
        """Binary secret (the munge key file): its base64 text and raw windows of it."""
        self.add_value(label + " (base64)", base64.b64encode(raw).decode())
        self.raw[label + " (raw)"] = [raw[i:i + WINDOW] for i in range(0, len(raw) - WINDOW + 1, WINDOW)]

    def labels(self):
        return sorted(set(self.text) | set(self.raw))

    def found_in(self, text, ignore=()):
        """Labels whose value occurs in ``text`` (str or bytes)."""
        hits = []
        if isinstance(text, bytes):
            for label, needles in self.raw.items():
                if label not in ignore and any(n in text for n in needles):
                    hits.append(label)
            text = text.decode("utf-8", errors="replace")
        for label, needles in self.text.items():
            if label not in ignore and label not in hits and any(n in text for n in needles):
                hits.append(label)
        return hits


class KeyCollector:
    """Pulls each node container's private key once LXD holds it (every incarnation of a name)."""

    def __init__(self, secrets):
        self.secrets = secrets
        self.pems = {}  # name -> [pem, ...] (one per incarnation)
        self._seen = set()  # names pulled in their current incarnation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="key-collector", daemon=True)
        self.lock = threading.Lock()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        while not self._stop.wait(0.5):
            out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True,
                                 check=False).stdout.split()
            names = {n for n in out if n.startswith(PREFIXES)}
            with self.lock:
                self._seen &= names  # a name gone: its next incarnation is pulled again
            for name in sorted(names - self._seen):
                self.pull(name)

    def pull(self, name):
        """The private key in ``name``'s current container, or None before LXD holds it.

        Kept once per incarnation of the name, even when it is the same key
        as before (which the test then sees and refuses).
        """
        with self.lock:
            if name in self._seen:
                return self.pems[name][-1]
        proc = subprocess.run(["lxc", "file", "pull", f"{name}{PEM}", "-"], capture_output=True, text=True,
                              check=False, timeout=60)
        if proc.returncode != 0 or "PRIVATE KEY" not in proc.stdout:
            return None  # not pushed yet
        with self.lock:
            if name not in self._seen:
                self._seen.add(name)
                known = self.pems.setdefault(name, [])
                known.append(proc.stdout)
                if known.count(proc.stdout) == 1:
                    self.secrets.add_pem(f"private key of {name} #{len(known)}", proc.stdout)
            return self.pems[name][-1]


class BusRecorder:
    """A subscriber of the master event bus that keeps every event (tag, repr of data)."""

    def __init__(self, opts):
        self.opts = opts
        self.events = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-recorder", daemon=True)

    def start(self):
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("could not subscribe to the master event bus")
        return self

    def _run(self):
        with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True) as bus:
            bus.subscribe("")  # every tag
            bus.connect_pub(timeout=10)
            self._ready.set()
            while not self._stop.is_set():
                ev = bus.get_event(wait=0.5, full=True, no_block=False)
                if ev:
                    self.events.append((ev.get("tag"), repr(ev.get("data"))))

    def stop(self):
        self._stop.set()
        self._thread.join(10)


class Watch:
    """Everything a stack produced from now on, searched for :class:`Secrets`."""

    def __init__(self, master, secrets):
        self.master = master  # a salt-factories master daemon
        self.opts = salt.config.master_config(master.config_file)
        self.secrets = secrets
        self.returns = []  # (what, text)
        self.node_logs = {}  # node -> bytes
        self.bus = BusRecorder(self.opts)
        self.first_jid = None

    def start(self):
        import salt.utils.jid

        self.first_jid = salt.utils.jid.gen_jid(self.opts)
        self.bus.start()
        return self

    def stop(self):
        self.bus.stop()

    def record(self, what, cli_ret):
        """Keep one runner return (a salt-factories CLI result) for the search."""
        self.returns.append((what, f"{cli_ret.stdout}\n{cli_ret.stderr}\n{cli_ret.data!r}"))
        return cli_ret

    def pull_node_log(self, name):
        """Keep a node's minion log before the node goes."""
        proc = subprocess.run(["lxc", "file", "pull", f"{name}/var/log/salt/minion", "-"],
                              capture_output=True, check=False, timeout=60)
        if proc.returncode == 0:
            self.node_logs[name] = self.node_logs.get(name, b"") + proc.stdout

    # -- the places searched ------------------------------------------------

    def jobs(self):
        """``{jid: (list_jobs entry, lookup_jid return)}`` of every job since :meth:`start`."""
        started = time.monotonic()
        runner = salt.runner.RunnerClient(self.opts)
        listing = runner.cmd("jobs.list_jobs", [], print_event=False, full_return=False) or {}
        out = {}
        for jid, entry in sorted(listing.items()):
            if str(jid) < self.first_jid:
                continue
            ret = runner.cmd("jobs.lookup_jid", [jid], {"missing": True}, print_event=False)
            out[jid] = (entry, ret)
        print(f"job cache: {len(out)} of {len(listing)} jobs looked up in {time.monotonic() - started:.1f} s")
        return out

    def places(self, extra_files=()):
        """``[(where, text-or-bytes)]``: every place this watch searches."""
        out = [(f"event {tag}", data) for tag, data in self.bus.events]
        for jid, (entry, ret) in self.jobs().items():
            out.append((f"job cache {jid} ({entry.get('Function')}) listing", repr(entry)))
            out.append((f"job cache {jid} ({entry.get('Function')}) return", repr(ret)))
        jobs_dir = pathlib.Path(self.opts["cachedir"], "jobs")
        for path in sorted(jobs_dir.rglob("*")) if jobs_dir.is_dir() else ():
            if path.is_file():
                out.append((f"job cache file {path}", path.read_bytes()))
        files = [self.opts["log_file"], *extra_files]
        for path in files:
            path = pathlib.Path(path)
            if path.is_dir():
                out.extend((f"file {p}", p.read_bytes()) for p in sorted(path.rglob("*")) if p.is_file())
            elif path.is_file():
                out.append((f"file {path}", path.read_bytes()))
        out.extend((f"minion log of {name}", text) for name, text in self.node_logs.items())
        out.extend((f"runner return of {what}", text) for what, text in self.returns)
        return out

    def leaks(self, extra_files=(), ignore=()):
        """``{where: [secret labels]}`` for every place that holds a secret value."""
        found = {}
        for where, text in self.places(extra_files):
            hits = self.secrets.found_in(text, ignore=ignore)
            if hits:
                found[where] = hits
        return found


def mode(path):
    return os.stat(path).st_mode & 0o7777
