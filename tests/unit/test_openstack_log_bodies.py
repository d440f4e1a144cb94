"""keystoneauth's debug log keeps no HTTP body once the OpenStack provider is loaded.

keystoneauth's own logging functions are called as a request and a response
through openstacksdk call them (both logger layouts: one logger with
prefixes, and split request/response/body loggers). Before this filter the
master's log at debug held the servers' user data, hence the nodes'
private keys (tests/integration/openstack/test_secrets_openstack.py).
"""

import logging

import pytest
from keystoneauth1 import session

import vcluster.providers.openstack  # noqa: F401 - installs the filter

SECRET = "c2VjcmV0LXVzZXItZGF0YS1ib2R5"


class Response:
    status_code = 202
    headers = {"content-type": "application/json"}
    text = '{"server": {"OS-EXT-SRV-ATTR:user_data": "%s"}}' % SECRET


@pytest.mark.parametrize("split", [False, True])
def test_request_and_response_bodies_are_not_logged(caplog, split):
    caplog.set_level(logging.DEBUG)
    sess = session.Session()
    logger = logging.getLogger("keystoneauth.session")
    sess._http_log_request("http://127.0.0.1:8774/v2.1/servers", method="POST",
                           json={"server": {"name": "vn1", "user_data": SECRET}},
                           headers={"Content-Type": "application/json"}, logger=logger, split_loggers=split)
    sess._http_log_response(response=Response(), logger=logger, split_loggers=split)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text
    assert "POST http://127.0.0.1:8774/v2.1/servers" in text and "[202]" in text  # the lines stay
    assert text.count("not logged (vcluster: may hold user data)") == 2
