"""A site of N virtual nodes for vcluster's real control-plane code, without daemons.

Real here: the registry (an SQLite file), policy, engine, reconcile,
autoscale, liveness, the master side of every Salt call
(:class:`vcluster.saltlink.ControllerSlurm`, ``LocalActions``,
``WheelKeys``) and the controller side of the Slurm calls
(``_modules/slurm.py`` loaded from this checkout, over
:class:`vcluster.slurm.client.Slurm` and its parsers).

Simulated, because a site of 10,000 nodes cannot run on one test machine:

* :class:`SlurmSim` stands for slurmctld and its commands. It keeps nodes
  and jobs and answers ``scontrol -F show -o node``, ``scontrol show -o
  job``, ``squeue --all --json``, ``sinfo --json`` and the updates vcluster
  sends, printing records built from the output captured from Slurm 22.05.8
  in ``tests/unit/data/slurm`` (same keys, same order, same JSON shape), so
  the real client and parsers read them. It counts every command.
* :class:`SaltSim` stands for Salt's transport: a local client whose
  ``cmd`` runs ``slurm.*`` functions in the real execution module, answers
  ``cmd.run_all`` of Slurm commands on the controller and ``pgrep`` probes
  of the minions, and a wheel client for keys. Every return goes through
  msgpack as Salt's does. It counts every call and every minion's return.
* :class:`SimProvider` implements :class:`vcluster.providers.base.Provider`
  with Nova's multi-create rule (one create call per ``max_batch``
  instances), counting calls by kind. :class:`NovaSim` is a compute API for
  the real :class:`~vcluster.providers.openstack.OpenStackProvider`.

Time spent making the simulated Slurm's output is summed in
:attr:`Site.sim_seconds`, so that a benchmark can take it out of
vcluster's own time. Nothing here sleeps.
"""

import collections
import contextlib
import copy
import importlib.util
import inspect
import ipaddress
import itertools
import json
import math
import os
import pathlib
import threading
import time
import types
import uuid

import msgpack
from salt.exceptions import CommandExecutionError

from vcluster import saltlink
from vcluster.context import Context
from vcluster.nodestates import WARM_REASON
from vcluster.policy import load
from vcluster.providers.base import Host, Instance, Provider, Status
from vcluster.registry import Registry
from vcluster.slurm import hostlist, parse

REPO = pathlib.Path(__file__).resolve().parents[2]
#: Output captured from Slurm 22.05.8 (the per-version directory when there is one).
DATA = next(p for p in (REPO / "tests/unit/data/slurm/22.05", REPO / "tests/unit/data/slurm")
            if (p / "scontrol_show_node.txt").exists())
CONTROLLER = "ctl"
CLUSTER = "sim"
PARTITION = "batch"


# -- Slurm -----------------------------------------------------------------------------


def _node_template():
    line = (DATA / "scontrol_show_node.txt").read_text().splitlines()[0]
    record = parse.parse_record(line)
    record.pop("Reason", None)
    return record


def _job_template():
    line = (DATA / "scontrol_show_job.txt").read_text().splitlines()[0]
    return parse.parse_record(line)


def _squeue_template():
    data = json.loads((DATA / "squeue.json").read_text())
    return data["meta"], data["jobs"][0]


def _sinfo_template():
    data = json.loads((DATA / "sinfo.json").read_text())
    return data["meta"], data["nodes"][0]


