"""Talking to LXD: the pylxd client, one request or background operation at a time, LXD errors mapped.

:class:`LxdApi` is mixed into :class:`~vcluster.providers.lxd.provider.LxdProvider`
(it reads the provider's ``config``, ``endpoint``, ``project``,
``timeout``, ``_client``, ``_lock`` and ``calls``). Importing this module
attaches the filter that keeps urllib3's pool-overflow warning for the
local socket off the console.
"""

import logging

import pylxd
import pylxd.exceptions
import requests

from vcluster.errors import ProviderError, ProviderStateError, ProviderTimeout

_STATE_WORDS = ("running", "stopped", "frozen", "not running", "already")


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
                try:
                    self._client = pylxd.Client(**kwargs)
                except (pylxd.exceptions.ClientConnectionFailed, requests.RequestException) as exc:
                    where = self.endpoint or "the local unix socket"
                    raise ProviderError(f"cannot reach the LXD server at {where}: {exc}") from exc
            return self._client

    @property
    def server_name(self):
        """Name of the LXD server (its hostname when not clustered)."""
        return self.client.host_info.get("environment", {}).get("server_name") or "lxd"

    def _request(self, kind, method, node, what, state=False, **kwargs):
        """One API request, counted under ``kind``; LXD errors -> vcluster errors.

        ``state`` marks a state change, whose refusals become ProviderStateError.
        """
        self._count(kind)
        try:
            response = getattr(node, method)(**kwargs)
        except pylxd.exceptions.NotFound as exc:
            raise Missing(f"{what}: {exc}") from exc
        except pylxd.exceptions.LXDAPIException as exc:
            raise translate(what, str(exc), state) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"{what}: LXD did not answer ({exc})") from exc
        if response.status_code == 202:
            return self._wait_operation(response.json()["operation"], what, state)
        return response.json().get("metadata")

    def _wait_operation(self, operation, what, state=False):
        """Block on an LXD background operation until it ends or times out."""
        op_id = operation.rstrip("/").rsplit("/", 1)[-1]
        node = self.client.api.operations[op_id].wait
        self._count("operation")
        try:
            meta = node.get(params={"timeout": int(self.timeout)}).json()["metadata"]
        except pylxd.exceptions.LXDAPIException as exc:
            raise translate(what, str(exc), state) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"{what}: LXD did not answer ({exc})") from exc
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
