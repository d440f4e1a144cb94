"""What the libvirt provider does inside a guest, through the QEMU guest agent.

Run a command (``guest-exec``), reset the guest minion's connections to the
master after a resume (restart the minion where that is not enough), read
and step the guest clock. A mixin of
:class:`vcluster.providers.libvirt.LibvirtProvider`: it uses the
provider's ``_call``, ``_domain``, ``minion_restart_timeout`` and
``clock_sync_timeout``.
"""

import base64
import json
import logging
import time

import libvirt
import libvirt_qemu

from vcluster.bootstrap import MINION_CONF
from vcluster.errors import ProviderError

log = logging.getLogger(__name__)

#: Reset (``ss -K``) the guest's TCP connections to the master's ports as
#: the node's minion config names them (Salt's defaults otherwise); one
#: output line per connection reset.
RESET_MINION_CONNECTIONS = (
    "/bin/sh", "-c",
    f'ret=$(sed -n "s/^master_port: *//p" {MINION_CONF} 2>/dev/null); '
    f'pub=$(sed -n "s/^publish_port: *//p" {MINION_CONF} 2>/dev/null); '
    'exec ss -K -H -tn state connected "( dport = :${ret:-4506} or dport = :${pub:-4505} )"')


#: guest clock offsets (seconds) a resume leaves as they are: about what
#: the agent's read right after a restore can tell (its round trip)
CLOCK_TOLERANCE = 0.05
#: steps of the guest clock a resume tries before it takes the offset as it is
CLOCK_STEPS = 3
#: seconds one ``date -s`` through the agent may take before the resume
#: falls back to ``guest-set-time``
CLOCK_EXEC_WAIT = 3.0