class SlurmSim:
    """slurmctld's nodes and jobs, answering the commands vcluster's client runs."""

    def __init__(self):
        self.nodes = {}  # name -> dict(state=[words], dynamic, reason, addr, cpus, partitions, features)
        self.jobs = {}  # id -> dict(state, nodes=[names], partition, reason, user, name)
        self.commands = collections.Counter()
        self.unsupported = []
        self.seconds = 0.0  # spent making output (Slurm's time, not vcluster's)
        self.cpu_seconds = 0.0  # of which this process's CPU time
        self._node_tpl = _node_template()
        self._job_tpl = _job_template()
        self._squeue_meta, self._squeue_job = _squeue_template()
        self._sinfo_meta, self._sinfo_node = _sinfo_template()
        self._version = 0
        self._cache = {}
        self._next_job = 1
        self.slurmd_port = 6818
        self.version = "22.05.8"  # the release the output templates were captured from

    # -- state -------------------------------------------------------------------------

    def changed(self):
        self._version += 1

    def add_node(self, name, state=("IDLE",), dynamic=True, addr=None, cpus=2, reason=""):
        self.nodes[name] = {"state": list(state), "dynamic": dynamic, "addr": addr or name, "cpus": cpus,
                            "reason": reason, "partitions": [PARTITION], "features": ["virtual"] if dynamic else []}
        self.changed()

    def add_job(self, state, nodes=(), partition=PARTITION, reason="None", user="alice"):
        job_id = self._next_job
        self._next_job += 1
        self.jobs[job_id] = {"state": state, "nodes": list(nodes), "partition": partition, "reason": reason,
                             "user": user, "name": f"job{job_id}"}
        for name in nodes:
            words = self.nodes[name]["state"]
            words[0] = "ALLOCATED"
        self.changed()
        return job_id

    # -- output --------------------------------------------------------------------------

    def _cached(self, key, make):
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self._version:
            return hit[1]
        text = make()
        self._cache[key] = (self._version, text)
        return text

    def _node_line(self, name):
        node = self.nodes[name]
        rec = dict(self._node_tpl)
        words = list(node["state"])
        if node["dynamic"]:
            words.append("DYNAMIC_NORM")
        busy = words[0] in ("ALLOCATED", "MIXED")
        rec.update({
            "NodeName": name, "NodeAddr": node["addr"], "NodeHostName": name, "State": "+".join(words),
            "CPUTot": str(node["cpus"]), "CPUEfctv": str(node["cpus"]),
            "CPUAlloc": str(node["cpus"] if busy else 0), "AllocMem": "100" if busy else "0",
            "AvailableFeatures": ",".join(node["features"]) or "(null)",
            "ActiveFeatures": ",".join(node["features"]) or "(null)",
            "Partitions": ",".join(node["partitions"]),
        })
        line = " ".join(f"{k}={v}" for k, v in rec.items())
        if node["reason"]:
            line += f" Reason={node['reason']} [root@2026-12-06T15:00:00]"
        return line

    def scontrol_nodes(self, names=None):
        if names is None:
            return self._cached("nodes", lambda: "\n".join(self._node_line(n) for n in sorted(self.nodes)) + "\n")
        return "\n".join(self._node_line(n) for n in names if n in self.nodes) + "\n"

    def _squeue_job_json(self, job_id, job):
        data = copy.deepcopy(self._squeue_job)
        nodes = hostlist.collect(job["nodes"]) if job["nodes"] else ""
        data.update({
            "job_id": job_id, "name": job["name"], "job_state": job["state"], "nodes": nodes,
            "batch_host": job["nodes"][0] if job["nodes"] else "", "required_nodes": "",
            "partition": job["partition"], "state_reason": job["reason"], "user_name": job["user"],
            "node_count": max(1, len(job["nodes"])), "comment": job.get("comment", ""),
        })
        if job["nodes"]:
            data["job_resources"] = dict(data["job_resources"], nodes=nodes,
                                         allocated_nodes=[dict(data["job_resources"]["allocated_nodes"][0],
                                                               nodename=n) for n in job["nodes"]])
        else:
            data["job_resources"] = {}
        return data

    def squeue_json(self):
        def make():
            jobs = [self._squeue_job_json(i, j) for i, j in sorted(self.jobs.items())]
            return json.dumps({"meta": self._squeue_meta, "errors": [], "jobs": jobs}, indent=2)

        return self._cached("squeue", make)

    def sinfo_json(self):
        def make():
            out = []
            for name in sorted(self.nodes):
                node = self.nodes[name]
                data = dict(self._sinfo_node)
                flags = ["DYNAMIC_NORM"] if node["dynamic"] else []
                data.update({"name": name, "hostname": name, "address": node["addr"],
                             "state": node["state"][0].lower(), "state_flags": flags + node["state"][1:],
                             "reason": node["reason"], "cpus": node["cpus"],
                             "partitions": list(node["partitions"])})
                out.append(data)
            return json.dumps({"meta": self._sinfo_meta, "errors": [], "nodes": out}, indent=2)

        return self._cached("sinfo", make)

    #: squeue --format codes the simulated squeue prints, from a job id and its record.
    FORMAT = {
        "A": lambda i, j: str(i), "i": lambda i, j: str(i), "T": lambda i, j: j["state"],
        "P": lambda i, j: j["partition"], "N": lambda i, j: hostlist.collect(j["nodes"]) if j["nodes"] else "",
        "F": lambda i, j: str(i), "K": lambda i, j: "N/A", "C": lambda i, j: "1",
        "D": lambda i, j: str(max(1, len(j["nodes"]))), "u": lambda i, j: j["user"],
        "Q": lambda i, j: "4294901759", "r": lambda i, j: j["reason"],
        "k": lambda i, j: j.get("comment") or "(null)", "j": lambda i, j: j["name"],
    }

    def squeue_text(self, argv):
        """``squeue --noheader --format=... [--nodelist=...]``: one line per job, as squeue prints them."""
        opts = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
        fmt = opts["format"]
        codes = []
        for piece in fmt.split("%")[1:]:
            code = piece.lstrip("0123456789.")[:1]
            if code not in self.FORMAT:
                return 1, "", f"squeue: error: format code %{code} is not simulated\n"
            codes.append((code, piece[piece.index(code) + 1:]))
        prefix = fmt.split("%")[0]
        jobs = sorted(self.jobs.items())
        if "nodelist" in opts:
            wanted = set(hostlist.expand(opts["nodelist"]))
            if wanted - set(self.nodes):
                return 1, "", "squeue: error: Invalid node name specified\n"
            jobs = [(i, j) for i, j in jobs if wanted & set(j["nodes"])]
        lines = [prefix + "".join(self.FORMAT[c](i, j) + rest for c, rest in codes) for i, j in jobs]
        return 0, "".join(line + "\n" for line in lines), ""

    def scontrol_job(self, job_id):
        job = self.jobs[job_id]
        rec = dict(self._job_tpl)
        nodes = hostlist.collect(job["nodes"]) if job["nodes"] else "(null)"
        rec.update({"JobId": str(job_id), "JobName": job["name"], "JobState": job["state"],
                    "Reason": job["reason"], "Partition": job["partition"], "NodeList": nodes,
                    "BatchHost": job["nodes"][0] if job["nodes"] else "(null)", "ReqNodeList": "(null)",
                    "UserId": f"{job['user']}(1000)"})
        return " ".join(f"{k}={v}" for k, v in rec.items()) + "\n"

    def show_config(self):
        """``scontrol show config`` as 22.05 prints it (the lines vcluster reads, and a few around them)."""
        return ("Configuration data as of 2026-12-06T15:00:00\n"
                f"SlurmctldPort           = 6817\nSlurmdPidFile           = /run/slurmd.pid\n"
                f"SlurmdPort              = {self.slurmd_port}\nSlurmdSpoolDir          = /var/lib/slurm/slurmd\n"
                "SlurmdTimeout           = 0 sec\nSLURM_VERSION           = 22.05.8\n")

    # -- commands ---------------------------------------------------------------------------

    def run(self, argv, env=None, timeout=None, stdin=None):
        """``(rc, stdout, stderr)`` of one Slurm command, as :func:`vcluster.slurm.client.subprocess_runner`."""
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return self._run([str(a) for a in argv])
        finally:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu

    def _run(self, argv):
        words = [a for a in argv[1:] if not a.startswith("-")]
        verb = " ".join([argv[0]] + [w for w in words[:2] if "=" not in w and not w[:1].isdigit()])
        if not words and "--version" in argv:
            verb += " --version"
        if argv[0] == "squeue" and any(a.startswith("--nodelist=") for a in argv):
            verb += " --nodelist"
        self.commands[verb] += 1
        if "--version" in argv[1:] or argv[1:] == ["-V"]:
            return 0, f"slurm {self.version}\n", ""
        if argv[0] == "squeue" and any(a.startswith("--format=") for a in argv):
            return self.squeue_text(argv)
        if argv[0] == "squeue":
            return 0, self.squeue_json(), ""
        if argv[0] == "sinfo":
            return 0, self.sinfo_json(), ""
        if argv[0] != "scontrol" or not words:
            return self._unsupported(argv)
        if words[:2] == ["show", "node"]:
            if len(words) > 2:
                names = [n for n in hostlist.expand(words[2]) if n in self.nodes]
                if not names:
                    return 1, "", f"Node {words[2]} not found\n"
                return 0, self.scontrol_nodes(names), ""
            return 0, self.scontrol_nodes(), ""
        if words[:1] == ["config"] or words[:2] == ["show", "config"]:
            return 0, self.show_config(), ""
        if words[:2] == ["show", "job"]:
            job_id = int(words[2].split("_")[0])
            if job_id not in self.jobs:
                return 1, "", "slurm_load_jobs error: Invalid job id specified\n"
            return 0, self.scontrol_job(job_id), ""
        args = dict(a.split("=", 1) for a in argv[2:] if "=" in a)
        args = {k.lower(): v for k, v in args.items()}
        if words[0] == "update" and "nodename" in args:
            return self._update_node(args)
        if words[0] == "delete" and "nodename" in args:
            name = args["nodename"]
            if name not in self.nodes:
                return 1, "", "scontrol: error: Invalid node name specified\n"
            del self.nodes[name]
            self.changed()
            return 0, "", ""
        if words[0] in ("requeue", "requeuehold"):
            job = self.jobs.get(int(words[1]))
            if job is None:
                return 1, "", "Invalid job id specified\n"
            for name in job["nodes"]:
                if name in self.nodes:
                    self.nodes[name]["state"][0] = "IDLE"
            job.update(state="PENDING", nodes=[], reason="BeginTime")
            self.changed()
            return 0, "", ""
        if words[0] == "create" and "nodename" in args:
            self.add_node(args["nodename"], state=(args.get("state", "FUTURE").upper(),), addr=args.get("nodeaddr"))
            return 0, "", ""
        if words[0] in ("suspend", "resume"):
            job = self.jobs.get(int(words[1]))
            if job is None:
                return 1, "", "Invalid job id specified\n"
            job["state"] = "SUSPENDED" if words[0] == "suspend" else "RUNNING"
            self.changed()
            return 0, "", ""
        if words[0] == "reconfigure":
            return 0, "", ""
        return self._unsupported(argv)

    def _update_node(self, args):
        name = args["nodename"]
        node = self.nodes.get(name)
        if node is None:
            return 1, "", "scontrol: error: Invalid node name specified\n"
        state = args.get("state", "").upper()
        words = node["state"]
        if state in ("DRAIN", "DOWN", "FAIL"):
            if state == "DOWN":
                words[:] = ["DOWN"] + [w for w in words[1:] if w != "DRAIN"]
            elif state not in words:
                words.append(state)
            node["reason"] = args.get("reason", node["reason"])
        elif state in ("RESUME", "UNDRAIN"):
            if words[0] == "DOWN":
                words[0] = "IDLE"
            words[:] = [w for w in words if w not in ("DRAIN", "NOT_RESPONDING")]
            node["reason"] = ""
        elif state:
            words[0] = state
        self.changed()
        return 0, "", ""

    def _unsupported(self, argv):
        self.unsupported.append(" ".join(argv[:3]))
        return 1, "", f"sim: {argv[0]} {' '.join(argv[1:3])} is not simulated\n"


