"""LocalActions.restart_slurmd asks a thawed minion again until it really answers.

Salt's ``LocalClient.cmd(full_return=True)`` lists every targeted minion,
also one that did not answer (``{"out": "no_return", ...}`` or ``False``),
so "the minion is in the return" does not mean it answered. The client is
a recorded stand-in: these returns are the shapes Salt 3008's
``get_cli_event_returns`` and ``cmd`` produce (salt/client/__init__.py),
which a real minion cannot be made to produce on demand.
"""

import pytest

from vcluster import saltlink
from vcluster.errors import VclusterError

NO_RESPONSE = {"out": "no_return", "ret": "Minion did not return. [No response]", "retcode": 1}
PKILLED = {"ret": {"pid": 7, "retcode": 0, "stdout": "", "stderr": ""}, "retcode": 0, "jid": "1"}


class Client:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def cmd(self, target, fun, arg=(), kwarg=None, timeout=None, tgt_type="glob", full_return=False):
        self.calls.append(fun)
        return {target: self.answers.pop(0)}


def actions(answers):
    return saltlink.LocalActions({"conf_file": "/nonexistent"}, client=Client(answers))


@pytest.mark.parametrize("silent", [NO_RESPONSE, False])
def test_a_silent_minion_is_asked_again_before_the_restart(silent):
    local = actions([silent, silent, PKILLED, {"ret": True, "retcode": 0}])
    assert local.restart_slurmd("vn1", timeout=60) is True
    assert local.client.calls == ["cmd.run_all"] * 3 + ["service.restart"]


def test_a_minion_silent_until_the_deadline_fails_in_one_sentence():
    local = actions([NO_RESPONSE])
    with pytest.raises(VclusterError, match=r"^vn1's minion did not answer within 0 s after the thaw$"):
        local.restart_slurmd("vn1", timeout=0)
    assert local.client.calls == ["cmd.run_all"]


def test_a_restart_without_answer_names_the_node():
    local = actions([PKILLED, NO_RESPONSE])
    with pytest.raises(VclusterError, match="slurmd did not start again on vn1: Minion did not return"):
        local.restart_slurmd("vn1", timeout=60)
