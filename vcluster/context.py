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


class PendingCall(typing.Protocol):
    """A controller call started now and collected later (:meth:`SlurmController.watch_node_state`)."""

    def result(self) -> typing.Any:
        """The call's return, or SlurmError."""

    def cancel(self) -> None:
        """Stop the call on the controller; a no-op once collected."""


class SlurmController(typing.Protocol):
    """The slurmctld host, reached through its minion's ``slurm`` module (``_modules/slurm.py``).

    Nodes and jobs come back as the module returns them: dicts of
    :class:`vcluster.slurm.parse.Node` / ``Job`` fields. Every failure is a
    :class:`~vcluster.errors.SlurmError` with one sentence.
    """

    def nodes(self) -> list[dict]:
        """Every Slurm node (FUTURE ones too)."""

    def jobs(self, nodes: typing.Iterable[str] | None = None) -> list[dict]:
        """Every job Slurm lists, or those on ``nodes``."""

    def job(self, job_id: str | int) -> dict | None:
        """Job ``job_id``, or None when Slurm does not know it."""

    def update_node(self, name: str, state: str, reason: str | None = None) -> dict | None:
        """Set node ``name``'s state (RESUME, DRAIN, DOWN, POWER_DOWN_FORCE ...); the node afterwards."""

    def update_node_addr(self, name: str, address: str) -> bool:
        """Node ``name`` is now reached at ``address`` (after a migration)."""

    def set_instance(self, name: str, instance_id: str, instance_type: str, extra: str | dict | None = None) -> dict:
        """Slurm's InstanceId/InstanceType/Extra of ``name``: ``{"set": False, "comment"}`` before 23.11."""

    def delete_node(self, name: str) -> bool:
        """Remove dynamic node ``name`` from Slurm (it must run no job)."""

    def requeue(self, job_id: str | int) -> bool:
        """Kill job ``job_id`` and put it back in the queue."""

    def wait_node_state(self, name: str, states: typing.Sequence[str], timeout: float) -> list[str]:
        """Wait until node ``name`` is in one of ``states``; its state words, or SlurmError at ``timeout``."""

    def watch_node_state(self, name: str, states: typing.Sequence[str], timeout: float,
                         interval: float = 0.5) -> PendingCall:
        """Start ``wait_node_state`` now, polling every ``interval`` seconds.

        Returns an object with ``result()`` (its return, or SlurmError) and
        ``cancel()`` (a no-op once collected).
        """

    def reconfigure(self) -> bool:
        """slurmctld and every slurmd re-read slurm.conf."""

    def hold_node(self, name: str, jobs: typing.Iterable[str | int], reason: str) -> dict:
        """Drain ``name`` with ``reason`` and suspend ``jobs`` on it, all or nothing: ``{"drained", "suspended"}``."""

    def release_node(self, name: str, jobs: typing.Iterable[str | int], reason: str) -> dict:
        """Resume ``jobs`` where suspended, lift a drain with ``reason``: ``{"resumed", "undrained"}``."""

    def release_when_listening(self, name: str, jobs: typing.Iterable[str | int], reason: str,
                               wait: float) -> dict:
        """:meth:`release_node` once ``name``'s slurmd answers the controller's SYN probe, within ``wait`` s.

        ``{"slurmd": verdict, "waited": s, "released": release_node's return, or None when not listening}``.
        """

    def reserve_for_job(self, job_id: str | int, nodes: typing.Sequence[str], user: str) -> dict:
        """A reservation ``vcjob<id>`` on ``nodes`` for ``user``, the held job moved into it and released."""

    def delete_reservation(self, name: str) -> bool:
        """Delete reservation ``name``; SlurmError (Slurm's words) when it does not exist."""

    def liveness_scan(self, names: typing.Iterable[str], wait: float) -> dict:
        """One controller call: Slurm's view of ``names`` and a SYN probe of their slurmds.

        ``{"nodes": [Node as dict], "slurmd": {name: verdict}}``, verdicts
        from :func:`vcluster.slurm.reach.probe` or ``skipped``.
        """


class SaltActions(typing.Protocol):
    """State runs and small probes on minions."""

    def highstate(self, minion: str, timeout: float) -> tuple[bool, str]:
        """Run the highstate; return ``(ok, one-sentence summary)``."""

    def apply(self, target: str, sls: str, timeout: float, tgt_type: str = "glob") -> tuple[bool, str]:
        """Apply ``sls`` to ``target``; return ``(ok, summary)``."""

    def probe(self, names: typing.Iterable[str], timeout: float) -> dict[str, int | None]:
        """``{name: seconds slurmd has run, or None (no slurmd)}`` for the minions that answer within ``timeout``."""

    def restart_slurmd(self, minion: str, timeout: float) -> bool:
        """Kill and start an idle node's slurmd so that it registers now."""

    def present(self, names: typing.Iterable[str]) -> set[str]:
        """Those of ``names`` whose minion is connected to the master (no job published)."""


class Events(typing.Protocol):
    """The master event bus."""

    def fire(self, tag: str, data: dict) -> bool | None:
        """Fire one event; never raises (a bus that refuses is logged)."""

    def wait_for_nodes(self, registry: typing.Any, names: typing.Sequence[str], done_states: typing.Container[str],
                       deadline: float) -> None:
        """Return when every node in ``names`` is in ``done_states`` or at ``deadline`` (monotonic time)."""

    def progress(self, message: str, **data: typing.Any) -> None:
        """Tell the admin how a long call goes (the runner's progress events)."""

    def watch(self, tag: str) -> typing.ContextManager[typing.Callable[[float], bool]]:
        """Context manager: listen for ``tag`` from now on; yields ``wait(seconds) -> bool``."""


#: The protocols of :class:`Context`'s collaborators, by the field that holds each.
PROTOCOLS = {"keys": KeyStore, "slurm": SlurmController, "salt": SaltActions, "events": Events}


def protocol_methods(protocol: type) -> list[str]:
    """The methods ``protocol`` declares (what the library may call), in order."""
    return [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]


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
