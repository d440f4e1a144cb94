"""Salt-backed implementations of the engine's interfaces (master side).

Only the runner imports this: it needs the master's ``opts``. Keys are
listed and deleted through the wheel client and generated in this process
(the private key never rides a wheel return), Slurm through the
controller minion's ``slurm`` execution module, states through the local
client, events through the master event bus.
"""

import contextlib
import logging
import threading
import time

import salt.cache
import salt.client
import salt.config
import salt.crypt
import salt.pillar
import salt.utils.event
import salt.utils.verify
import salt.wheel

from vcluster import policy as _policy
from vcluster import retry
from vcluster.context import Context
from vcluster.errors import PolicyError, SlurmError, VclusterError, sentence
from vcluster.registry import Registry

log = logging.getLogger(__name__)


#: The master's pillar compilers not in use, by what they were built for.
_idle_compilers = {}
_compilers_lock = threading.Lock()


@contextlib.contextmanager
def _pillar_compiler(opts):
    """One of the master's own :class:`salt.pillar.Pillar`, lent to this thread.

    Building one loads its renderer, module and ext_pillar loaders (about
    0.1 s under the reactor's GIL, most of a runner's start-up); compiling
    it again reads and renders the pillar afresh every time (12 ms). A
    compiler is not shared by two threads at once, so each is lent to one
    caller and given back after: reactor handlers run in the master's
    reactor threads (vcluster asks for 64 of them so that a burst of joins
    does not queue), and a burst of 32 joins, whose compiles take turns
    under the GIL anyway, builds a few compilers instead of one per thread.
    """
    key = (opts.get("conf_file"), opts["id"], opts.get("saltenv") or "base", opts.get("pillarenv"))
    with _compilers_lock:
        idle = _idle_compilers.setdefault(key, [])
        compiler = idle.pop() if idle else None
    if compiler is None:
        compiler = salt.pillar.get_pillar(opts, {}, opts["id"], saltenv=key[2], pillarenv=key[3])
    try:
        yield compiler
    finally:
        with _compilers_lock:
            _idle_compilers[key].append(compiler)


def load_policy(opts):
    """Compile the master's own pillar and validate its ``vcluster`` key."""
    with _pillar_compiler(opts) as compiler:
        pillar = compiler.compile_pillar()
    errors = pillar.get("_errors")
    if errors:
        raise PolicyError(f"the master's pillar does not render: {errors[0]}")
    data = pillar.get("vcluster")
    if data is None:
        data = opts.get("vcluster")
    if data is None:
        raise PolicyError(
            f"pillar vcluster is missing for the master (id {opts['id']!r}); assign pillar/vcluster.sls to it"
        )
    return _policy.load(data)


def context(opts, jid_event=None, actor="vcluster"):
    """A ready :class:`~vcluster.context.Context` for one runner call."""
    pol = load_policy(opts)
    slurm = ControllerSlurm(opts, pol.controller)
    return Context(
        policy=pol,
        registry=Registry(pol.registry),
        keys=WheelKeys(opts),
        slurm=slurm,
        salt=LocalActions(opts, client=slurm.client),  # one local client per call
        events=MasterEvents(opts, jid_event),
        master_ports=(opts.get("ret_port", 4506), opts.get("publish_port", 4505)),
        actor=actor,
    )


#: Tries per wheel (key) call, the first wait between them (doubling) and the deadline, in seconds.
WHEEL_ATTEMPTS = 4
WHEEL_BACKOFF = 1.0
WHEEL_DEADLINE = 30


#: Smallest RSA key size of a generated minion key (Salt's own minimum and default).
KEY_SIZE = 2048


#: Salt's key directories (as ``key.list_all`` names them) and their states.
KEY_STATES = {
    "minions": "accepted",
    "minions_pre": "pending",
    "minions_rejected": "rejected",
    "minions_denied": "denied",
}


