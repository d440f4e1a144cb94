"""What the engine needs from its surroundings, as small interfaces.

The engine is plain Python; the Salt runner supplies Salt-backed
implementations of these (keys through the wheel client, Slurm through the
controller's minion, events on the master bus). Tests may supply real
alternatives where Salt itself is not under test.
"""

import dataclasses
import logging
import typing

from vcluster import providers as _providers

log = logging.getLogger(__name__)


class KeyStore(typing.Protocol):
    """Minion keys on the master."""

    def gen_accept(self, name: str, clear: bool = True) -> dict:
        """Generate a key pair for ``name``, accept its public key, return both.

        ``clear=False`` skips deleting an older key of ``name`` first (the
        caller knows there is none). Expand calls it from several threads at
        once, for different names.
        """

    def all(self) -> dict:
        """Every key the master holds: ``{name: accepted|pending|rejected|denied}``."""

    def delete(self, name: str) -> None:
        """Delete ``name``'s key in any state; absent keys are fine."""

    def accepted(self) -> set:
        """Ids of all accepted minion keys."""

    def master_pub(self) -> str:
        """The master's public key (PEM)."""


class SlurmController(typing.Protocol):
    """The slurmctld host, reached through its minion's ``slurm`` module."""

    def nodes(self) -> list: ...
    def jobs(self, nodes=None) -> list: ...
    def update_node(self, name, state, reason=None) -> None: ...

    def set_instance(self, name, instance_id, instance_type, extra=None) -> dict:
        """Slurm's InstanceId/InstanceType/Extra of ``name``: ``{"set": False, "comment"}`` before 23.11."""
    def delete_node(self, name) -> None: ...
    def requeue(self, job_id) -> None: ...
    def wait_node_state(self, name, states, timeout) -> list: ...

    def watch_node_state(self, name, states, timeout, interval=0.5):
        """Start ``wait_node_state`` now, polling every ``interval`` seconds.

        Returns an object with ``result()`` (its return, or SlurmError) and
        ``cancel()`` (a no-op once collected).
        """
    def reconfigure(self) -> None: ...
    def hold_node(self, name, jobs, reason) -> dict: ...
    def release_node(self, name, jobs, reason) -> dict: ...

    def liveness_scan(self, names, wait) -> dict:
        """One controller call: Slurm's view of ``names`` and a SYN probe of their slurmds.

        ``{"nodes": [Node as dict], "slurmd": {name: verdict}}``, verdicts
        from :func:`vcluster.slurm.reach.probe` or ``skipped``.
        """


class SaltActions(typing.Protocol):
    """State runs on minions."""

    def highstate(self, minion: str, timeout: int) -> tuple:
        """Run the highstate; return ``(ok, one-sentence summary)``."""

    def apply(self, target: str, sls: str, timeout: int, tgt_type: str = "glob") -> tuple:
        """Apply ``sls`` to ``target``; return ``(ok, summary)``."""

    def probe(self, names: list, timeout: float) -> dict:
        """``{name: seconds slurmd has run, or None (no slurmd)}`` for the minions that answer within ``timeout``."""

    def restart_slurmd(self, minion: str, timeout: float) -> bool:
        """Kill and start an idle node's slurmd so that it registers now."""

    def present(self, names) -> set:
        """Those of ``names`` whose minion is connected to the master (no job published)."""


class Events(typing.Protocol):
    """The master event bus."""

    def fire(self, tag: str, data: dict) -> None: ...

    def wait_for_nodes(self, registry, names, done_states, deadline) -> None:
        """Return when every node in ``names`` is in ``done_states`` or at ``deadline``."""

    def progress(self, message: str, **data) -> None: ...

    def watch(self, tag: str):
        """Context manager: listen for ``tag`` from now on; yields ``wait(seconds) -> bool``."""


@dataclasses.dataclass
class Context:
    """Everything one engine call works with."""

    policy: typing.Any
    registry: typing.Any
    keys: KeyStore
    slurm: SlurmController
    salt: SaltActions
    events: Events
    master_ports: tuple = (4506, 4505)  # ret_port, publish_port
    actor: str = "vcluster"
    _providers: dict = dataclasses.field(default_factory=dict)

    def provider(self, name):
        """The provider instance named ``name`` in policy (created once)."""
        if name not in self._providers:
            conf = self.policy.providers[name]
            self._providers[name] = _providers.get(name, conf.driver, conf.options)
        return self._providers[name]

    def node_event(self, node, state, **data):
        """Fire ``vcluster/node/<name>/<state>`` (never with secrets)."""
        self.events.fire(f"vcluster/node/{node}/{state}", dict(data, node=node, state=state))

    def close(self):
        """Release provider connections and Salt clients."""
        closables = list(self._providers.values()) + [self.keys, self.slurm, self.salt, self.events]
        for thing in closables:
            close = getattr(thing, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:  # noqa: BLE001 - closing must not mask results
                log.debug("closing %r failed", thing, exc_info=True)
