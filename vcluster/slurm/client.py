"""The Slurm controller as seen through its client commands (scontrol, squeue, sbatch).

:class:`Slurm` runs the commands (optionally against a non-default
``SLURM_CONF``), parses their output with :mod:`vcluster.slurm.parse` and
raises :class:`vcluster.errors.SlurmError` with the command's own message when
one fails. The command runner can be replaced for unit tests.

Version: before its first command a client reads the Slurm version once
(``scontrol --version``: the commands it runs print the output it parses)
and picks the :class:`~vcluster.slurm.versions.Release` whose output shapes
and behaviour apply; an unsupported version is refused with one sentence
before anything else runs. ``release=`` skips the read (the Salt module
keeps the release it read in ``__context__``).

Measured on Slurm 22.05.8 (and the same on 24.11.5 unless said):

* ``scontrol show node`` hides FUTURE nodes; ``scontrol -F show node`` lists
  them with the others, so every node lookup uses ``-F``.
* ``scontrol create NodeName=X ... State=FUTURE`` makes a dynamic node that a
  later ``slurmd -Z -N X`` (with or without ``--conf``) brings to IDLE; the
  controller's definition wins over the slurmd's ``--conf``. Without
  ``NodeAddr=`` the address is the node name, which must then resolve.
  On an existing node ``scontrol create`` exits 0 and changes nothing
  (24.11: exits 1, "Node already exists"), so :meth:`Slurm.create_node`
  checks first.
* ``scontrol delete nodename=X`` refuses busy nodes ("Requested nodes are
  busy"), and says "Invalid node name specified" for unknown ones.
* ``state=resume`` on a node that is neither drained nor down fails with
  "Invalid node state specified"; ``state=idle`` clears DRAIN but marks the
  node NOT_RESPONDING until its next ping, so resume is the way back.
* ``squeue --json`` ignores squeue's filters before 24.05 and applies them
  from 24.05 (finished jobs are then not listed); filtering happens here.
* A node whose only job is suspended shows IDLE in 22.05 and MIXED in 24.11.
* Power saving: ``state=POWER_UP|POWER_DOWN...`` updates become
  ``scontrol power up|down [asap|force]`` from 24.05 (see :meth:`Slurm.update_node`).
"""

import ipaddress
import logging
import os
import re
import subprocess
import time

from vcluster.errors import SlurmError
from vcluster.slurm import conf as _conf
from vcluster.slurm import hostlist, instance, parse, reach, states, versions
from vcluster.slurm.jobctl import HOLD_REASON, JobControl, _job_id

__all__ = ["HOLD_REASON", "NODE_UPDATE_STATES", "Slurm", "subprocess_runner"]

log = logging.getLogger(__name__)

#: ``scontrol update nodename=X state=...`` values vcluster uses or allows.
NODE_UPDATE_STATES = ("RESUME", "DRAIN", "UNDRAIN", "DOWN", "IDLE", "FUTURE", "FAIL", "NORESP",
                      "POWER_DOWN", "POWER_DOWN_ASAP", "POWER_DOWN_FORCE", "POWER_UP",
                      "CANCEL_REBOOT")

#: ``state=`` values that are ``scontrol power ...`` words from 24.05.
POWER_WORDS = {"POWER_UP": ("up",), "POWER_DOWN": ("down",), "POWER_DOWN_ASAP": ("down", "asap"),
               "POWER_DOWN_FORCE": ("down", "force")}

#: Node states Slurm only accepts together with a reason.
NEEDS_REASON = ("DRAIN", "DOWN", "FAIL")


#: Node states in which Slurm expects no answer from slurmd (not yet there,
#: or powered down by power saving): :meth:`Slurm.liveness_scan` skips them.
UNPROBED_STATES = ("FUTURE", "POWERED_DOWN", "POWERING_DOWN", "POWERING_UP", "REBOOT_ISSUED")

#: ``scontrol: error: `` and the like, dropped from messages.
_PREFIX = re.compile(r"^[a-z]+: (?:error|fatal): ")