class WheelKeys:
    """Minion keys: listed and deleted through the wheel client, generated here.

    A new node's key pair is generated in this process (Salt's own
    :func:`salt.crypt.gen_keys`) and its public key written to the master's
    key store through Salt's ``keys`` cache with the master's
    ``keys.cache_driver`` (``localfs_key``: ``<pki_dir>/minions/<id>``, owned
    by the master's user), exactly what ``wheel.key.gen_accept`` stores. The
    private key goes only to the caller (the node's boot files): Salt's wheel
    client publishes every return on the master event bus
    (``salt/wheel/<jid>/ret``), where ``key.gen_accept`` would show it to
    every subscriber.

    A wheel call can fail for a moment while the master is busy (seen under
    load: an exception inside the client before the call even ran); each
    call is tried :data:`WHEEL_ATTEMPTS` times with a short backoff, then
    refused with one sentence. Key material is never logged.
    """

    def __init__(self, opts):
        self.opts = opts
        self.wheel = salt.wheel.WheelClient(opts)
        self._master_pub = None
        self._cache = None
        # expand generates keys in several threads (engine._specs): one
        # wheel call and one cache store at a time; the generation runs free
        self._lock = threading.Lock()

    def _cmd(self, fun, arg=(), kwarg=None):
        def once():
            with self._lock:
                return self.wheel.cmd(fun, list(arg), kwarg or {}, print_event=False)

        try:
            return retry.call(once, WHEEL_ATTEMPTS, WHEEL_BACKOFF, time.monotonic() + WHEEL_DEADLINE,
                              is_transient=lambda exc: True)
        except Exception as exc:  # noqa: BLE001 - one clear error after the retries
            raise VclusterError(f"the master's key store did not complete {fun}: "
                                f"{type(exc).__name__}: {sentence(exc)}") from exc

    def gen_accept(self, name, clear=True):
        """Generate ``name``'s key pair here, accept its public key: ``{"pub", "priv"}``.

        No wheel, runner or event carries the pair; only the public key is
        stored on the master.
        """
        # A pending or rejected key left by an earlier guest of this name
        # (one that re-authenticated after its key was deleted) goes first:
        # the store below only writes the accepted key. clear=False: the
        # caller listed the keys just now and this name has none.
        if clear:
            self.delete(name)
        priv, pub = self._generate(name)
        self._store_accepted(name, pub)
        return {"pub": pub, "priv": priv}

    def _generate(self, name):
        if not isinstance(name, str) or not salt.utils.verify.valid_id(self.opts, name):
            raise VclusterError(f"{name!r} is not a valid minion id for a key")
        keysize = max(KEY_SIZE, int(self.opts.get("keysize") or KEY_SIZE))
        try:
            priv, pub = salt.crypt.gen_keys(keysize)
        except Exception as exc:  # noqa: BLE001 - one sentence, never the key
            raise VclusterError(f"could not generate a minion key for {name}: {type(exc).__name__}") from None
        return priv, pub

    def _store_accepted(self, name, pub):
        """Write ``pub`` as ``name``'s accepted key, as Salt's own key store does."""
        try:
            with self._lock:
                if self._cache is None:
                    self._cache = salt.cache.Cache(self.opts, driver=self.opts["keys.cache_driver"])
                self._cache.store("keys", name, {"pub": pub, "state": "accepted"})
        except Exception as exc:  # noqa: BLE001 - one sentence, never the key
            raise VclusterError(f"could not accept a minion key for {name} in the master's key store "
                                f"({self.opts.get('keys.cache_driver')}): {sentence(exc)}") from None

    def delete(self, name):
        self._cmd("key.delete", [name])

    def accepted(self):
        listing = self._cmd("key.list", ["accepted"]) or {}
        return set(listing.get("minions", []))

    def all(self):
        """Every minion key the master holds: ``{name: state}``.

        ``state`` is one of :data:`KEY_STATES`' values; a name found in two
        directories reports the first (accepted before pending).
        """
        listing = self._cmd("key.list_all") or {}
        found = {}
        for directory, state in KEY_STATES.items():
            for name in listing.get(directory) or []:
                found.setdefault(name, state)
        return found

    def close(self):
        self.wheel.destroy()
        # Salt's WheelClient.destroy leaves the MasterMinion its first cmd()
        # made (client/mixins.py ``mminion``), and MasterMinion.destroy
        # leaves ``{}`` where its __del__ looks for ``None``: every context
        # logged "unclosed MasterMinion" when collected, each engine tick
        # included. Its loaders are released here, then marked torn down.
        mminion = self.wheel.__dict__.pop("_mminion", None)
        if mminion is not None:
            mminion.destroy()
            mminion.returners = mminion.functions = mminion.utils = None

    def master_pub(self):
        """The master's public key, asked once per runner call (not per node)."""
        if self._master_pub is None:
            # {"local": {"<master key name>.pub": PEM}}: one entry, name varies.
            local = self._cmd("key.master_key_str")["local"]
            self._master_pub = next(iter(local.values()))
        return self._master_pub