class GuestAgent:
    """Guest-agent calls of a libvirt provider (see the module docstring)."""

    def _guest_exec(self, dom, argv, deadline, what, every=0.2):
        """Run ``argv`` in the guest through the agent; ``(exit code, output)`` or raise ProviderError at ``deadline``.

        ``every``: seconds between the agent's exec-status polls.
        """
        command = {"execute": "guest-exec",
                   "arguments": {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}}
        while True:  # the agent answers a moment after a restore
            try:
                pid = json.loads(self._call("agent", what, libvirt_qemu.qemuAgentCommand, dom,
                                            json.dumps(command), 10, 0))["return"]["pid"]
                break
            except ProviderError as exc:
                if time.monotonic() >= deadline:
                    raise ProviderError(f"the guest agent did not run {' '.join(argv)}: {exc}") from exc
                time.sleep(0.2)
        status = {"execute": "guest-exec-status", "arguments": {"pid": pid}}
        while True:
            got = json.loads(self._call("agent", what, libvirt_qemu.qemuAgentCommand, dom,
                                        json.dumps(status), 10, 0))["return"]
            if got.get("exited"):
                out = b"".join(base64.b64decode(got.get(k) or "") for k in ("out-data", "err-data"))
                return got.get("exitcode", got.get("signal")), out.decode(errors="replace").strip()
            if time.monotonic() >= deadline:
                raise ProviderError(f"{' '.join(argv)} did not end in the guest within the deadline")
            time.sleep(every)

    def _exec_reported(self, instance_id, argv, what, every=0.2):
        """Run ``argv`` in ``instance_id``'s guest within ``minion_restart_timeout``; never raises.

        Returns ``({"ok", "seconds", "error"}, output)``: ``error`` says why
        ``ok`` is false (the agent did not run it, or it exited non-zero).
        """
        start = time.monotonic()
        out = ""
        try:
            dom = self._domain(instance_id, what)
            code, out = self._guest_exec(dom, argv, start + self.minion_restart_timeout, what, every=every)
            error = None if code == 0 else f"exited {code}: {out[-300:]}"
        except ProviderError as exc:
            error = str(exc)
        if error:
            log.warning("%s: %s", what, error)
        return {"ok": error is None, "seconds": round(time.monotonic() - start, 2), "error": error}, out

    def reconnect_minion(self, instance_id):
        """Reset the guest minion's TCP connections to the master (``ss -K`` through the agent) after a resume.

        They come back looking open to the guest while the master's side
        ended (a save: the master restarted, or its kernel gave up on the
        vanished peer) or sits in retransmission backoff (a publish sent
        while the guest was away, saved or paused, is retried 30-120 s
        later; after a paused move it went to the source's port). A minion
        restored 30 s later sent nothing on them and heard no publish in the
        90 s measured (its own keepalive fires after 300 s of the guest's
        clock, which stood still). Reset, the guest kernel sends the master
        a reset too, ZeroMQ reopens them within the minion's ``recon_*``
        delay and the minion re-authenticates. Jobs hold no such
        connection: slurmd talks to slurmctld one connection per RPC.
        Returns ``{"ok", "seconds", "connections", "error"}``
        (``connections``: how many were reset).

        CLI Example (what the runner does after the node's jobs resume)::

            salt-run vcluster.resume nodes=vnode-3
        """
        report, out = self._exec_reported(instance_id, RESET_MINION_CONNECTIONS,
                                          f"reset the minion connections of {instance_id}", every=0.05)
        report["connections"] = len([line for line in out.splitlines() if line.strip()]) if report["ok"] else None
        return report

    def restart_minion(self, instance_id):
        """Have systemd restart the guest's salt-minion (``--no-block``: queued, not waited for).

        The runner's fallback when a resumed node's minion stays silent
        after :meth:`reconnect_minion` (a re-authentication can die in
        Salt 3008.3: ``AsyncAuth._authenticate`` InvalidStateError). The
        restart takes 8-25 s under TCG. Returns ``{"ok", "seconds",
        "error"}``: ``seconds`` is how long queueing it took, within
        ``minion_restart_timeout``.

        CLI Example (what the runner does)::

            salt-run vcluster.resume nodes=vnode-3
        """
        return self._exec_reported(instance_id, ("/bin/systemctl", "--no-block", "restart", "salt-minion"),
                                   f"restart the minion of {instance_id}")[0]

    def clock_offset(self, instance_id):
        """Guest clock minus host clock in seconds, read through the guest agent."""
        dom = self._domain(instance_id, f"read the clock of {instance_id}")
        return self._offset(dom)

    @staticmethod
    def _offset(dom):
        """Guest minus host clock, the host's read halfway through the agent's round trip."""
        sent = time.time()
        got = dom.getTime(0)
        back = time.time()
        return round(got["seconds"] + got["nseconds"] / 1e9 - (sent + back) / 2, 3)

    def _first_offset(self, dom, what, deadline):
        """The guest clock's offset once the agent answers (a moment after a restore), or None at ``deadline``.

        The first answers after a restore take up to 0.1 s: read again (up
        to three reads) until one's round trip is within
        :data:`CLOCK_TOLERANCE`, so that the step that follows is off by less.
        """
        def settled():
            for _ in range(3):
                sent = time.monotonic()
                offset = self._offset(dom)
                if time.monotonic() - sent <= CLOCK_TOLERANCE / 2:
                    break
            return offset

        return _once_answered(settled, what, deadline, every=0.05)  # an agent not yet reconnected fails at once

    def _step_clock(self, dom, what):
        """Step the guest clock to the host's: ``(offset before, offset after)`` in seconds, or ``(None, None)``.

        The step is relative, ``date --set='<-offset> seconds'`` run through
        the agent: the guest's ``date`` reads its own clock and sets it in
        the same instant, so the seconds the command takes to reach the
        guest and start do not count (a host time handed over would be late
        by 0.1-0.3 s under TCG). The agent's own ``guest-set-time`` is
        not used: it sets the clock, then waits for ``hwclock -w`` to write
        the RTC on a second boundary (0.9 s of every restore under TCG, with
        the node's jobs waiting). Up to :data:`CLOCK_STEPS` steps, until the
        offset is within :data:`CLOCK_TOLERANCE`; a guest whose agent runs
        no command gets ``guest-set-time``. The agent is polled until
        ``clock_sync_timeout``.
        """
        deadline = time.monotonic() + self.clock_sync_timeout
        before = after = self._first_offset(dom, what, deadline)
        if before is None:
            return None, None
        for _ in range(CLOCK_STEPS):
            if abs(after) <= CLOCK_TOLERANCE:
                break
            try:
                code, out = self._guest_exec(dom, ("/usr/bin/date", f"--set={-after:+.6f} seconds"),
                                             min(deadline, time.monotonic() + CLOCK_EXEC_WAIT), what, every=0.01)
            except ProviderError as exc:
                code, out = None, str(exc)
            if code != 0:
                log.info("%s: the guest agent did not step the clock with date (%s); asking guest-set-time",
                         what, out[-200:])
                return before, self._set_time(dom, what, deadline)
            try:
                after = self._offset(dom)
            except libvirt.libvirtError as exc:
                log.warning("%s: guest clock stepped, but the guest agent did not say by how much: %s", what, exc)
                return before, None
        return before, after

    def _set_time(self, dom, what, deadline):
        """The agent's ``guest-set-time`` (it waits for ``hwclock -w``); the offset after, or None."""
        def set_time():
            now = time.time()
            self._call("clock", what, dom.setTime, {"seconds": int(now), "nseconds": int(now % 1 * 1e9)}, 0)
            return self._offset(dom)

        return _once_answered(set_time, what, deadline, every=0.2)


def _once_answered(ask, what, deadline, every):
    """``ask()`` once the guest agent answers it, polled every ``every`` s; None (logged) at ``deadline``."""
    while True:
        try:
            return ask()
        except (libvirt.libvirtError, ProviderError) as exc:
            if time.monotonic() >= deadline:
                log.warning("%s: guest clock not stepped, the guest agent did not answer: %s", what, exc)
                return None
            time.sleep(every)
