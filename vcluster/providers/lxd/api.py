"""Talking to LXD: the pylxd client, one request or background operation at a time, LXD errors mapped.

:class:`LxdApi` is mixed into :class:`~vcluster.providers.lxd.provider.LxdProvider`
(it reads the provider's ``config``, ``endpoint``, ``project``,
``timeout``, ``_client``, ``_lock``, ``calls``, the retry settings and
``_wait``). Importing this module attaches the filter that keeps urllib3's
pool-overflow warning for the local socket off the console.

Every request goes through :func:`vcluster.retry.api_call`. Transient for
LXD: no connection (refused, socket missing, reset, timeout) and HTTP 503,
LXD's answer while it starts or shuts down ("LXD is shutting down"), which
it gives before acting. A request that changes something (not a GET) is
sent again only after a 503 or when it never left (refused, no socket):
after a reset it may have reached LXD. Not found, already exists, bad
requests and failed operations are LXD's answer and never retried.
"""

import logging

import pylxd
import pylxd.exceptions
import requests

from vcluster import retry
from vcluster.errors import ProviderError, ProviderStateError, ProviderTimeout

log = logging.getLogger(__name__)

_STATE_WORDS = ("running", "stopped", "frozen", "not running", "already")
#: HTTP status of LXD's refusal while it is not ready or shutting down (it did nothing).
UNAVAILABLE = 503


class _QuietUnixPoolOverflow(logging.Filter):
    """Drop urllib3's "Connection pool is full" for pylxd's unix socket.

    pylxd keeps one pooled connection to the local socket (host
    ``localhost``); our parallel create and delete threads open more, which
    urllib3 closes after use and reports at WARNING, on every ``salt-run``
    console. Harmless, so not shown; other hosts' pools still report.
    """

    def filter(self, record):
        return not (str(record.msg).startswith("Connection pool is full")
                    and record.args and record.args[0] == "localhost")


logging.getLogger("urllib3.connectionpool").addFilter(_QuietUnixPoolOverflow())


class Missing(ProviderError):
    """Internal: the LXD object does not exist (HTTP 404)."""


def transient(exc, idempotent):
    """True when another try of an LXD request may succeed (see the module doc)."""
    if isinstance(exc, pylxd.exceptions.ClientConnectionFailed):  # the client's first GET /1.0
        return isinstance(exc.__context__, requests.ConnectionError) or not str(exc)
    if isinstance(exc, pylxd.exceptions.NotFound):
        return False
    if isinstance(exc, pylxd.exceptions.LXDAPIException):
        return getattr(exc.response, "status_code", None) == UNAVAILABLE
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return idempotent or retry.unsent(exc)
    return False


def translate(what, message, state=False):
    """An LXD error message -> the vcluster exception that fits it."""
    lowered = message.lower()
    if state and any(word in lowered for word in _STATE_WORDS):
        return ProviderStateError(f"{what}: {message}")
    return ProviderError(f"{what}: {message}")


class LxdApi:
    """The client and its requests: every LXD call of the provider goes through :meth:`_request`."""

    def _count(self, kind):
        with self._lock:
            self.calls[kind] += 1

    def _retried(self, what, func, idempotent, tries):
        """``func()`` through :func:`vcluster.retry.api_call`; ``tries`` (a list) gets one entry per try."""

        def once():
            tries.append(1)
            return func()

        def on_retry(attempt, exc, delay):
            self._count("retry")
            log.info("LXD: %s failed (%s), retry %d in %.1f s", what, str(exc) or type(exc).__name__, attempt, delay)

        return retry.api_call(once, lambda exc: transient(exc, idempotent), self.retries, self.retry_backoff,
                              self.retry_deadline, on_retry=on_retry, wait=self._wait)

    @property
    def client(self):
        """The pylxd client, connected on first use."""
        with self._lock:
            if self._client is None:
                self.calls["connect"] += 1
                kwargs = {"endpoint": self.endpoint, "project": self.project}
                if self.config.get("cert") and self.config.get("key"):
                    kwargs["cert"] = (self.config["cert"], self.config["key"])
                if self.config.get("verify") is not None:
                    kwargs["verify"] = self.config["verify"]
                tries = []
                try:
                    self._client = self._retried("connect", lambda: pylxd.Client(**kwargs), True, tries)
                except (pylxd.exceptions.ClientConnectionFailed, requests.RequestException) as exc:
                    where = self.endpoint or "the local unix socket"
                    reason = str(exc) or "it answered with an error"
                    raise ProviderError(f"cannot reach the LXD server at {where}: {reason}{_tried(tries)}") from exc
            return self._client

    @property
    def server_name(self):
        """Name of the LXD server (its hostname when not clustered)."""
        return self.client.host_info.get("environment", {}).get("server_name") or "lxd"

    def _request(self, kind, method, node, what, state=False, accepted=None, idempotent=None, **kwargs):
        """One API request, counted under ``kind`` (each try); LXD errors -> vcluster errors.

        Retried as the module doc says (``idempotent``: a request that may be
        sent twice, by default a GET). ``state`` marks a state change, whose
        refusals become ProviderStateError. ``accepted()`` runs once LXD has
        taken a background operation, before the wait for it.
        """

        def send():
            self._count(kind)
            return getattr(node, method)(**kwargs)

        tries = []
        try:
            response = self._retried(what, send, method == "get" if idempotent is None else idempotent, tries)
        except pylxd.exceptions.NotFound as exc:
            raise Missing(f"{what}: {exc}") from exc
        except pylxd.exceptions.LXDAPIException as exc:
            raise translate(what, f"{exc}{_tried(tries)}", state) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"{what}: LXD did not answer ({exc}){_tried(tries)}") from exc
        if response.status_code == 202:
            if accepted is not None:
                accepted()
            return self._wait_operation(response.json()["operation"], what, state)
        return response.json().get("metadata")

    def _wait_operation(self, operation, what, state=False):
        """Block on an LXD background operation until it ends or times out."""
        op_id = operation.rstrip("/").rsplit("/", 1)[-1]
        node = self.client.api.operations[op_id].wait

        def wait():
            self._count("operation")
            return node.get(params={"timeout": int(self.timeout)}).json()["metadata"]

        tries = []
        try:
            meta = self._retried(what, wait, True, tries)
        except pylxd.exceptions.LXDAPIException as exc:
            raise translate(what, f"{exc}{_tried(tries)}", state) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"{what}: LXD did not answer ({exc}){_tried(tries)}") from exc
        if meta.get("status") == "Success":
            return meta.get("metadata")
        if meta.get("status") in ("Running", "Pending"):
            raise ProviderTimeout(f"{what}: LXD operation still running after {self.timeout:.0f} s")
        raise translate(what, meta.get("err") or meta.get("status", "unknown failure"), state)

    def _set_state(self, name, action, what, **extra):
        node = self.client.api.instances[name].state
        body = {"action": action, "timeout": int(self.timeout), **extra}
        return self._request(action, "put", node, what, state=True, json=body)

    def close(self):
        """Drop the HTTP session."""
        if self._client is not None:
            self._client.api.session.close()
            self._client = None


def _tried(tries):
    """`` after N tries`` when a request was sent more than once."""
    return f" after {len(tries)} tries" if len(tries) > 1 else ""
