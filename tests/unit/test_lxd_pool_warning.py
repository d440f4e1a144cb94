"""pylxd's one-connection unix-socket pool must not print a WARNING on every salt-run.

The record is emitted exactly as urllib3 emits it (connectionpool.py's
_put_conn), through urllib3's own logger with the provider's filter attached
by importing the provider.
"""

import logging

import vcluster.providers.lxd  # noqa: F401 - attaches the filter

MESSAGE = "Connection pool is full, discarding connection: %s. Connection pool size: %s"


def test_overflow_of_the_local_socket_pool_is_not_shown(caplog):
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        logging.getLogger("urllib3.connectionpool").warning(MESSAGE, "localhost", 1)
    assert not caplog.records


def test_other_hosts_and_other_warnings_still_show(caplog):
    log = logging.getLogger("urllib3.connectionpool")
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        log.warning(MESSAGE, "127.0.0.1", 10)
        log.warning("Retrying (%r) after connection broken by '%r': %s", "Retry(total=2)", "err", "/1.0")
    assert [r.getMessage() for r in caplog.records] == [
        MESSAGE % ("127.0.0.1", 10),
        "Retrying ('Retry(total=2)') after connection broken by ''err'': /1.0",
    ]