def _load_slurm_module(runner):
    """``_modules/slurm.py`` of this checkout, its Slurm client running ``runner``."""
    spec = importlib.util.spec_from_file_location("vcluster_sim_slurm_module", REPO / "_modules" / "slurm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__salt__ = {"config.get": lambda key, default=None, **_: default}
    client = module._client  # noqa: SLF001 - the module's own client class, with our runner

    known = {}  # the module keeps the release it read in __context__: one per site here
    takes_release = "release" in inspect.signature(client.Slurm).parameters

    def _slurm(conf=None):
        if not takes_release:  # a client that does not read Slurm's version
            return client.Slurm(conf=conf, runner=runner)
        slurm = client.Slurm(conf=conf, runner=runner, release=known.get(conf))
        known[conf] = slurm.release
        return slurm

    module._slurm = _slurm  # noqa: SLF001
    return module


# -- Salt -----------------------------------------------------------------------------------


class SaltSim:
    """Salt's local and wheel clients as the master sees them: calls in, msgpack'ed returns out."""

    def __init__(self, slurm, controller=CONTROLLER):
        self.slurm = slurm
        self.controller = controller
        self.module = _load_slurm_module(slurm.run)
        self.calls = collections.Counter()  # "local:<fun>" / "wheel:<fun>"
        self.minion_returns = 0
        self.down = set()  # minions that do not answer
        self.no_slurmd = set()  # minions that answer but run no slurmd
        self.keys = {}  # name -> accepted | pending | rejected | denied
        self.unsupported = []
        self.generated = 0  # key pairs made by SimKeys.gen_accept
        self._jobs = {}

    @staticmethod
    def _wire(data):
        return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False, strict_map_key=False)

    # -- LocalClient ------------------------------------------------------------------------

    def cmd(self, tgt, fun, arg=(), kwarg=None, timeout=None, tgt_type="glob", full_return=False, **_):
        self.calls["local:" + fun] += 1
        targets = list(tgt) if tgt_type == "list" else [tgt]
        out = {}
        for minion in targets:
            if minion in self.down:
                continue
            ret = self._answer(minion, fun, list(arg or ()), dict(kwarg or {}))
            if ret is None:
                continue
            out[minion] = ret if full_return else ret["ret"]
            self.minion_returns += 1
        return self._wire(out)

    def _answer(self, minion, fun, arg, kwarg):
        if fun.startswith("slurm.") and minion == self.controller:
            try:
                return {"ret": getattr(self.module, fun[len("slurm."):])(*arg, **kwarg), "retcode": 0}
            except CommandExecutionError as exc:
                return {"ret": f"ERROR: {exc}", "retcode": 1}
        if fun == "cmd.run_all":
            command = arg[0]
            if isinstance(command, (list, tuple)) and minion == self.controller:
                rc, out, err = self.slurm.run(list(command))
                return {"ret": {"retcode": rc, "stdout": out, "stderr": err, "pid": 1}, "retcode": 0}
            if command == "pgrep -x slurmd" or list(command) == ["pgrep", "-x", "slurmd"]:
                rc = 1 if minion in self.no_slurmd else 0
                return {"ret": {"retcode": rc, "stdout": "" if rc else "4242", "stderr": "", "pid": 1}, "retcode": 0}
        if fun == "test.ping":
            return {"ret": True, "retcode": 0}
        if fun in ("state.highstate", "state.apply"):
            return {"ret": {"cmd_|-sim_|-sim_|-run": {"result": True, "comment": "", "__run_num__": 0}},
                    "retcode": 0}
        if fun == "saltutil.kill_job":
            return {"ret": {}, "retcode": 0}
        self.unsupported.append(fun)
        return None

    def run_job(self, tgt, fun, arg=(), kwarg=None, listen=False, **_):
        """Publish now, answer at once (the answer waits in :meth:`get_cli_event_returns`)."""
        jid = uuid.uuid4().hex
        self._jobs[jid] = self.cmd(tgt, fun, arg, kwarg, full_return=True)
        return {"jid": jid, "minions": [tgt]}

    def get_cli_event_returns(self, jid, minions, timeout=None, **_):
        yield self._jobs.pop(jid, {})

    def destroy(self):
        pass

    # -- WheelClient --------------------------------------------------------------------------

    def wheel_cmd(self, fun, arg=(), kwarg=None, print_event=False):
        self.calls["wheel:" + fun] += 1
        arg = list(arg or ())
        if fun == "key.list_all":
            by = collections.defaultdict(list)
            for name, state in self.keys.items():
                by[{"accepted": "minions", "pending": "minions_pre", "rejected": "minions_rejected",
                    "denied": "minions_denied"}[state]].append(name)
            return self._wire({d: sorted(by[d]) for d in ("minions", "minions_pre", "minions_rejected",
                                                           "minions_denied")})
        if fun == "key.list":
            return self._wire({"minions": sorted(n for n, s in self.keys.items() if s == "accepted")})
        if fun == "key.delete":
            self.keys.pop(arg[0], None)
            return {}
        if fun == "key.gen_accept":
            self.keys[arg[0]] = "accepted"
            # not real key material: a simulated site generates no RSA keys
            return {"pub": f"-----BEGIN PUBLIC KEY-----\nsim {arg[0]}\n-----END PUBLIC KEY-----\n",
                    "priv": f"-----BEGIN RSA PRIVATE KEY-----\nsim {arg[0]}\n-----END RSA PRIVATE KEY-----\n"}
        if fun == "key.master_key_str":
            return {"local": {"master.pub": "-----BEGIN PUBLIC KEY-----\nsim master\n-----END PUBLIC KEY-----\n"}}
        self.unsupported.append(fun)
        return None