def subprocess_runner(argv, env, timeout, stdin=None):
    """Run ``argv`` (``stdin`` text as its input); return ``(returncode, stdout, stderr)``."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(argv[:3])} did not finish within {timeout} s") from None
    return proc.returncode, proc.stdout, proc.stderr


def _message(rc, out, err):
    lines = [line.strip() for line in (err or out or "").splitlines() if line.strip()]
    lines = [_PREFIX.sub("", line) for line in lines]
    return "; ".join(lines) if lines else f"exit code {rc}"


class Slurm(JobControl):
    """Client of one Slurm controller (its job commands in :class:`~vcluster.slurm.jobctl.JobControl`).

    ``conf`` is the path of a slurm.conf to use instead of the default (sets
    ``SLURM_CONF``). ``runner(argv, env, timeout, stdin)`` returns ``(rc, out, err)``.
    ``release``: the controller's release when already known (a
    :class:`~vcluster.slurm.versions.Release` or version string); read on
    first use otherwise.
    """

    def __init__(self, conf=None, runner=None, timeout=60, clock=time.monotonic, sleep=time.sleep,
                 release=None):
        self.conf = conf
        self.runner = runner or subprocess_runner
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self._release = versions.release(release) if release is not None else None
        self._version = None

    @property
    def env(self):
        """Environment for the commands (``SLURM_CONF`` set when ``conf`` is)."""
        env = dict(os.environ)
        if self.conf:
            env["SLURM_CONF"] = self.conf
        return env

    def version(self):
        """The Slurm version of the commands this client runs (``'24.11.5'``), read once."""
        if self._version is None:
            _, out, _ = self._run("scontrol", "--version")
            major, minor, micro = versions.parse_version(out)
            self._version = f"{major}.{minor:02d}.{micro}"
        return self._version

    @property
    def release(self):
        """The :class:`~vcluster.slurm.versions.Release` of this controller; SlurmError if unsupported."""
        if self._release is None:
            self._release = versions.release(self.version())
        return self._release

    def run(self, *argv, ok=(0,), stdin=None):
        """Run a Slurm command; return ``(rc, out, err)``; raise SlurmError unless rc in ``ok``.

        The first command of a client reads the Slurm version first, so an
        unsupported Slurm is refused before anything runs.
        """
        self.release  # noqa: B018 - reads and checks the version once
        return self._run(*argv, ok=ok, stdin=stdin)

    def _run(self, *argv, ok=(0,), stdin=None):
        argv = [str(a) for a in argv]
        rc, out, err = self.runner(argv, self.env, self.timeout, stdin)
        if rc not in ok:
            raise SlurmError(f"{' '.join(argv[:3])} failed: {_message(rc, out, err)}")
        return rc, out, err

    # -- reading ---------------------------------------------------------------

    def nodes(self, names=None):
        """All nodes (FUTURE ones too), or those in the hostlist ``names``; list of Node."""
        argv = ["scontrol", "-F", "show", "-o", "node"]
        if names:
            argv.append(hostlist.collect(hostlist.expand(names)))
        rc, out, err = self.run(*argv, ok=(0, 1))
        if rc == 1:
            if "not found" in (out + err):
                return []
            raise SlurmError(f"scontrol show node failed: {_message(rc, out, err)}")
        return parse.nodes_from_scontrol(out, self.release)

    def liveness_scan(self, names, wait=2.0):
        """One look at the slurmds of ``names`` (a hostlist or list): Slurm's view and a SYN probe.

        Returns ``{"nodes": [Node of names that Slurm knows], "slurmd":
        {name: verdict}}``, verdicts from :func:`vcluster.slurm.reach.probe`
        (``listening``, ``refused``, ``silent``, ``unresolved``), or
        ``skipped`` for nodes Slurm itself does not expect to answer
        (:data:`UNPROBED_STATES`). One ``scontrol show node``, one ``scontrol
        show config`` and one probe of every named node at once, whatever
        their number. A node's ``Port=`` (shown only when it differs from
        ``SlurmdPort``) wins over the cluster's.
        """
        found, targets, verdicts = self._probe_targets(names)
        verdicts.update(reach.probe(targets, wait))
        return {"nodes": found, "slurmd": verdicts}

    def _probe_targets(self, names):
        """``(nodes Slurm knows, {name: (address, port)} to probe, {name: "skipped"})`` of :meth:`liveness_scan`."""
        wanted = set(hostlist.expand(names))
        _, out, _ = self.run("scontrol", "-F", "show", "-o", "node")
        # one parse of the listing, and Node objects only for the watched nodes
        records = [r for r in parse.parse_records(out, "NodeName") if r["NodeName"] in wanted]
        found = [parse.node_from_record(r) for r in records]
        ports = {r["NodeName"]: r["Port"] for r in records if r.get("Port")}
        default = self.slurmd_port()
        targets, verdicts = {}, {}
        for node in found:
            if any(w in node.state for w in UNPROBED_STATES):
                verdicts[node.name] = "skipped"
            else:
                targets[node.name] = (node.addr or node.hostname or node.name, int(ports.get(node.name, default)))
        return found, targets, verdicts

    def release_when_listening(self, name, jobs=(), reason=HOLD_REASON, wait=30.0, every=0.2):
        """:meth:`release_node` once the node's slurmd listens (the SYN probe of :meth:`liveness_scan`).

        A resumed node's way back in one call on the controller: its address
        read once, then probed every ``every`` seconds for up to ``wait``;
        the moment it answers, its ``jobs`` are resumed and vcluster's drain
        lifted. Returns ``{"slurmd": verdict, "waited": seconds, "released":
        release_node's return or None}``: ``None`` (nothing touched) when the
        last verdict is not ``listening``, at once for ``skipped`` (a node
        Slurm expects no answer from) and for a node Slurm does not know
        (verdict ``None``). A controller that cannot probe raises SlurmError.
        """
        _conf.validate_name(name)
        start = self.clock()
        deadline = start + float(wait)
        _, targets, verdicts = self._probe_targets([name])
        verdict = verdicts.get(name)
        while name in targets:
            asked = self.clock()
            verdict = reach.probe(targets, max(0.05, min(deadline - asked, 2.0))).get(name)
            if verdict == reach.LISTENING or self.clock() >= deadline:
                break
            self.sleep(max(0.0, min(every - (self.clock() - asked), deadline - self.clock())))
        released = self.release_node(name, jobs, reason) if verdict == reach.LISTENING else None
        return {"slurmd": verdict, "waited": round(self.clock() - start, 2), "released": released}

    def slurmd_port(self):
        """``SlurmdPort`` of the running configuration (``scontrol show config``)."""
        _, out, _ = self.run("scontrol", "show", "config")
        match = re.search(r"^SlurmdPort\s*=\s*(\d+)", out, re.MULTILINE)
        if not match:
            raise SlurmError("scontrol show config printed no SlurmdPort")
        return int(match.group(1))

    def node(self, name):
        """The Node called ``name``, or None when Slurm does not know it."""
        _conf.validate_name(name)
        found = [n for n in self.nodes(name) if n.name == name]
        return found[0] if found else None

    def jobs(self, nodes=None, states=None):
        """Jobs from ``squeue --json``, only those on ``nodes`` / in ``states`` when given.

        With ``nodes``, squeue itself lists only their jobs (:meth:`jobs_on`).
        """
        if nodes:
            jobs = self.jobs_on(nodes)
        else:
            _, out, _ = self.run("squeue", "--all", "--json")
            jobs = parse.jobs_from_squeue_json(out, self.release)
        if states:
            wanted_states = set(_words(states))
            jobs = [j for j in jobs if j.state in wanted_states]
        return jobs

    def jobs_on(self, nodes):
        """Jobs (any state) on the hostlist ``nodes``, from ``squeue --nodelist``; list of Job.

        Only those jobs' lines come back. 22.05's ``squeue --json`` prints
        every job whatever the filters, so this reads squeue's text format
        (the same in every release). squeue still gets every job from
        slurmctld and picks by node itself, but no JSON of all jobs is made,
        returned through Salt or parsed. A node name slurmctld does not know
        falls back to the whole listing, picked here.
        """
        names = hostlist.expand(nodes)
        if not names:
            return []
        self.release  # noqa: B018 - reads and checks the version once, as every listing does
        rc, out, err = self.run("squeue", "--noheader", "--all", "--states=all",
                                f"--nodelist={hostlist.collect(names)}", f"--format={parse.SQUEUE_TEXT_FORMAT}", ok=(0, 1))
        if rc == 1:
            if "Invalid node name" not in (out + err):
                raise SlurmError(f"squeue --nodelist failed: {_message(rc, out, err)}")
            _, out, _ = self.run("squeue", "--all", "--json")
            wanted = set(names)
            return [j for j in parse.jobs_from_squeue_json(out, self.release) if wanted & set(j.nodes)]
        return parse.jobs_from_squeue_text(out)

    def job(self, job_id):
        """The Job ``job_id`` (``scontrol show job``), or None when Slurm does not know it."""
        job_id = _job_id(job_id)
        rc, out, err = self.run("scontrol", "show", "-o", "job", job_id, ok=(0, 1))
        if rc == 1:
            if "Invalid job id" in (out + err):
                return None
            raise SlurmError(f"scontrol show job {job_id} failed: {_message(rc, out, err)}")
        jobs = parse.jobs_from_scontrol(out, self.release)
        return jobs[0] if jobs else None

    def partitions(self):
        """All partitions; list of Partition."""
        _, out, _ = self.run("scontrol", "show", "-o", "partition")
        return parse.partitions_from_scontrol(out, self.release)

    def job_count(self, nodes=None, states=states.JOB_NOT_DONE):
        """How many jobs are on ``nodes`` (all nodes by default) in ``states`` (live ones)."""
        return len(self.jobs(nodes=nodes, states=states))

    # -- nodes -----------------------------------------------------------------

    def create_node(self, name, spec=None, conf=None, addr=None, state="FUTURE"):
        """``scontrol create`` a dynamic node; return it. Raises if ``name`` already exists.

        ``spec`` is a :class:`vcluster.slurm.conf.NodeSpec` (or a dict of
        cpus/memory/features/gres/weight); ``conf`` a ``Key=Value ...`` string.
        """
        if isinstance(spec, dict):
            spec = _conf.NodeSpec.from_dict(spec)
        args = _conf.create_args(name, spec=spec, conf=conf, addr=addr, state=state)
        existing = self.node(name)
        if existing is not None:
            raise SlurmError(f"node {name} already exists in Slurm ({'+'.join(existing.state)})")
        self.run("scontrol", "create", *args)
        node = self.node(name)
        if node is None:
            raise SlurmError(f"scontrol create {name} succeeded but Slurm does not list the node")
        return node

    def delete_node(self, name):
        """``scontrol delete nodename=NAME`` (dynamic nodes, no jobs on them)."""
        _conf.validate_name(name)
        self.run("scontrol", "delete", f"nodename={name}")
        return True

    def update_node(self, name, state=None, reason=None):
        """``scontrol update nodename=NAME state=STATE reason=REASON``; return the node after.

        POWER_UP / POWER_DOWN[_ASAP|_FORCE] run ``scontrol power up|down
        [asap|force] NAME`` where the release has it (24.05+; with a reason
        only from 25.05, which takes ``Reason=`` there), else the update.
        """
        self._update_node(name, state, reason)
        return self.node(name)

    def _update_node(self, name, state=None, reason=None):
        """The update itself, checked before Slurm is asked; no read back."""
        _conf.validate_name(name)
        argv = ["scontrol", "update", f"nodename={name}"]
        if state is not None:
            state = str(state).upper()
            if state not in NODE_UPDATE_STATES:
                raise SlurmError(f"node state {state!r} is invalid: use one of {', '.join(NODE_UPDATE_STATES)}")
            if state in NEEDS_REASON and not reason:
                raise SlurmError(f"setting node {name} to {state} needs a reason")
            release = self.release
            if state in POWER_WORDS and release.power_command and (not reason or release.key >= (25, 5)):
                power = ["scontrol", "power", *POWER_WORDS[state], name]
                self.run(*power, *([f"Reason={reason}"] if reason else []))
                return
            argv.append(f"state={state}")
        if reason:
            argv.append(f"reason={reason}")
        if len(argv) == 3:
            raise SlurmError(f"update of node {name} needs a state or a reason")
        self.run(*argv)

    def set_instance(self, name, instance_id, instance_type, extra=None):
        """Set node ``name``'s ``InstanceId``, ``InstanceType`` (and ``Extra``); return the node after.

        One ``scontrol update nodename=NAME InstanceId=ID InstanceType=TYPE
        [Extra=EXTRA]``, so slurmctld sends all three to slurmdbd at once
        (an ``Extra`` change alone is not sent). Every value is checked
        first (:func:`vcluster.slurm.instance.check_value`; ``extra`` as
        JSON too). Releases before 23.11 have no instance fields: refused
        with one sentence before anything runs.
        """
        _conf.validate_name(name)
        argv = ["scontrol", "update", f"nodename={name}",
                f"InstanceId={instance.check_value('InstanceId', instance_id)}",
                f"InstanceType={instance.check_value('InstanceType', instance_type)}"]
        if extra is not None:
            extra = extra if isinstance(extra, str) else instance.extra_json(**extra)
            if not instance.parse_extra(extra) or instance.extra_json(**instance.parse_extra(extra)) != extra:
                raise SlurmError(f"Extra {extra!r} is invalid: use a JSON object of instance.extra_json's form, "
                                 'such as {"host":"h1","provider":"lxd"}')
            argv.append(f"Extra={extra}")
        release = self.release
        if not release.instance_fields:
            raise SlurmError(f"Slurm {self.version() if self._version else release.series} has no InstanceId or "
                             f"InstanceType on nodes (23.11 and later): node {name}'s instance is not recorded")
        self.run(*argv)
        return self.node(name)

    def update_node_addr(self, name, address):
        """``scontrol update nodename=NAME nodeaddr=ADDR`` (a node that moved, after a migration).

        ``address``: an IP address or a host name; anything else is refused
        before the command runs.
        """
        _conf.validate_name(name)
        self.run("scontrol", "update", f"nodename={name}", f"nodeaddr={_address(address)}")
        return True

    def wait_node_state(self, name, wanted, timeout=60, interval=0.5):
        """Poll until node ``name`` is in one of ``wanted``; return its state words.

        ``wanted`` is a list or comma-separated string of state words (see
        :func:`vcluster.slurm.states.matches`; ``ABSENT`` waits for removal).
        Raises SlurmError at the deadline, naming the last state seen.
        """
        wanted = states.wanted_words(wanted)
        if not wanted:
            raise SlurmError("wait_node_state needs at least one state")
        deadline = self.clock() + float(timeout)
        while True:
            try:
                node = self.node(name)
            except SlurmError as exc:
                # slurmctld restarting (static membership): keep polling, and
                # never take "unreachable" for "absent".
                words, unreachable = [], exc
            else:
                words, unreachable = (node.state if node else []), None
                if states.matches(words, wanted):
                    return words
            left = deadline - self.clock()
            if left <= 0:
                seen = f"slurmctld did not answer: {unreachable}" if unreachable else (
                    f"it is {'+'.join(words) or 'absent'}")
                raise SlurmError(f"node {name} is not {'|'.join(wanted)} after {timeout} s: {seen}")
            self.sleep(min(interval, left))

    def reconfigure(self):
        """``scontrol reconfigure``: slurmctld and every slurmd re-read slurm.conf.

        From 23.11 this starts new daemons, which also take a changed node
        list (``release.reconfigure_changes_nodes``); before, a NodeName
        change needs a slurmctld restart.
        """
        self.run("scontrol", "reconfigure")
        return True


def _words(value):
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip().upper() for v in value if str(v).strip()]


#: A host name (RFC 1123 labels) for ``NodeAddr``.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _address(address):
    """``address`` if it is an IP address or a host name, else SlurmError (one sentence)."""
    text = str(address).strip() if isinstance(address, str) else None
    if text:
        try:
            ipaddress.ip_address(text)
            return text
        except ValueError:
            if _HOSTNAME.match(text):
                return text
    raise SlurmError(f"node address {address!r} is invalid: use an IP address or a host name")
