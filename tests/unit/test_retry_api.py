"""vcluster.retry's helpers for provider API calls: api_call and the proof that a request never left.

The failures are real ones from the kernel and requests on loopback: a port
nothing listens on, a server that closes the connection after reading the
request, a unix socket path with no socket.
"""

import socket
import threading

import pytest
import requests

from vcluster import retry


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def failure(func):
    try:
        func()
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc
    raise AssertionError("no failure")


def test_refused_and_missing_socket_never_left():
    refused = failure(lambda: requests.post(f"http://127.0.0.1:{free_port()}/RPC2", data=b"x", timeout=5))
    assert isinstance(refused, requests.ConnectionError) and retry.unsent(refused)
    import pylxd.exceptions  # pylxd's unix-socket adapter, as the LXD provider uses it

    missing = failure(lambda: pylxd.Client(endpoint="http+unix://%2Fnonexistent%2Flxd.socket"))
    assert isinstance(missing, pylxd.exceptions.ClientConnectionFailed) and retry.unsent(missing)


def test_a_connection_closed_after_the_request_went_out_may_have_reached_the_server():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def read_and_close():
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)

        thread = threading.Thread(target=read_and_close)
        thread.start()
        reset = failure(lambda: requests.post(f"http://127.0.0.1:{listener.getsockname()[1]}/RPC2",
                                              data=b"x", timeout=5))
        thread.join()
    assert isinstance(reset, requests.ConnectionError) and not retry.unsent(reset)
    assert not retry.unsent(requests.ReadTimeout("read timed out"))


def test_api_call_retries_what_the_provider_calls_transient_with_the_default_backoff():
    tries, waits = [], []

    def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("reset")
        return "ok"

    assert retry.api_call(flaky, lambda exc: isinstance(exc, ConnectionError), wait=waits.append) == "ok"
    assert waits == [retry.API_RETRY_BACKOFF, 2 * retry.API_RETRY_BACKOFF]


def test_api_call_raises_an_answer_at_once_and_the_last_transient_error_after_all_tries():
    tries, waits = [], []

    def refused():
        tries.append(1)
        raise LookupError("not found")

    with pytest.raises(LookupError):
        retry.api_call(refused, lambda exc: isinstance(exc, ConnectionError), wait=waits.append)
    assert len(tries) == 1 and waits == []

    def down():
        tries.append(1)
        raise ConnectionError(f"down {len(tries)}")

    tries.clear()
    with pytest.raises(ConnectionError, match="down 3"):
        retry.api_call(down, lambda exc: True, retries=2, wait=waits.append)
    assert len(tries) == 3 and waits == [0.5, 1.0]