class _Wheel:
    def __init__(self, salt):
        self.salt = salt

    def cmd(self, fun, arg=(), kwarg=None, print_event=False):
        return self.salt.wheel_cmd(fun, arg, kwarg, print_event)

    def destroy(self):
        pass


class SimKeys(saltlink.WheelKeys):
    """The master's key store: the real WheelKeys listing and deleting over the simulated wheel client.

    Key pairs are not generated (an RSA key costs tens of milliseconds of
    CPU and says nothing about how calls grow): :meth:`gen_accept` counts
    one key, records it accepted and returns random text of a 2048-bit
    key pair's PEM size, so that user data (Nova's 64 KiB limit) is as
    large and as incompressible as with real keys.
    """

    def __init__(self, salt):  # pylint: disable=super-init-not-called - no master opts here
        self.opts = {}
        self.wheel = _Wheel(salt)
        self._master_pub = None
        self._lock = threading.Lock()
        self.salt = salt

    def gen_accept(self, name, clear=True):
        if clear:
            self.delete(name)
        self.salt.generated += 1
        self.salt.keys[name] = "accepted"
        return {"pub": _pem("PUBLIC KEY", 294), "priv": _pem("RSA PRIVATE KEY", 1192)}


def _pem(kind, size):
    """PEM-armoured random bytes: the size of a real key's PEM (2048-bit RSA: 294 / 1192 DER bytes)."""
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(os.urandom(size)).decode(), 64))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


