"""vcluster.slurm.states: state words and the matching rule."""

import pytest

from vcluster.slurm import states


@pytest.mark.parametrize("raw, flags, words, dynamic", [
    ("IDLE+DYNAMIC_NORM", (), ["IDLE"], True),
    ("IDLE+DRAIN+DYNAMIC_NORM", (), ["IDLE", "DRAIN"], True),
    ("DOWN*+DRAIN", (), ["DOWN", "NOT_RESPONDING", "DRAIN"], False),
    ("idle~", (), ["IDLE", "POWERED_DOWN"], False),
    ("idle", ["DRAIN", "DYNAMIC_NORM"], ["IDLE", "DRAIN"], True),
    ("", (), [], False),
])
def test_split(raw, flags, words, dynamic):
    assert states.split(raw, flags) == (words, dynamic)


UP = ("IDLE", "MIXED", "ALLOCATED", "COMPLETING")


@pytest.mark.parametrize("words, wanted, result", [
    (["IDLE"], UP, True),
    (["IDLE", "DRAIN"], UP, False),
    (["IDLE", "DRAIN"], UP + ("DRAIN", "DOWN"), True),
    (["IDLE", "NOT_RESPONDING"], UP, False),
    (["IDLE", "COMPLETING"], UP, True),
    (["DOWN", "NOT_RESPONDING"], ("DOWN",), True),
    (["DOWN", "DRAIN"], ("DRAINED",), True),
    (["IDLE", "DRAIN"], "drained", True),
    (["MIXED", "DRAIN"], "DRAINED", False),
    (["MIXED", "DRAIN"], "DRAINING", True),
    (["FUTURE"], "IDLE,FUTURE", True),
    (["ALLOCATED"], "IDLE", False),
    ([], "IDLE", False),
    ([], "ABSENT", True),
    (["IDLE"], "ABSENT", False),
])
def test_matches(words, wanted, result):
    assert states.matches(words, wanted) is result


def test_wanted_words():
    assert states.wanted_words("idle, drain+down") == ("IDLE", "DRAIN", "DOWN")


def test_usable():
    assert states.usable(["MIXED"]) and not states.usable(["MIXED", "DRAIN"]) and not states.usable(["DOWN"])
