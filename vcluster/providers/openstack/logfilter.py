"""keystoneauth's debug log without HTTP bodies (they may hold user data: minion keys).

Imported by the package: the filter is installed once, before any session
logs.
"""

import logging


class NoBodies(logging.Filter):
    """Keep HTTP bodies out of keystoneauth's debug log.

    At ``debug`` keystoneauth logs every request body (``REQ: curl ... -d``)
    and response body (``RESP BODY:``). A server create sends the nodes'
    user data, which holds their minion private keys, and Nova returns it
    to admins in every server GET: seen in the master's log at debug. The
    lines stay (method, URL, status, headers, with keystoneauth's own token
    masking); the bodies are replaced by a note.
    """

    def filter(self, record):
        msg = record.getMessage()
        if record.name.endswith(".body") or msg.startswith("RESP BODY:"):
            record.msg, record.args = "RESP BODY: <not logged (vcluster: may hold user data)>", ()
        elif " -d '" in msg:
            record.msg, record.args = msg[:msg.index(" -d '")] + " -d <not logged (vcluster: may hold user data)>", ()
        return True


for _name in ("keystoneauth.session", "keystoneauth.session.request", "keystoneauth.session.body"):
    logging.getLogger(_name).addFilter(NoBodies())
