"""The XML-RPC connection to OpenNebula: transport, credentials, and every failure mapped to a vcluster error.

:class:`Connection` is the one place that talks to OpenNebula. The session
string (``user:password``) lives in a :class:`Secret` and is scrubbed from
every message built from a server answer.

Every call goes through :func:`vcluster.retry.api_call`. Transient: the
transport's failures (no connection, a reset, a timeout, an HTTP 5xx from
oned or a proxy in front of it). A call that changes something
(``template.instantiate``, ``vm.action``, ``vm.migrate``, ``vm.recover``)
is sent again only when it never reached oned (connection refused, connect
timeout) or was answered 503 (not taken); after a reset, a read timeout or
another 5xx it may have run, and the provider's create sweeps by tags
instead. OpenNebula's own answers (authentication, authorization, quota,
NO_EXISTS, ACTION, INTERNAL) are never retried.
"""

import logging
import re
import time
import urllib.parse
import xml.parsers.expat
import xmlrpc.client

import requests

from vcluster import retry
from vcluster.errors import ProviderError, ProviderStateError, ProviderTimeout, QuotaExceeded

try:  # pragma: no cover - exercised by the import itself
    import pyone
except ImportError:  # pragma: no cover
    pyone = None

#: pool filter flags of one.*pool.info
POOL_MINE, POOL_ALL, POOL_MINE_AND_GROUPS = -3, -2, -1
#: one.vm.recover operation "delete" (works in any state; needs VM:ADMIN)
RECOVER_DELETE = 3

BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{40,}")
#: XML-RPC methods that only read: sent again after any transport failure.
READ_SUFFIXES = (".info", ".infoextended")
#: HTTP status of a server (or proxy) that did not take the request.
UNAVAILABLE = 503

log = logging.getLogger(__name__)


class NotFound(ProviderError):
    """OpenNebula answered NO_EXISTS."""


class Unreachable(ProviderError):
    """The endpoint could not be reached (the call may or may not have run)."""


class Secret:
    """Holds the session string; prints as a placeholder."""

    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def get(self):
        return self._value

    def __repr__(self):
        return "<redacted>"

    __str__ = __repr__


class Transport(xmlrpc.client.Transport):
    """XML-RPC over ``requests`` with a per-call timeout (no global socket default)."""

    def __init__(self, scheme, timeout, verify):
        super().__init__()
        self._scheme = scheme
        self._timeout = timeout
        self._verify = verify
        self._http = requests.Session()

    def request(self, host, handler, request_body, verbose=False):
        url = f"{self._scheme}://{host}/{handler.lstrip('/')}"
        resp = self._http.post(url, data=request_body, timeout=self._timeout, verify=self._verify,
                               headers={"Content-Type": "text/xml", "User-Agent": "vcluster"})
        if resp.status_code != 200:
            raise xmlrpc.client.ProtocolError(url, resp.status_code, resp.reason, {})
        parser, unmarshaller = self.getparser()
        parser.feed(resp.content)
        parser.close()
        return unmarshaller.close()

    def close(self):
        self._http.close()
        super().close()


