"""Test harness: an HTTP proxy on loopback in front of the testbed's Nova API that injects 5xx.

Why this exists: the testbed's Nova is healthy; it never answers 500, 502 or
503 the way an overloaded cloud (or its load balancer) does. The provider's
retry paths must still meet the real API, so the tests point openstacksdk's
compute endpoint (``compute_endpoint_override`` in a copy of clouds.yaml) at
this proxy. Every request goes on to the real Nova unchanged, except those a
rule catches:

* ``before``: answer the status at once; Nova never sees the request (a
  load balancer refusing it);
* ``after``: pass the request to Nova, drop Nova's answer and answer the
  status instead (the request took effect, the client cannot know).

Rules match a method and a path regular expression and fire ``times`` times
(``None``: every time). Every request is recorded in :attr:`FaultProxy.seen`
as ``(method, path, status answered)``.
"""

import http.client
import http.server
import re
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authenticate", "proxy-authorization", "content-length"}


class Rule:
    def __init__(self, method, path, status, when="before", times=1):
        if when not in ("before", "after"):
            raise ValueError(f"when must be before or after, not {when!r}")
        self.method = method
        self.path = re.compile(path)
        self.status = status
        self.when = when
        self.times = times
        self.fired = 0

    def catches(self, method, path):
        if method != self.method or not self.path.search(path):
            return False
        return self.times is None or self.fired < self.times


class FaultProxy:
    """``FaultProxy(upstream_url)``; ``url`` is the endpoint to give the client."""

    def __init__(self, upstream):
        target = urllib.parse.urlsplit(upstream)
        self.upstream_host = target.hostname
        self.upstream_port = target.port or 80
        self.upstream_path = target.path.rstrip("/")
        self.rules = []
        self.seen = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.upstream_path}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def add(self, method, path, status, when="before", times=1):
        rule = Rule(method, path, status, when, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def requests(self, method, path):
        """What was seen of ``method`` on paths matching ``path``: a list of statuses answered."""
        return [status for m, p, status in self.seen if m == method and re.search(path, p)]

    def _pick(self, method, path):
        with self._lock:
            for rule in self.rules:
                if rule.catches(method, path):
                    rule.fired += 1
                    return rule
        return None

    def _handle(self, req):
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else None
        path = urllib.parse.urlsplit(req.path).path
        rule = self._pick(req.command, path)
        if rule is not None and rule.when == "before":
            return self._answer(req, rule.status, {}, b'{"message": "injected by the test proxy"}', path)
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            upstream.request(req.command, req.path, body=body, headers=headers)
            resp = upstream.getresponse()
            data = resp.read()
            status, out_headers = resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
        finally:
            upstream.close()
        if rule is not None:  # "after": Nova did it, the client hears a failure
            return self._answer(req, rule.status, {}, b'{"message": "injected by the test proxy"}', path)
        return self._answer(req, status, out_headers, data, path)

    def _answer(self, req, status, headers, data, path):
        with self._lock:
            self.seen.append((req.command, path, status))
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        if not any(k.lower() == "content-type" for k in headers):
            req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)