class _Local:
    """Calls through a local client: its own, or one lent by another _Local."""

    def __init__(self, opts, client=None):
        self.opts = opts
        self._owns_client = client is None
        self.client = client if client is not None else salt.client.get_local_client(opts["conf_file"])

    def close(self):
        if self._owns_client:
            self.client.destroy()

    def _call(self, target, fun, arg=(), kwarg=None, timeout=60, tgt_type="glob"):
        ret = self.client.cmd(target, fun, arg=list(arg), kwarg=kwarg or {}, timeout=timeout,
                              tgt_type=tgt_type, full_return=True)
        return ret or {}

    def _call_one_waiting(self, minion, fun, arg=(), kwarg=None, timeout=60):
        """:meth:`_call` for one minion's long job, waiting on its return event.

        Salt's ``LocalClient.cmd`` looks for returns every 10 ms: 16 calls
        waiting 8-10 s used 4.4 s of CPU, about 0.9 of two cores for a burst
        of 32 joins waiting on their highstates. Here the wait is one
        blocking read of the master's event bus (the job's subscription,
        opened before the publish, keeps a return that comes first), woken
        every 5 s only to look at the deadline. ``{}`` when no return came
        within ``timeout``, as :meth:`_call`.
        """
        deadline = time.monotonic() + timeout
        pub = self.client.run_job(minion, fun, list(arg), kwarg=kwarg or {}, timeout=timeout, listen=True)
        if not pub or minion not in (pub.get("minions") or []):
            return {}
        tag = f"salt/job/{pub['jid']}/ret/{minion}"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return {}
            event = self.client.event.get_event(wait=min(left, 5), tag=tag, match_type="fnmatch", full=True)
            if event:
                data = event.get("data") or {}
                return {minion: {"ret": data.get("return"), "retcode": data.get("retcode", 0)}}