class Connection:
    """pyone's server proxy on our :class:`Transport`, for provider ``name`` at ``endpoint``.

    ``endpoint`` is shown without any ``user:password@`` part; ``session``
    is kept in a :class:`Secret`. ``transport`` replaces the HTTP transport
    (the unit tests' recorded exchanges).
    """

    def __init__(self, name, endpoint, session, timeout, verify, transport=None):
        self.name = name
        self.endpoint = safe_url(endpoint)
        self.timeout = timeout
        # retries of one call: the product's defaults, as OpenStack's api_retry_* have
        self.retries = retry.API_RETRIES
        self.retry_deadline = retry.API_RETRY_DEADLINE
        self.retry_backoff = retry.API_RETRY_BACKOFF
        self.wait = time.sleep  # between two tries
        self.retried = 0  # retries made, over the connection's life
        self._secret = Secret(session)
        self.server = pyone.OneServer(endpoint, session=self._secret.get())
        if transport is None:
            transport = Transport(urllib.parse.urlsplit(endpoint).scheme, timeout, verify)
        # pyone builds its own transport without a per-call timeout; use ours.
        self.server._ServerProxy__transport = transport
        self.transport = transport

    def __repr__(self):
        return f"Connection(name={self.name!r}, endpoint={self.endpoint!r})"

    def call(self, method, *args):
        """Call ``one.<method>``, retried as the module doc says; map every failure to a vcluster error."""
        target = self.server
        for part in method.split("."):
            target = getattr(target, part)
        reads = method.endswith(READ_SUFFIXES)
        tries = []

        def once():
            tries.append(1)
            return target(*args)

        def on_retry(attempt, exc, delay):
            self.retried += 1
            log.info("opennebula %s: one.%s failed (%s), retry %d in %.1f s",
                     self.name, method, type(exc).__name__, attempt, delay)

        try:
            return retry.api_call(once, lambda exc: transient(exc, reads), self.retries, self.retry_backoff,
                                  self.retry_deadline, on_retry=on_retry, wait=self.wait)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped
            self._raise(exc, method, args, len(tries))

    def _raise(self, exc, method, args, tries):
        """Raise the vcluster error for ``exc``, the last failure of ``one.<method>(*args)``."""
        subject = call_subject(method, args)
        after = f" after {tries} tries" if tries > 1 else ""
        try:
            raise exc
        except pyone.OneAuthenticationException:
            raise ProviderError(
                f"OpenNebula at {self.endpoint} rejected the credentials of provider {self.name} "
                "(authentication failed)"
            ) from None
        except pyone.OneAuthorizationException as exc:
            msg = self.scrub(exc)
            if is_quota(msg):
                raise QuotaExceeded(f"OpenNebula at {self.endpoint} refused over quota: {msg}") from None
            raise ProviderError(f"OpenNebula at {self.endpoint} did not authorize one.{method}: {msg}") from None
        except pyone.OneNoExistsException as exc:
            raise NotFound(self.scrub(exc)) from None
        except pyone.OneActionException as exc:
            raise ProviderStateError(f"OpenNebula refused one.{method}: {self.scrub(exc)}") from None
        except pyone.OneException as exc:
            msg = self.scrub(exc)
            if is_quota(msg):
                raise QuotaExceeded(f"OpenNebula at {self.endpoint} refused over quota: {msg}") from None
            raise ProviderError(f"OpenNebula call one.{method} failed: {msg}") from None
        except (requests.Timeout, TimeoutError):
            raise ProviderTimeout(
                f"OpenNebula at {self.endpoint} did not answer one.{method}{subject} within {self.timeout:g} s{after}"
            ) from None
        except (requests.ConnectionError, ConnectionError) as exc:
            raise Unreachable(
                f"cannot reach OpenNebula at {self.endpoint} for one.{method}{subject}{after} "
                f"({exc.__class__.__name__})"
            ) from None
        except xmlrpc.client.ProtocolError as exc:
            error = ProviderError(
                f"OpenNebula at {self.endpoint} answered HTTP {exc.errcode} to one.{method}{subject}{after}"
            )
            error.http_status = exc.errcode
            raise error from None
        except (xmlrpc.client.Fault, xmlrpc.client.ResponseError, xml.parsers.expat.ExpatError,
                requests.RequestException, OSError, ValueError, SyntaxError, IndexError, TypeError) as exc:
            # a malformed answer (not XML-RPC, not OpenNebula's [ok, value, code])
            raise ProviderError(
                f"OpenNebula call one.{method} to {self.endpoint} failed: {self.scrub(exc)}"
            ) from None

    def scrub(self, exc):
        """A server message made safe to show: no credential, no long base64."""
        text = str(exc)
        session = self._secret.get()
        for secret in (session, session.split(":", 1)[1]):
            if secret:
                text = text.replace(secret, "<redacted>")
        text = BASE64_RUN.sub("<redacted>", text)
        return text[:500]

    def close(self):
        """Close the HTTP session."""
        close = getattr(self.transport, "close", None)
        if close:
            close()


def transient(exc, reads):
    """True when another try of an XML-RPC call may succeed (see the module doc); ``reads``: it only reads."""
    if isinstance(exc, xmlrpc.client.ProtocolError):
        return exc.errcode == UNAVAILABLE or (reads and exc.errcode >= 500)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return reads or retry.unsent(exc)
    return False


def call_subject(method, args):
    """`` of VM <id>`` (or the node a VM is made for) when the call is about one VM, else ``""``."""
    try:
        if method == "template.instantiate":
            return f" of VM {args[1]}"
        if method == "vm.action":
            return f" of VM {args[1]}"
        if method.startswith("vm."):
            return f" of VM {args[0]}"
    except IndexError:
        pass
    return ""


def is_quota(message):
    text = message.lower()
    return "quota" in text and ("limit" in text or "exceed" in text)


def safe_url(url):
    """The endpoint without any user:password@ part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts)

