"""The master event bus, plus the runner's progress events (master side)."""

import contextlib
import logging
import threading
import time

import salt.utils.event

log = logging.getLogger(__name__)


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
