"""Replay (and record) OpenNebula XML-RPC exchanges for the provider tests.

No OpenNebula server can run on this machine, so the provider is tested
against *cassettes*: the exact XML-RPC calls it must make, in order, and the
answers OpenNebula documents for them. A cassette is a JSON file in
``data/``::

    {"exchanges": [
      {"call": "one.vm.action", "params": ["suspend", 40],
       "reply": [true, 40, 0]},
      {"call": "one.vmpool.infoextended", "params": [-3, -1, -1, -1],
       "reply": [true, {"file": "vmpool_demo.xml"}, 0]},
      {"call": "one.template.instantiate",
       "params": [7, "vnode001", false, {"xml_file": "extra_vnode001.xml"}, false],
       "reply": [true, 40, 0]},
      {"call": "one.vm.info", "params": [40], "raise": "timeout"}
    ]}

* ``params`` leave out the session string (the first XML-RPC parameter);
  :class:`ReplayTransport` checks it separately against the test's
  credentials, so no cassette holds a credential, not even a hash of one.
* ``{"file": name}`` is the body of a response kept as an XML file;
  ``{"xml_file": name}`` matches a parameter that is an XML document (child
  order and indentation aside; an element whose text is ``*ANY*`` matches
  any text); ``"<any>"`` matches any parameter.
* ``raise`` simulates the transport failing (``timeout``, ``refused``).

The transport sits under pyone: requests and responses go through the real
XML-RPC marshalling, pyone's response handling and its XML bindings.

Why not pyone's own ``pyone.tester.OneServerTester``: it keys recordings by
an MD5 of all parameters *including the session string* (a fixture would
carry a hash of the credential), stores failures as pickled tracebacks, and
writes gzip'ed JSON nobody can review. :class:`RecordingTransport` records in
the format above instead, with the session left out, from any endpoint.
"""

import json
import pathlib
import xml.etree.ElementTree as ET
import xmlrpc.client

import requests

DATA = pathlib.Path(__file__).resolve().parent / "data"
ANY = "<any>"


class CassetteError(AssertionError):
    """The provider made a call the cassette does not expect."""


def _same_xml(expected, actual):
    """Trees equal up to child order and whitespace; text ``*ANY*`` matches any text."""
    if expected.tag != actual.tag:
        return False
    etext, atext = (expected.text or "").strip(), (actual.text or "").strip()
    if etext != "*ANY*" and etext != atext:
        return False
    echildren = sorted(expected, key=lambda e: e.tag)
    achildren = sorted(actual, key=lambda e: e.tag)
    return len(echildren) == len(achildren) and all(_same_xml(e, a) for e, a in zip(echildren, achildren, strict=True))


def _load(name):
    return (DATA / name).read_text(encoding="utf-8")


def _resolve(value):
    if isinstance(value, dict) and set(value) == {"file"}:
        return _load(value["file"])
    return value


def _matches(expected, actual):
    if expected == ANY:
        return True
    if isinstance(expected, dict) and set(expected) == {"xml_file"}:
        return isinstance(actual, str) and _same_xml(ET.fromstring(_load(expected["xml_file"])), ET.fromstring(actual))
    if isinstance(expected, list):
        return isinstance(actual, (list, tuple)) and len(expected) == len(actual) and all(
            _matches(e, a) for e, a in zip(expected, actual, strict=True)
        )
    return expected == actual and type(expected) is type(actual)


class ReplayTransport(xmlrpc.client.Transport):
    """Answers each XML-RPC request with the next exchange of a cassette."""

    def __init__(self, cassette, session):
        super().__init__()
        doc = json.loads(_load(cassette)) if isinstance(cassette, str) else cassette
        self.name = cassette if isinstance(cassette, str) else "<inline>"
        self.pending = list(doc["exchanges"])
        self.session = session
        self.seen = []

    def request(self, host, handler, request_body, verbose=False):
        params, method = xmlrpc.client.loads(request_body)
        session, params = params[0], list(params[1:])
        if session != self.session:
            raise CassetteError(f"{method} was sent with an unexpected session string")
        if not self.pending:
            raise CassetteError(f"{self.name}: unexpected extra call {method}{tuple(params)}")
        exchange = self.pending.pop(0)
        self.seen.append((method, params))
        if exchange["call"] != method or not _matches(exchange.get("params", ANY), params):
            raise CassetteError(
                f"{self.name}: expected {exchange['call']}{tuple(exchange.get('params', []))}, "
                f"got {method}{tuple(_short(p) for p in params)}"
            )
        failure = exchange.get("raise")
        if failure == "timeout":
            raise requests.ReadTimeout("read timed out")
        if failure == "refused":
            raise requests.ConnectionError("connection refused")
        reply = [_resolve(v) for v in exchange["reply"]]
        body = xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=False)
        return xmlrpc.client.loads(body)[0]

    def assert_done(self):
        """Every exchange of the cassette was used."""
        if self.pending:
            left = ", ".join(e["call"] for e in self.pending)
            raise CassetteError(f"{self.name}: calls not made: {left}")


class RecordingTransport(xmlrpc.client.Transport):
    """Wraps a real transport and keeps every exchange, session left out.

    Use it against a real OpenNebula (or the simulator) to make a cassette::

        rec = RecordingTransport(provider._one.transport)
        provider._one.server._ServerProxy__transport = rec
        ...  # drive the provider
        rec.save(path, session)
    """

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.exchanges = []

    def request(self, host, handler, request_body, verbose=False):
        params, method = xmlrpc.client.loads(request_body)
        entry = {"call": method, "params": list(params[1:])}
        try:
            result = self.inner.request(host, handler, request_body, verbose)
        except requests.Timeout:
            entry["raise"] = "timeout"
            self.exchanges.append(entry)
            raise
        except requests.ConnectionError:
            entry["raise"] = "refused"
            self.exchanges.append(entry)
            raise
        entry["reply"] = list(result[0])
        self.exchanges.append(entry)
        return result

    def cassette(self, session):
        """The recording as a cassette dict; fails if the session leaked into it."""
        doc = {"exchanges": self.exchanges}
        text = json.dumps(doc)
        for secret in (session, session.split(":", 1)[-1]):
            if secret and secret in text:
                raise AssertionError("the recording contains the credential; refusing to keep it")
        return doc

    def save(self, path, session):
        pathlib.Path(path).write_text(json.dumps(self.cassette(session), indent=1) + "\n", encoding="utf-8")


def _short(value):
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
