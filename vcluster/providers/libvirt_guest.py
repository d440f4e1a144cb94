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

    def _reconnect_minion(self, dom, what):
        """``ss -K`` the guest minion's connections to the master (see ``LibvirtProvider.reconnect_minion``).

        The guest kernel aborts the sockets and sends the master a reset;
        ZeroMQ reconnects and the minion re-authenticates. Jobs hold no such
        connection: slurmd talks to slurmctld one connection per RPC.
        """
        start = time.monotonic()
        connections = None
        try:
            code, out = self._guest_exec(dom, RESET_MINION_CONNECTIONS, start + self.minion_restart_timeout, what,
                                         every=0.05)
            connections = len([line for line in out.splitlines() if line.strip()]) if code == 0 else None
            error = None if code == 0 else f"ss -K exited {code}: {out[-300:]}"
        except ProviderError as exc:
            error = str(exc)
        if error:
            log.warning("%s: the guest minion's connections to the master were not reset: %s", what, error)
        return {"ok": error is None, "seconds": round(time.monotonic() - start, 2), "connections": connections,
                "error": error}

    def restart_minion(self, instance_id):
        """Have systemd restart the guest's salt-minion (``--no-block``: queued, not waited for).

        The runner's fallback when a resumed node's minion stays silent
        after ``reconnect_minion`` (a re-authentication can die in
        Salt 3008.3: ``AsyncAuth._authenticate`` InvalidStateError). The
        restart takes 8-25 s under TCG. Returns ``{"ok", "seconds",
        "error"}``: ``seconds`` is how long queueing it took, within
        ``minion_restart_timeout``.

        CLI Example (what the runner does)::

            salt-run vcluster.resume nodes=vnode-3
        """
        what = f"restart the minion of {instance_id}"
        dom = self._domain(instance_id, what)
        start = time.monotonic()
        argv = ("/bin/systemctl", "--no-block", "restart", "salt-minion")
        try:
            code, out = self._guest_exec(dom, argv, start + self.minion_restart_timeout, what)
            error = None if code == 0 else f"systemctl restart salt-minion exited {code}: {out[-300:]}"
        except ProviderError as exc:
            error = str(exc)
        if error:
            log.warning("%s: %s", what, error)
        return {"ok": error is None, "seconds": round(time.monotonic() - start, 2), "error": error}

    def clock_offset(self, instance_id):
        """Guest clock minus host clock in seconds, read through the guest agent."""
        dom = self._domain(instance_id, f"read the clock of {instance_id}")
        return self._offset(dom)

    @staticmethod
    def _offset(dom):
        got = dom.getTime(0)
        return round(got["seconds"] + got["nseconds"] / 1e9 - time.time(), 3)

    def _step_clock(self, dom, what):
        """Step the guest clock to the host's; poll the agent until ``clock_sync_timeout``."""
        deadline = time.monotonic() + self.clock_sync_timeout
        while True:
            try:
                before = self._offset(dom)
                now = time.time()
                self._call("clock", what, dom.setTime, {"seconds": int(now), "nseconds": int(now % 1 * 1e9)}, 0)
                return before, self._offset(dom)
            except (libvirt.libvirtError, ProviderError) as exc:
                if time.monotonic() >= deadline:
                    log.warning("%s: guest clock not stepped, the guest agent did not answer: %s", what, exc)
                    return None, None
                time.sleep(0.5)