class ControllerSlurm(_Local):
    """The ``slurm`` execution module on the controller's minion."""

    def __init__(self, opts, controller):
        super().__init__(opts)
        self.controller = controller

    def _slurm(self, fun, *arg, call_timeout=60, **kwarg):
        kwarg = {k: v for k, v in kwarg.items() if v is not None}
        ret = self._call(self.controller, f"slurm.{fun}", arg, kwarg, timeout=call_timeout + 15)
        return self._answer(fun, ret)

    def _answer(self, fun, ret):
        """The controller's return of ``slurm.<fun>`` (a full_return dict), or SlurmError."""
        out = ret.get(self.controller)
        if not isinstance(out, dict):
            raise SlurmError(f"the Slurm controller's minion {self.controller} did not answer slurm.{fun}")
        if out.get("retcode", 0) != 0:
            text = out.get("ret")
            raise SlurmError(str(text).splitlines()[-1] if text else f"slurm.{fun} failed")
        return out.get("ret")

    def nodes(self):
        return self._slurm("nodes")

    def jobs(self, nodes=None):
        return self._slurm("jobs", nodes=",".join(nodes) if nodes else None)

    def update_node(self, name, state, reason=None):
        return self._slurm("update_node", name, state=state, reason=reason)

    def delete_node(self, name):
        return self._slurm("delete_node", name)

    def requeue(self, job_id):
        return self._slurm("requeue", job_id)

    def reconfigure(self):
        return self._slurm("reconfigure")

    def job(self, job_id):
        return self._slurm("job", job_id)

    def hold_node(self, name, jobs, reason):
        return self._slurm("hold_node", name, jobs=",".join(str(j) for j in jobs), reason=reason)

    def release_node(self, name, jobs, reason):
        return self._slurm("release_node", name, jobs=",".join(str(j) for j in jobs), reason=reason)

    def set_instance(self, name, instance_id, instance_type, extra=None):
        """``slurm.set_instance`` on the controller: ``{"set": bool, ...}`` (see _modules/slurm.py)."""
        # by keyword: the minion reads a positional "key=value" string as a keyword argument
        return self._slurm("set_instance", name, instance_id=instance_id, instance_type=instance_type, extra=extra)

    def update_node_addr(self, name, address):
        """``slurm.update_node_addr`` on the controller (after a migration)."""
        try:
            return self._slurm("update_node_addr", name, address=address)  # by keyword: taken as it is
        except SlurmError as exc:
            raise SlurmError(f"Slurm did not take the new address {address} of {name}: {exc}") from None

    def reserve_for_job(self, job_id, nodes, user):
        """``slurm.reserve_for_job`` on the controller: the job's own nodes, reserved for it; the job released."""
        return self._slurm("reserve_for_job", jobid=str(job_id), nodes=",".join(nodes), user=user)

    def delete_reservation(self, name):
        return self._slurm("delete_reservation", name)

    def liveness_scan(self, names, wait):
        """Slurm's view of ``names`` and a SYN probe of their slurmds, from the controller: one call."""
        from vcluster.slurm import hostlist  # pylint: disable=import-outside-toplevel

        try:
            nodes = hostlist.collect(sorted(names))
        except SlurmError:
            nodes = ",".join(sorted(names))
        return self._slurm("liveness_scan", nodes=nodes, wait=wait, call_timeout=int(wait) + 30)

    def wait_node_state(self, name, states, timeout):
        return self._slurm("wait_node_state", name, states=",".join(states), timeout=int(timeout),
                           call_timeout=int(timeout))

    def watch_node_state(self, name, states, timeout, interval=0.5):
        """Start :meth:`wait_node_state` on the controller now; a :class:`PendingCall` to collect it.

        The controller polls Slurm while this client does other calls (the
        node's highstate): the client's subscription to the job keeps an
        answer that comes meanwhile until :meth:`PendingCall.result`.
        """
        kwarg = {"states": ",".join(states), "timeout": int(timeout), "interval": float(interval)}
        deadline = time.monotonic() + timeout
        pub = self.client.run_job(self.controller, "slurm.wait_node_state", [name], kwarg=kwarg, listen=True)
        if not pub or self.controller not in (pub.get("minions") or []):
            raise SlurmError(f"the Slurm controller's minion {self.controller} did not take slurm.wait_node_state")

        def again():
            return self.wait_node_state(name, states, max(1, int(deadline - time.monotonic())))

        return PendingCall(self, "wait_node_state", pub["jid"], again)


#: Seconds :meth:`PendingCall.result` waits for an answer before it asks the
#: controller's minion whether it still runs the call (Salt's find_job).
PENDING_CHECK = 5


class PendingCall:
    """A ``slurm`` function running on the controller's minion; its answer collected later.

    A minion that was reconnecting when the call was published (right after
    a master restart, say) never got it, and a call killed on the minion
    never answers: when the minion runs no such job and no answer came,
    :meth:`result` makes the call again (``again``), with the time left.
    """

    def __init__(self, slurm, fun, jid, again):
        self.slurm = slurm
        self.fun = fun
        self.jid = jid
        self.again = again
        self.done = False

    def result(self):
        """The function's return (as :meth:`ControllerSlurm._slurm` gives it), or SlurmError."""
        self.done = True
        ret = {}
        # one target: the iterator ends after its return, or once the minion
        # says (find_job, every PENDING_CHECK s) that it no longer runs the job
        for part in self.slurm.client.get_cli_event_returns(self.jid, [self.slurm.controller], PENDING_CHECK):
            ret.update(part or {})
        out = ret.get(self.slurm.controller)
        if not isinstance(out, dict) or out.get("out") == "no_return" or out.get("failed"):
            log.warning("the controller's minion %s returned nothing for slurm.%s (job %s): asking again",
                        self.slurm.controller, self.fun, self.jid)
            return self.again()
        return self.slurm._answer(self.fun, ret)

    def cancel(self):
        """Stop the call on the controller's minion (it would poll until its own deadline)."""
        if self.done:
            return
        self.done = True
        try:
            self.slurm._call(self.slurm.controller, "saltutil.kill_job", [self.jid], timeout=10)
        except Exception as exc:  # noqa: BLE001 - the call ends at its own deadline anyway
            log.info("could not stop slurm.%s (job %s) on %s: %s", self.fun, self.jid, self.slurm.controller, exc)