class SimController(saltlink.ControllerSlurm):
    """The real ControllerSlurm over the simulated local client."""

    def __init__(self, salt, controller=CONTROLLER):  # pylint: disable=super-init-not-called
        saltlink._Local.__init__(self, {}, client=salt)  # noqa: SLF001
        self.controller = controller


class SimEvents:
    """The master event bus: events counted, never delivered."""

    def __init__(self):
        self.fired = collections.Counter()

    def fire(self, tag, data):
        self.fired[tag.split("/")[1] if "/" in tag else tag] += 1
        return True

    def progress(self, message, **data):
        pass

    @contextlib.contextmanager
    def watch(self, tag):
        yield lambda seconds: False

    def wait_for_nodes(self, registry, names, done_states, deadline):
        return None


# -- providers -------------------------------------------------------------------------------


class SimProvider(Provider):
    """Instances in memory; Nova's batching rule: one create call per ``max_batch`` instances."""

    driver = "sim"

    def __init__(self, name="sim", config=None):
        super().__init__(name, config or {})
        self.max_batch = int(self.config.get("max_batch", 50))
        self.instances = {}
        self._ids = itertools.count(1)

    def create(self, specs):
        specs = list(specs)
        self.calls["create"] += math.ceil(len(specs) / self.max_batch)
        self.calls["list"] += 1  # one poll round sees every batch ACTIVE
        out = []
        for spec in specs:
            inst = Instance(id=f"i-{next(self._ids)}", name=spec.name, status=Status.RUNNING,
                            address=spec.address, host=f"hv{len(self.instances) % 64:02d}",
                            tags={k: str(v) for k, v in spec.tags.items()})
            self.instances[inst.id] = inst
            out.append(inst)
        return out

    def delete(self, instance_ids):
        ids = list(instance_ids)
        self.calls["delete"] += len(ids)  # one DELETE per instance, as Nova and LXD
        for iid in ids:
            self.instances.pop(iid, None)

    def list(self, cluster):
        self.calls["list"] += 1
        return [i for i in self.instances.values() if i.tags.get("cluster") == cluster]

    def list_all(self):
        self.calls["list"] += 1
        return list(self.instances.values())

    def get(self, instance_id):
        self.calls["get"] += 1
        return self.instances.get(instance_id)

    def suspend(self, instance_id, mode="suspend"):
        self.calls["suspend"] += 1
        self.instances[instance_id].status = Status.SUSPENDED

    def resume(self, instance_id):
        self.calls["resume"] += 1
        self.instances[instance_id].status = Status.RUNNING

    def hosts(self):
        self.calls["hosts"] += 1
        return [Host(name=f"hv{i:02d}", cpus_free=64, memory_free_mb=262144) for i in range(64)]


