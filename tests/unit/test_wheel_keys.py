"""WheelKeys: bounded retries around the master's wheel client.

The wheel client needs a running master; here a stand-in that fails a given
number of times replaces it (the integration tests use the real one).
"""

import pytest

from vcluster import saltlink
from vcluster.errors import VclusterError


class FlakyWheel:
    def __init__(self, failures):
        self.failures = failures
        self.calls = []

    def cmd(self, fun, arg, kwarg, print_event=False):
        self.calls.append(fun)
        if self.failures:
            self.failures -= 1
            raise UnboundLocalError("cannot access local variable 'proc_fn'")
        return {"priv": "PRIVATE", "pub": "PUBLIC"} if fun == "key.gen_accept" else {"minions": ["a"]}


def keys_with(wheel, monkeypatch):
    monkeypatch.setattr(saltlink, "WHEEL_BACKOFF", 0.01)
    keys = saltlink.WheelKeys.__new__(saltlink.WheelKeys)
    keys.wheel = wheel
    return keys


def test_a_passing_failure_is_retried(monkeypatch):
    wheel = FlakyWheel(failures=2)
    assert keys_with(wheel, monkeypatch).gen_accept("vn1")["pub"] == "PUBLIC"
    assert wheel.calls == ["key.gen_accept"] * 3


def test_a_lasting_failure_is_one_sentence_without_key_material(monkeypatch):
    wheel = FlakyWheel(failures=5)
    with pytest.raises(VclusterError) as info:
        keys_with(wheel, monkeypatch).accepted()
    assert len(wheel.calls) == saltlink.WHEEL_ATTEMPTS
    message = str(info.value)
    assert message.startswith("the master's key store did not complete key.list")
    assert "\n" not in message and "PRIVATE" not in message