class LocalActions(_Local):
    """State runs on minions through the local client."""

    def highstate(self, minion, timeout):
        ret = self._call_one_waiting(minion, "state.highstate", kwarg={"queue": True}, timeout=timeout)
        return summarize(ret, [minion])

    def apply(self, target, sls, timeout, tgt_type="glob"):
        # queue=True: concurrent joins wait for each other's run on the
        # controller instead of failing with "state.apply is running".
        ret = self._call(target, "state.apply", [sls], kwarg={"queue": True}, timeout=timeout,
                         tgt_type=tgt_type)
        return summarize(ret, [target] if tgt_type == "glob" and "*" not in target else None)

    def restart_slurmd(self, minion, timeout):
        """Kill and start ``minion``'s slurmd so it registers with slurmctld now.

        For idle nodes only (a warm-pool node coming out of a freeze): a
        slurmd thawed after a long freeze may wait minutes on RPC threads
        cut by the freeze before a clean stop, so it is killed, not stopped.
        A thawed minion may miss the first publish while it reconnects:
        asked again (15 s per try) until ``timeout`` seconds have passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            ret = self._call(minion, "cmd.run_all", [["pkill", "-KILL", "-x", "slurmd"]],
                             {"python_shell": False}, timeout=15)
            if _answered(ret, minion):
                break
            if time.monotonic() >= deadline:
                raise VclusterError(f"{minion}'s minion did not answer within {timeout:g} s after the thaw")
        left = max(15, int(deadline - time.monotonic()))
        ret = self._call(minion, "service.restart", ["slurmd"], timeout=left)
        data = (ret.get(minion) or {}).get("ret")
        if data is not True:
            raise VclusterError(f"slurmd did not start again on {minion}: {data or 'no answer'}")
        return True

    def probe(self, names, timeout):
        """``{name: seconds slurmd has run, or None (no slurmd)}`` for the minions that answer within ``timeout``.

        One ``ps -o etimes= -C slurmd`` on each minion (procps, as pgrep);
        with several slurmd processes the oldest counts (the daemon, not a
        child it forked a moment ago).
        """
        ret = self._call(list(names), "cmd.run_all", [["ps", "-o", "etimes=", "-C", "slurmd"]],
                         {"python_shell": False}, timeout=max(1, int(timeout)), tgt_type="list")
        out = {}
        for name, answer in ret.items():
            data = answer.get("ret") if isinstance(answer, dict) else answer
            if isinstance(data, dict) and "retcode" in data:
                out[name] = slurmd_age(data)
        return out

    def present(self, names):
        """Those of ``names`` whose minion holds a connection to the master's publish port.

        Salt's own ``connected_ids`` (what ``manage.present`` uses): the
        master's TCP connections matched against cached grains; no job is
        published, nothing reaches a minion.
        """
        import salt.utils.minions  # pylint: disable=import-outside-toplevel

        return set(salt.utils.minions.CkMinions(self.opts).connected_ids(subset=list(names)))


def slurmd_age(result):
    """Seconds the oldest slurmd has run, from ``ps -o etimes= -C slurmd``'s ``cmd.run_all`` result; None: none runs."""
    ages = [int(word) for word in str(result.get("stdout") or "").split() if word.isdigit()]
    if result.get("retcode") != 0 or not ages:
        return None
    return max(ages)