class NovaSim:
    """Enough of openstacksdk's compute proxy for OpenStackProvider.create, by Nova's multi-create rules.

    A server is BUILD for one list round, then ACTIVE; metadata changes are
    refused before ACTIVE, as Nova does.
    """

    def __init__(self):
        self.db = {}
        self.seen = {}
        self.requests = 0

    def create_server(self, **args):
        self.requests += 1
        n = args.get("max_count", 1)
        first = None
        for index in range(n):
            name = args["name"] if n == 1 else f"{args['name']}-{index + 1}"
            server = types.SimpleNamespace(
                id=str(uuid.uuid4()), name=name, status="BUILD", task_state="scheduling", launch_index=index,
                metadata=dict(args.get("metadata") or {}), tags=list(args.get("tags") or []),
                compute_host=None, addresses={}, fault=None, user_data=args.get("user_data"), reservation_id="r")
            self.db[server.id] = server
            self.seen[server.id] = 0
            first = first or server
        return first

    def servers(self, details=True, tags=None):
        out = []
        for server in list(self.db.values()):
            if tags and tags not in server.tags:
                continue
            self.seen[server.id] += 1
            if server.status == "BUILD" and self.seen[server.id] > 1:
                server.status, server.task_state, server.compute_host = "ACTIVE", None, "cpu1"
            out.append(types.SimpleNamespace(**vars(server)))
        return out

    def update_server(self, server_id, name):
        self.db[server_id].name = name

    def set_server_metadata(self, server_id, **metadata):
        server = self.db[server_id]
        if server.status != "ACTIVE":
            from openstack import exceptions as os_exc

            raise os_exc.ConflictException(message="building", http_status=409,
                                           details=f"Cannot 'update_metadata' instance {server_id} while building")
        server.metadata.update(metadata)

    def delete_server(self, server_id, ignore_missing=True):
        self.db.pop(server_id, None)

    def find_flavor(self, name, ignore_missing=True):
        return types.SimpleNamespace(id="flavor-" + name)


class _NovaConn:
    def __init__(self, compute):
        self.compute = compute
        found = types.SimpleNamespace
        self.image = found(find_image=lambda name, ignore_missing=True: found(id="img"))
        self.network = found(find_network=lambda name, ignore_missing=True: found(id="net"))

    def close(self):
        pass


def openstack_provider(name="nova", **config):
    """The real OpenStackProvider over :class:`NovaSim` (no polling pauses)."""
    from vcluster.providers.openstack import OpenStackProvider

    base = {"cloud": "sim", "networks": "none", "poll_interval": 0, "api_retry_backoff": 0, "boot_timeout": 60}
    base.update(config)
    return OpenStackProvider(name, base, connection=_NovaConn(NovaSim()))


def _serve_slurmds(conn):
    """Child process of :class:`Slurmds`: hold listening sockets until told to stop."""
    import socket

    sockets, port = {}, 0
    while True:
        try:
            verb, arg = conn.recv()
        except EOFError:
            break
        if verb == "listen":
            for address in arg:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((address, port))
                sock.listen(4)
                port = port or sock.getsockname()[1]
                sockets[address] = sock
            conn.send(port)
        elif verb == "stop":
            sock = sockets.pop(arg, None)
            if sock is not None:
                sock.close()
            conn.send(True)
        else:
            break
    for sock in sockets.values():
        sock.close()


