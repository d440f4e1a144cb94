"""A tiny stand-in for the Neutron API, enough for Nova with ``networks='none'``.

Nova asks Neutron about ports, networks, security groups, extensions and
quotas even for servers without networks (``GET /servers/{id}`` looks up
security groups; computes list ports on resume, shelve, migrate, delete).
This app answers every collection GET with an empty collection, a quota GET
with generous limits, and anything else with a Neutron-style 404, and logs
each request so a run shows what Nova asked for. It holds no state.
"""

import json
import sys

QUOTA = {
    "network": -1, "subnet": -1, "port": -1, "router": -1, "floatingip": -1,
    "security_group": -1, "security_group_rule": -1,
}


def _reply(start_response, status, body):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def application(environ, start_response):
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/").rstrip("/")
    print(f"fake-neutron {method} {path}?{environ.get('QUERY_STRING', '')}", file=sys.stderr, flush=True)
    if path.endswith(".json"):
        path = path[: -len(".json")]
    parts = [p for p in path.split("/") if p]
    if method != "GET":
        return _reply(start_response, "404 Not Found", {"NeutronError": {
            "type": "NotImplemented", "message": f"the testbed's Neutron stand-in only answers GET, not {method}",
            "detail": ""}})
    if not parts:
        return _reply(start_response, "200 OK", {"versions": [
            {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": "http://127.0.0.1:9696/v2.0/"}]}]})
    if parts[0] == "v2.0":
        parts = parts[1:]
    if not parts:
        return _reply(start_response, "200 OK", {"resources": []})
    if parts[0] == "quotas" and len(parts) == 2:
        return _reply(start_response, "200 OK", {"quota": QUOTA})
    if len(parts) == 1:
        return _reply(start_response, "200 OK", {parts[0].replace("-", "_"): []})
    return _reply(start_response, "404 Not Found", {"NeutronError": {
        "type": "NotFound", "message": f"{'/'.join(parts)} does not exist in the testbed", "detail": ""}})
