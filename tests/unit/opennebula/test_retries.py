"""Retries of OpenNebula calls over a real loopback XML-RPC server.

The simulator (no OpenNebula can run here) is served by python's
``xmlrpc.server`` on 127.0.0.1 with a request handler that fails chosen
requests at the HTTP level, as a busy oned or the proxy in front of it
does: an HTTP 503 or 500 without running the call, a connection closed
before the call ran, or closed after it ran (the answer lost). The provider
talks to it through its own transport (``requests``) and pyone. The wait
between two tries is recorded instead of slept (its length is what is
checked); for a refused connection the server is started during that wait.
"""

import contextlib
import socket
import threading
import xmlrpc.client
import xmlrpc.server

import pytest

from tests.unit.opennebula.common import spec
from tests.unit.opennebula.simulator import OneSimulator
from vcluster.errors import ProviderError, ProviderStateError
from vcluster.providers.base import Status
from vcluster.providers.opennebula import OpenNebulaProvider

SIM_SESSION = "vcluster:vcluster-password"


class Faults:
    """Which requests fail, and how; every method name the server received, in order."""

    def __init__(self):
        self.plan = []
        self.seen = []
        self._lock = threading.Lock()

    def fail(self, n, method, how):
        """The next ``n`` calls of ``method`` fail: "503", "500", "drop" (not run), "lost" (run, answer
        lost), "ran-500" (run, then answered 500)."""
        with self._lock:
            self.plan.append([n, method, how])

    def take(self, method):
        with self._lock:
            self.seen.append(method)
            for fault in self.plan:
                if fault[0] > 0 and fault[1] == method:
                    fault[0] -= 1
                    return fault[2]
        return None

    def count(self, method):
        return self.seen.count(method)

    def handler(self):
        faults = self

        class Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
            def decode_request_content(self, data):
                data = super().decode_request_content(data)
                if data is None:
                    return None
                how = faults.take(xmlrpc.client.loads(data)[1])
                if how is None:
                    return data
                if how == "ran-500":  # e.g. a proxy whose upstream ran the call, then failed
                    self.server._marshaled_dispatch(data, None, self.path)
                if how in ("500", "503", "ran-500"):
                    self.send_response(int(how[-3:]))
                    self.send_header("Content-length", "0")
                    self.end_headers()
                    return None
                if how == "lost":  # oned ran the call; its answer never arrives
                    self.server._marshaled_dispatch(data, None, self.path)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None

            def finish(self):
                with contextlib.suppress(OSError):  # the connection it shut down
                    super().finish()

        return Handler


@pytest.fixture
def sim():
    return OneSimulator(steps_per_query=1)


@pytest.fixture
def faults():
    return Faults()


@pytest.fixture
def server(sim, faults):
    with sim.serve(handler=faults.handler()) as url:
        yield url


def make_provider(url):
    provider = OpenNebulaProvider("sim", {"endpoint": url, "session": SIM_SESSION, "timeout": 5})
    waits = []
    provider._one.wait = waits.append
    return provider, waits


@pytest.fixture
def provider(server):
    prov, waits = make_provider(server)
    prov.waits = waits
    yield prov
    prov.close()