class Slurmds:
    """One listening TCP socket per node on a loopback address of its own, as a node's slurmd listens.

    The real liveness probe (a SYN per node from the controller, see
    :mod:`vcluster.slurm.reach`) then meets a kernel that answers SYN-ACK
    for every node, as it would across a site, without leaving this host:
    every address is in 127.0.0.0/8 and nothing is accepted. The sockets
    live in a child process, so that this process's descriptors stay as
    few as a controller minion's.
    """

    BASE = int(ipaddress.IPv4Address("127.64.0.1"))

    def __init__(self):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_slurmds, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self.addresses = {}
        self.port = 0

    def address(self, index):
        return str(ipaddress.IPv4Address(self.BASE + index))

    def add(self, name):
        """A loopback address for ``name``'s slurmd (listening once :meth:`start` ran)."""
        address = self.address(len(self.addresses))
        self.addresses[name] = address
        return address

    def start(self):
        self._conn.send(("listen", list(self.addresses.values())))
        self.port = self._conn.recv()
        return self.port

    def stop(self, name):
        """The node's slurmd is gone: its port refuses."""
        self._conn.send(("stop", self.addresses[name]))
        self._conn.recv()

    def close(self):
        if self._proc.is_alive():
            try:
                self._conn.send(("exit", None))
            except OSError:
                pass
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        self._conn.close()


# -- the site -----------------------------------------------------------------------------------


