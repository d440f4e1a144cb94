"""The XML-RPC connection to OpenNebula: transport, credentials, and every failure mapped to a vcluster error.

:class:`Connection` is the one place that talks to OpenNebula. The session
string (``user:password``) lives in a :class:`Secret` and is scrubbed from
every message built from a server answer.
"""

import re
import urllib.parse
import xml.parsers.expat
import xmlrpc.client

import requests

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
        """Call ``one.<method>``; map every failure to a vcluster error."""
        target = self.server
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
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
                f"OpenNebula at {self.endpoint} did not answer one.{method} within {self.timeout:g} s"
            ) from None
        except (requests.ConnectionError, ConnectionError) as exc:
            raise Unreachable(
                f"cannot reach OpenNebula at {self.endpoint} ({exc.__class__.__name__})"
            ) from None
        except xmlrpc.client.ProtocolError as exc:
            raise ProviderError(
                f"OpenNebula at {self.endpoint} answered HTTP {exc.errcode} to one.{method}"
            ) from None
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

