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
        if fun == "key.master_key_str":
            return {"local": {"master.pub": "PUBLIC"}}
        return {"minions": ["a"]}


def keys_with(wheel, monkeypatch):
    monkeypatch.setattr(saltlink, "WHEEL_BACKOFF", 0.01)
    keys = saltlink.WheelKeys.__new__(saltlink.WheelKeys)
    keys.wheel = wheel
    keys._master_pub = None
    return keys


def test_a_passing_failure_is_retried(monkeypatch):
    wheel = FlakyWheel(failures=2)
    assert keys_with(wheel, monkeypatch).master_pub() == "PUBLIC"
    assert wheel.calls == ["key.master_key_str"] * 3


def test_master_key_is_asked_once_per_client(monkeypatch):
    wheel = FlakyWheel(failures=0)
    keys = keys_with(wheel, monkeypatch)
    assert [keys.master_pub() for _ in range(4)] == ["PUBLIC"] * 4
    assert wheel.calls == ["key.master_key_str"]


def test_a_lasting_failure_is_one_sentence_without_key_material(monkeypatch):
    wheel = FlakyWheel(failures=5)
    with pytest.raises(VclusterError) as info:
        keys_with(wheel, monkeypatch).accepted()
    assert len(wheel.calls) == saltlink.WHEEL_ATTEMPTS
    message = str(info.value)
    assert message.startswith("the master's key store did not complete key.list")
    assert "\n" not in message and "PRIVATE" not in message


class ListingWheel:
    def __init__(self, listing):
        self.listing = listing
        self.calls = []

    def cmd(self, fun, arg, kwarg, print_event=False):
        self.calls.append((fun, list(arg)))
        if fun == "key.list_all":
            return self.listing
        if fun == "key.gen_accept":
            return {"priv": "PRIVATE", "pub": "PUBLIC"}
        return {}


def test_all_keys_carry_their_state(monkeypatch):
    wheel = ListingWheel({"minions": ["a", "b"], "minions_pre": ["c", "a"], "minions_rejected": ["d"],
                          "minions_denied": ["e"]})
    assert keys_with(wheel, monkeypatch).all() == {
        "a": "accepted", "b": "accepted", "c": "pending", "d": "rejected", "e": "denied"}


def test_gen_accept_clears_a_stale_key_of_any_state_first(monkeypatch):
    wheel = ListingWheel({})
    keys_with(wheel, monkeypatch).gen_accept("vn1")
    assert wheel.calls == [("key.delete", ["vn1"]), ("key.gen_accept", ["vn1"])]


def test_gen_accept_of_a_name_known_to_have_no_key_skips_the_delete(monkeypatch):
    wheel = ListingWheel({})
    keys_with(wheel, monkeypatch).gen_accept("vn1", clear=False)
    assert wheel.calls == [("key.gen_accept", ["vn1"])]
