"""Slurm through the controller minion's ``slurm`` execution module (master side).

:class:`ControllerSlurm` is the :class:`~vcluster.context.SlurmController`
of a runner call: every method is one call of a function of
``_modules/slurm.py`` on the controller's minion through the local client
(no Slurm command line is built here). :class:`PendingCall` is a call
started now and collected later (the join's early wait).
"""

import logging
import time

import salt.client

from vcluster.errors import SlurmError

log = logging.getLogger(__name__)


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

    def release_when_listening(self, name, jobs, reason, wait):
        """``slurm.release_when_listening`` on the controller: probe and release in one call."""
        return self._slurm("release_when_listening", name, jobs=",".join(str(j) for j in jobs), reason=reason,
                           wait=wait, call_timeout=int(wait) + 30)

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
