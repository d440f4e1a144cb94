"""The libvirt provider's guest clock step after a resume, against a simulated guest agent.

Why simulated: the real one is exercised by tests/integration/test_provider_libvirt.py
and test_vm_nodes.py (QEMU guests, the offset after each resume under 1 s); here the
paths a real guest rarely takes: a first read slow to come back, an agent that runs no
command (``guest-set-time`` instead), an agent that never answers.
"""

import re
import time

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is not installed (extra `libvirt`)")

import libvirt  # noqa: E402

from vcluster.errors import ProviderError  # noqa: E402
from vcluster.providers import libvirt_guest  # noqa: E402


class Guest:
    """A guest clock ``offset`` seconds off the host's, read and set through its agent."""

    def __init__(self, offset, agent_after=0, exec_ok=True):
        self.offset = offset
        self.agent_after = agent_after  # reads that fail before the agent answers
        self.exec_ok = exec_ok
        self.calls = []

    def getTime(self, flags):  # noqa: N802 - libvirt's name
        self.calls.append("getTime")
        if self.agent_after > 0:
            self.agent_after -= 1
            raise libvirt.libvirtError("Guest agent is not responding")
        now = time.time() + self.offset
        return {"seconds": int(now), "nseconds": int(now % 1 * 1e9)}

    def setTime(self, when, flags):  # noqa: N802
        self.calls.append("setTime")
        self.offset = when["seconds"] + when["nseconds"] / 1e9 - time.time()


class Agent(libvirt_guest.GuestAgent):
    clock_sync_timeout = 2.0

    def __init__(self):
        self.execs = []

    def _call(self, op, what, func, *args):
        return func(*args)

    def _guest_exec(self, dom, argv, deadline, what, every=0.2):
        self.execs.append(argv)
        if not dom.exec_ok:
            raise ProviderError("the guest agent did not run /usr/bin/date: command guest-exec has been disabled")
        step = re.fullmatch(r"--set=([+-]\d+\.\d{6}) seconds", argv[1])
        assert argv[0] == "/usr/bin/date" and step, argv
        time.sleep(0.01)  # the command's way into the guest: a relative step does not care
        dom.offset += float(step.group(1))
        return 0, ""


def test_a_relative_step_through_date_brings_the_clock_within_the_tolerance():
    guest, agent = Guest(-331.2, agent_after=2), Agent()
    before, after = agent._step_clock(guest, "resume vn1")
    assert before == pytest.approx(-331.2, abs=0.01) and abs(after) <= libvirt_guest.CLOCK_TOLERANCE
    assert len(agent.execs) == 1 and agent.execs[0][1].startswith("--set=+331.2")
    assert "setTime" not in guest.calls  # guest-set-time waits for hwclock -w: not used


def test_a_clock_already_right_is_not_stepped():
    guest, agent = Guest(0.01), Agent()
    assert agent._step_clock(guest, "resume vn1") == (pytest.approx(0.01, abs=0.01), pytest.approx(0.01, abs=0.01))
    assert agent.execs == []


def test_an_agent_that_runs_no_command_gets_guest_set_time():
    guest, agent = Guest(64.9, exec_ok=False), Agent()
    before, after = agent._step_clock(guest, "resume vn1")
    assert before == pytest.approx(64.9, abs=0.01) and abs(after) < 0.05
    assert guest.calls.count("setTime") == 1


def test_an_agent_that_never_answers_leaves_the_clock_unknown():
    guest, agent = Guest(-10, agent_after=10**6), Agent()
    assert agent._step_clock(guest, "resume vn1") == (None, None)
    assert guest.calls.count("getTime") > 1 and agent.execs == []  # polled until clock_sync_timeout, then gave up