class Site:
    """A registry, a Slurm, a Salt and providers in agreement, with ``size`` virtual nodes.

    Half the virtual nodes run one job each, the other half are idle (seen
    idle just now, so autoscale retires none); 1 % are suspended in the warm
    pool; ``size // 10`` bare-metal nodes (accepted minions outside every
    pool) run Slurm jobs beside them; ``size // 20`` jobs are pending in
    the partition (fewer than the idle nodes: autoscale creates none). The
    pool holds ``size + spare`` names.
    """

    def __init__(self, tmp, size, spare=300, max_batch=50, slurmds=True):
        self.size = size
        self.slurmds = Slurmds() if slurmds else None
        self.tmp = tmp
        cap = size + spare
        base = int(ipaddress.IPv4Address("10.128.0.10"))
        self.registry_path = os.path.join(tmp, "registry.sqlite")
        pillar = {
            "cluster": CLUSTER, "controller": CONTROLLER, "master": "10.127.0.1",
            "registry": self.registry_path,
            "pools": {
                "big": {"names": f"vn[00000-{cap - 1:05d}]",
                        "addresses": f"{ipaddress.IPv4Address(base)}-{ipaddress.IPv4Address(base + cap - 1)}",
                        "prefix": 9},
                "cloud": {"names": "os[0000-0299]", "prefix": 24},
                "cloudb": {"names": "ob[0000-0299]", "prefix": 24},
            },
            "providers": {"sim": {"driver": "lxd", "network": "simbr", "storage_pool": "sim"},
                          "nova": {"driver": "openstack", "cloud": "sim"},
                          "novab": {"driver": "openstack", "cloud": "sim", "name_servers": False}},
            "profiles": {"htc": {"image": "img", "provider": "sim", "pool": "big", "partition": PARTITION,
                                 "cpus": 2, "memory": 2048},
                         "os": {"image": "img", "provider": "nova", "pool": "cloud", "flavor": "m1.small"},
                         "osb": {"image": "img", "provider": "novab", "pool": "cloudb", "flavor": "m1.small"}},
            "limits": {"max_nodes": cap + 600, "max_per_request": 256},
            "autoscale": {"enabled": True, "interval": 60,
                          "profiles": {"htc": {"min_nodes": 0, "idle_time": 600, "warm_pool": size // 100}}},
        }
        self.policy = load(pillar)
        self.slurm = SlurmSim()
        self.salt = SaltSim(self.slurm)
        self.provider = SimProvider("sim", {"max_batch": max_batch})
        self.nova = openstack_provider("nova", max_batch=max_batch)
        # the same, naming each batch's servers at create (name_servers: false)
        self.nova_batch = openstack_provider("novab", max_batch=max_batch, name_servers=False)
        self.events = SimEvents()
        self.registry = Registry(self.registry_path)
        try:
            self._populate()
        except BaseException:
            self.close()
            raise
        self.ctx = self.context()

    def context(self, actor="sim"):
        ctx = Context(policy=self.policy, registry=self.registry, keys=SimKeys(self.salt),
                      slurm=SimController(self.salt), salt=saltlink.LocalActions({}, client=self.salt),
                      events=self.events, actor=actor)
        ctx._providers.update({"sim": self.provider, "nova": self.nova, "novab": self.nova_batch})  # noqa: SLF001
        return ctx

    def _populate(self):
        size = self.size
        pool = self.policy.pools["big"]
        nodes = self.registry.allocate(pool, "htc", "sim", size, "seed", membership="dynamic",
                                       attrs={"cpus": 2, "memory": 2048, "partition": PARTITION})
        warm = {n.name for n in nodes[: size // 100]}
        now = time.time() - 3600
        # set-up only: one statement, not 3 transitions per node
        db = self.registry._db  # noqa: SLF001
        db.execute("BEGIN IMMEDIATE")
        for n in nodes:
            inst = Instance(id=f"i-{n.name}", name=n.name, status=Status.RUNNING, address=n.address,
                            host=f"hv{n.id % 64:02d}",
                            tags={"cluster": CLUSTER, "node": n.name, "profile": "htc", "registry_id": "seed"})
            if n.name in warm:
                inst.status = Status.SUSPENDED
            self.provider.instances[inst.id] = inst
            state, reason = ("suspended", WARM_REASON) if n.name in warm else ("ready", None)
            db.execute("UPDATE nodes SET state = ?, reason = ?, instance_id = ?, host = ?, updated = ? WHERE id = ?",
                       (state, reason, inst.id, inst.host, now, n.id))
            self.salt.keys[n.name] = "accepted"
            self.slurm.add_node(n.name, state=("IDLE", "DRAIN") if n.name in warm else ("IDLE",),
                                addr=self._slurmd(n.name), reason=WARM_REASON if n.name in warm else "")
        db.execute("COMMIT")
        self.baremetal = [f"bm{i:05d}" for i in range(max(1, size // 10))]
        for name in self.baremetal:
            self.slurm.add_node(name, dynamic=False, cpus=32, addr=self._slurmd(name))
            self.salt.keys[name] = "accepted"
        if self.slurmds is not None:
            self.slurm.slurmd_port = self.slurmds.start()
        self.salt.keys[CONTROLLER] = "accepted"
        active = [n.name for n in nodes if n.name not in warm]
        for name in active[::2] + self.baremetal[::2]:
            self.slurm.add_job("RUNNING", [name])
        for _ in range(size // 20):
            self.slurm.add_job("PENDING", [], reason="Priority")

    def _slurmd(self, name):
        """The node's NodeAddr: a loopback address with a listening socket, or its name."""
        if self.slurmds is None:
            return name
        return self.slurmds.add(name)

    # -- counting -------------------------------------------------------------------------------

    def counters(self):
        """Calls so far: Salt (local publishes + wheel), Slurm commands, provider API calls, minion returns."""
        return {
            "salt": sum(self.salt.calls.values()),
            "slurm": sum(self.slurm.commands.values()),
            "provider": sum(self.provider.calls.values()) + sum(self.nova.calls.values())
            + sum(self.nova_batch.calls.values()),
            "minion_returns": self.salt.minion_returns,
            "keys_generated": self.salt.generated,
            "sim_seconds": self.slurm.seconds,
            "sim_cpu_seconds": self.slurm.cpu_seconds,
        }

    def detail(self):
        """Calls so far by kind (for reports)."""
        out = collections.Counter()
        out.update({k: v for k, v in self.salt.calls.items()})
        out.update({"slurm:" + k: v for k, v in self.slurm.commands.items()})
        out.update({"provider:" + k: v for k, v in self.provider.calls.items()})
        out.update({"nova:" + k: v for k, v in self.nova.calls.items()})
        out.update({"novab:" + k: v for k, v in self.nova_batch.calls.items()})
        return out

    def measure(self, call):
        """Run ``call()``; ``(its return, {seconds, calls by category, calls by kind})``.

        ``seconds`` is vcluster's own time: the wall time less the time the
        simulated Slurm spent making its output. ``cpu_seconds`` is the CPU
        time of this process, less the simulated Slurm's: on a machine
        shared with other work, the wall time also holds the time spent
        waiting for a CPU, the CPU time does not.
        """
        before, kinds = self.counters(), self.detail()
        start, cpu = time.perf_counter(), time.process_time()
        ret = call()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        after = self.counters()
        sim = after["sim_seconds"] - before["sim_seconds"]
        sim_cpu = after["sim_cpu_seconds"] - before["sim_cpu_seconds"]
        calls = {k: after[k] - before[k] for k in ("salt", "slurm", "provider", "minion_returns", "keys_generated")}
        by_kind = {k: v for k, v in (self.detail() - kinds).items() if v}
        return ret, {"seconds": round(wall - sim, 4), "cpu_seconds": round(cpu - sim_cpu, 4),
                     "sim_seconds": round(sim, 4), "calls": calls,
                     "by_kind": dict(sorted(by_kind.items()))}

    def close(self):
        self.registry.close()
        if self.slurmds is not None:
            self.slurmds.close()