def free_port():
    """A loopback port nothing listens on (connecting is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- transient: tried again --------------------------------------------------------------------

def test_a_read_is_tried_again_after_503_a_dropped_connection_and_500(provider, faults):
    faults.fail(1, "one.vmpool.infoextended", "503")
    faults.fail(1, "one.vmpool.infoextended", "drop")
    faults.fail(1, "one.vmpool.infoextended", "500")
    assert provider.list("demo") == []
    assert faults.count("one.vmpool.infoextended") == 4
    assert provider.waits == [0.5, 1.0, 2.0]  # the defaults OpenStack's api_retry_* have
    assert provider.calls == {"list": 1, "retry": 3}


def test_a_create_answered_503_is_sent_again_and_makes_one_vm(provider, faults, sim):
    faults.fail(1, "one.template.instantiate", "503")
    [inst] = provider.create([spec("vnode001", "10.99.0.20", template=7)])
    assert faults.count("one.template.instantiate") == 2
    assert [(vm.id, vm.name) for vm in sim.vms.values()] == [(int(inst.id), "vnode001")]
    assert provider.calls == {"create": 1, "retry": 1}


def test_a_refused_connection_is_tried_again_even_for_a_create(sim, faults):
    """Nothing listens until the first wait: the refused instantiate never reached oned."""
    port = free_port()
    provider, waits = make_provider(f"http://127.0.0.1:{port}/RPC2")
    with contextlib.ExitStack() as stack:
        provider._one.wait = lambda seconds: (waits.append(seconds),
                                              stack.enter_context(sim.serve(port, faults.handler())))
        [inst] = provider.create([spec("vnode001", "10.99.0.20", template=7)])
        assert waits == [0.5]
        assert faults.count("one.template.instantiate") == 1  # the first try never arrived
        assert list(sim.vms) == [int(inst.id)]
        provider.close()


def test_after_the_last_try_one_sentence_names_the_call_and_the_vm(provider, faults, sim):
    [inst] = provider.create([spec("vnode001", "10.99.0.20", template=7)])
    provider.wait([inst.id], [Status.RUNNING], 1e12, interval=0, cluster="demo")
    faults.fail(99, "one.vm.action", "503")
    with pytest.raises(ProviderError) as err:
        provider.suspend(inst.id)
    assert str(err.value) == (f"OpenNebula at {provider.endpoint} answered HTTP 503 to one.vm.action "
                              f"of VM {inst.id} after 5 tries")
    assert faults.count("one.vm.action") == 5
    assert provider.waits == [0.5, 1.0, 2.0, 4.0]


# -- not sent again ---------------------------------------------------------------------------

def test_a_create_whose_answer_was_lost_is_not_sent_again_and_is_swept(provider, faults, sim):
    """oned made the VM but the connection closed before its id came back: no second instantiate
    (it would make a second VM); the create's cleanup finds the VM by its tags and terminates it."""
    faults.fail(1, "one.template.instantiate", "lost")
    with pytest.raises(ProviderError) as err:
        provider.create([spec("vnode001", "10.99.0.20", template=7)])
    [vm] = sim.vms.values()
    assert str(err.value) == (f"cannot reach OpenNebula at {provider.endpoint} for one.template.instantiate "
                              f"of VM vnode001 (ConnectionError); terminated VM {vm.id} created by this request")
    assert faults.count("one.template.instantiate") == 1
    sim.tick(2)  # terminate-hard was taken: the VM leaves through its clean-up states
    assert vm.state == "DONE"
    assert "retry" not in provider.calls and provider.waits == []


def test_a_create_answered_500_after_it_ran_is_not_sent_again_and_is_swept(provider, faults, sim):
    faults.fail(1, "one.template.instantiate", "ran-500")
    with pytest.raises(ProviderError) as err:
        provider.create([spec("vnode001", "10.99.0.20", template=7)])
    [vm] = sim.vms.values()
    assert str(err.value) == (f"OpenNebula at {provider.endpoint} answered HTTP 500 to one.template.instantiate "
                              f"of VM vnode001; terminated VM {vm.id} created by this request")
    assert faults.count("one.template.instantiate") == 1 and provider.waits == []
    sim.tick(2)
    assert vm.state == "DONE"


def test_an_action_answered_500_is_not_sent_again(provider, faults):
    """A 500 may come after the action ran: a second try could act twice."""
    [inst] = provider.create([spec("vnode001", "10.99.0.20", template=7)])
    provider.wait([inst.id], [Status.RUNNING], 1e12, interval=0, cluster="demo")
    faults.fail(1, "one.vm.action", "500")
    with pytest.raises(ProviderError, match=f"answered HTTP 500 to one.vm.action of VM {inst.id}$"):
        provider.suspend(inst.id)
    assert faults.count("one.vm.action") == 1 and provider.waits == []


def test_opennebulas_own_refusals_are_asked_once(provider, faults):
    assert provider.get("999") is None  # NO_EXISTS
    assert faults.count("one.vm.info") == 1
    [inst] = provider.create([spec("vnode001", "10.99.0.20", template=7)])
    with pytest.raises(ProviderStateError):  # ACTION: the VM is not RUNNING yet
        provider._call("suspend", "vm.action", "suspend", int(inst.id))
    assert faults.count("one.vm.action") == 1
    bad = OpenNebulaProvider("sim", {"endpoint": provider._one.endpoint, "session": "vcluster:wrong",
                                     "timeout": 5})
    with pytest.raises(ProviderError, match="authentication failed"):
        bad.hosts()
    assert faults.count("one.hostpool.info") == 1
    bad.close()
    assert "retry" not in provider.calls and provider.waits == []