def _answered(ret, minion):
    """Whether ``minion`` really returned in a full_return ``LocalClient.cmd`` result.

    ``cmd`` lists every targeted minion: one that did not answer comes as
    ``False`` or as ``{"out": "no_return", "ret": "Minion did not return..."}``.
    """
    out = ret.get(minion)
    return isinstance(out, dict) and out.get("out") != "no_return" and isinstance(out.get("ret"), dict)


def summarize(ret, expected=None):
    """``(ok, one sentence)`` from a full_return state run of one or more minions."""
    if expected:
        missing = [m for m in expected if m not in ret]
        if missing:
            return False, f"{', '.join(missing)} did not return in time"
    if not ret:
        return False, "no minion returned"
    for minion, out in sorted(ret.items()):
        data = out.get("ret") if isinstance(out, dict) else out
        if isinstance(data, list):
            return False, f"{minion}: {data[0]}"
        if not isinstance(data, dict):
            return False, f"{minion}: {data}"
        failed = [(v.get("__run_num__", 0), k, v) for k, v in data.items()
                  if isinstance(v, dict) and v.get("result") is False]
        if failed:
            _, key, value = sorted(failed)[0]
            sid = key.split("_|-")[1] if "_|-" in key else key
            comment = str(value.get("comment", "")).strip().splitlines()
            return False, f"{minion}: state {sid} failed: {comment[0] if comment else 'no comment'}"
    return True, f"{len(ret)} minion(s) succeeded"


class MasterEvents:
    """The master event bus, plus the runner's progress events."""

    def __init__(self, opts, jid_event=None):
        self.opts = opts
        self.jid_event = jid_event
        # One connection to the master's event bus for all of a call's
        # events: a connection per event cost 20-250 ms (the more, the
        # busier the master), and an expand of 32 fires 96 node events.
        self._bus = None
        self._bus_lock = threading.Lock()

    def fire(self, tag, data):
        """Fire one event; a bus that refuses twice is logged, never fatal.

        Events tell; the registry decides. An expand must not fail (and
        roll back) because the master's event publisher dropped a
        connection for a moment: the second try opens a new connection.
        """
        for attempt in (1, 2):
            try:
                with self._bus_lock:
                    if self._bus is None:
                        self._bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"],
                                                                      listen=False)
                    self._bus.fire_event(data, tag)
                return True
            except Exception as exc:  # noqa: BLE001 - see above
                log.warning("event %s not fired (try %d of 2): %s: %s", tag, attempt, type(exc).__name__, exc)
                self.close()
        return False

    def close(self):
        """Close the event bus connection (the next event opens a new one)."""
        with self._bus_lock:
            bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.destroy()
            except Exception:  # noqa: BLE001 - closing must not mask results
                log.debug("closing the event bus failed", exc_info=True)

    def progress(self, message, **data):
        log.info("%s", message)
        if self.jid_event is not None:
            try:
                self.jid_event.fire_event(dict(data, message=message), "progress")
            except Exception as exc:  # noqa: BLE001 - progress is for the admin's eyes only
                log.warning("progress event not fired: %s: %s", type(exc).__name__, exc)

    @contextlib.contextmanager
    def watch(self, tag):
        """Listen for events starting with ``tag`` from now on; yields ``wait(seconds) -> bool``.

        Open it before the action whose event you expect, so that an event
        fired while the action runs is not missed.
        """
        with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True) as bus:
            def wait(seconds):
                deadline = time.monotonic() + seconds
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    if bus.get_event(wait=left, tag=tag, match_type="startswith"):
                        return True

            yield wait

    def wait_for_nodes(self, registry, names, done_states, deadline):
        """Wake on each ``vcluster/node/`` event; re-check the registry then."""
        with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True) as bus:
            while True:
                pending = [n for n in names if (registry.get(n) or _Gone).state not in done_states]
                if not pending:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                # The registry is the truth; the event only wakes us early.
                # A bounded wait also covers a node failed by another process.
                bus.get_event(wait=min(left, 5), tag="vcluster/node/", match_type="startswith")


class _Gone:
    state = "released"
