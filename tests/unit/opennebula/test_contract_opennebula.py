"""The provider contract, run by the OpenNebula provider against a simulator.

No OpenNebula server can run on this machine, so the contract talks over
real HTTP (the provider's own transport, ``requests``, pyone) to
:class:`tests.unit.opennebula.simulator.OneSimulator` served on loopback.
The simulator keeps VM state and enforces OpenNebula's state rules as the
documentation describes them; it is not OpenNebula. Simulated time moves
when VMs are read, so nothing here sleeps to let a VM boot.

The last tests check the simulator's own refusals (the provider's local
state checks bypassed) and that a recording of a simulator session replays
to the same answers through the cassette transport the unit tests use.
"""

import base64
import shlex
import time

import pytest

from tests.provider_contract import ProviderContract, SpecFactory
from tests.unit.opennebula.common import FAKE_KEY, spec
from tests.unit.opennebula.replay import RecordingTransport, ReplayTransport
from tests.unit.opennebula.simulator import OneSimulator
from vcluster.errors import ProviderError, ProviderStateError, QuotaExceeded
from vcluster.providers.base import Status
from vcluster.providers.opennebula import OpenNebulaProvider

SIM_SESSION = "vcluster:vcluster-password"


def boot_file_from_context(sim, instance_id, path):
    """What the VM's start script (CONTEXT/START_SCRIPT_BASE64) writes to ``path``."""
    context = sim.vms[int(instance_id)].template["CONTEXT"]
    script = base64.b64decode(context["START_SCRIPT_BASE64"]).decode()
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:2] == ["put", path]:
            return base64.b64decode(words[3]).decode()
    return None


class TestOpenNebulaContract(ProviderContract):
    """The shared contract over loopback HTTP against the simulator."""

    @pytest.fixture(scope="class")
    @classmethod
    def simulator(cls):
        return OneSimulator(steps_per_query=2)

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint(cls, simulator):
        with simulator.serve() as url:
            yield url

    @pytest.fixture
    def provider(self, endpoint, tmp_path):
        auth = tmp_path / "one_auth"
        auth.write_text(SIM_SESSION + "\n")
        auth.chmod(0o600)
        provider = OpenNebulaProvider("sim", {"endpoint": endpoint, "credentials_file": str(auth), "timeout": 10})
        yield provider
        provider.close()

    @pytest.fixture(scope="class")
    @classmethod
    def make_specs(cls):
        return SpecFactory("vcluster-node", (f"10.99.0.{n}" for n in range(20, 240)), network="vcnet")

    @pytest.fixture
    def read_boot_file(self, simulator):
        return lambda instance, boot_file: boot_file_from_context(simulator, instance.id, boot_file.path)

    @pytest.fixture
    def contract_timeout(self):
        return 30


# -- life cycle scenarios beyond the contract ---------------------------------------------

@pytest.fixture
def sim():
    return OneSimulator(steps_per_query=1, vms_quota=3,
                        hosts=(("hv1", 4, 8192), ("hv2", 4, 8192), ("hv3", 1, 1024)))


@pytest.fixture
def sim_provider(sim):
    return OpenNebulaProvider("sim", {"endpoint": "http://sim.invalid:2633/RPC2", "session": SIM_SESSION},
                              transport=sim.transport())


def _wait(provider, ids, *statuses):
    return provider.wait(ids, statuses, time.monotonic() + 10, interval=0, cluster="demo")


def test_poster_scenario_suspend_move_resume(sim_provider, sim):
    """Suspend a node, move it cold to another host, resume it there."""
    made = sim_provider.create([spec("vnode001", "10.99.0.20", template=7), spec("vnode002", "10.99.0.21")])
    ids = [i.id for i in made]
    running = _wait(sim_provider, ids, "running")
    assert {i.address for i in running} == {"10.99.0.20", "10.99.0.21"}
    assert boot_file_from_context(sim, ids[0], "/etc/salt/pki/minion/minion.pem") == FAKE_KEY
    first = running[0]
    sim_provider.suspend(first.id)
    [suspended] = _wait(sim_provider, [first.id], "suspended")
    target = "hv2" if suspended.host == "hv1" else "hv1"
    sim_provider.migrate(first.id, target)  # live requested, but the guest is saved: cold move
    [moved] = _wait(sim_provider, [first.id], "suspended")
    assert moved.host == target
    sim_provider.resume(first.id)
    [back] = _wait(sim_provider, [first.id], "running")
    assert back.host == target
    sim_provider.migrate(first.id, suspended.host)  # and live back
    assert sim_provider.get(first.id).status is Status.MIGRATING
    [home] = _wait(sim_provider, [first.id], "running")
    assert home.host == suspended.host
    sim_provider.delete(ids)
    assert sim_provider.get(ids[0]) is not None  # terminating (SHUTDOWN/EPILOG) ...
    _wait(sim_provider, ids, "deleted")
    sim_provider.list("demo")
    assert sim_provider.list("demo") == []  # ... then DONE, out of the pool


def test_boot_failure_is_error_with_reason_and_blocks_actions(sim_provider, sim):
    sim.fail_next_boot("Error deploying virtual machine: could not create domain")
    [inst] = sim_provider.create([spec("vnode001", "10.99.0.20", template=7)])
    [failed] = _wait(sim_provider, [inst.id], "running")  # ERROR ends the wait early
    assert failed.status is Status.ERROR and "could not create domain" in failed.fault
    with pytest.raises(ProviderError, match="failed in BOOT_FAILURE: .*could not create domain"):
        sim_provider.suspend(inst.id)
    sim_provider.delete([inst.id])  # a failed VM can always be deleted
    _wait(sim_provider, [inst.id], "deleted")


def test_quota_and_all_or_nothing_against_the_simulator(sim_provider, sim):
    specs = [spec(f"vnode00{n}", f"10.99.0.{20 + n}", template=7) for n in range(4)]
    with pytest.raises(QuotaExceeded, match="limit of 3 reached for VMS quota") as err:
        sim_provider.create(specs)
    assert "terminated VM 100, 101, 102" in str(err.value)
    # PENDING VMs are terminated at once (no host to clean up): DONE, out of the pool
    assert [vm.state for vm in sim.vms.values()] == ["DONE"] * 3
    assert sim_provider.list("demo") == []


def test_simulator_enforces_state_rules_when_local_checks_are_bypassed(sim_provider, sim):
    [inst] = sim_provider.create([spec("vnode001", "10.99.0.20", template=7)])
    # straight after instantiate the VM is PENDING: the server refuses suspend
    with pytest.raises(ProviderStateError, match="not available for state PENDING"):
        sim_provider._call("suspend", "vm.action", "suspend", int(inst.id))
    with pytest.raises(ProviderStateError, match="Migrate action is not available for state PENDING"):
        sim_provider._call("migrate", "vm.migrate", int(inst.id), 1, True, True, -1, 0)
    _wait(sim_provider, [inst.id], "running")
    with pytest.raises(ProviderStateError, match="Not enough capacity"):
        sim_provider.migrate(inst.id, "hv3")  # 2 vCPU do not fit a 1-CPU host


def test_wrong_password_against_the_simulator(sim):
    provider = OpenNebulaProvider("sim", {"endpoint": "http://sim.invalid:2633/RPC2", "session": "vcluster:nope"},
                                  transport=sim.transport())
    with pytest.raises(ProviderError, match="rejected the credentials") as err:
        provider.hosts()
    assert "nope" not in str(err.value)


def test_a_recorded_simulator_session_replays_identically(sim):
    """RecordingTransport output is a valid cassette: record, replay, same answers."""
    recorder = RecordingTransport(sim.transport())
    live = OpenNebulaProvider("sim", {"endpoint": "http://sim.invalid:2633/RPC2", "session": SIM_SESSION},
                              transport=recorder)
    script = [
        lambda p: [i.id for i in p.create([spec("vnode001", "10.99.0.20", template=7)])],
        lambda p: [(i.id, i.status, i.host) for i in _wait(p, ["100"], "running")],
        lambda p: p.suspend("100"),
        lambda p: [(h.name, h.cpus_free, h.memory_free_mb) for h in p.hosts()],
        lambda p: p.delete(["100"]),
    ]
    recorded = [step(live) for step in script]
    cassette = recorder.cassette(SIM_SESSION)
    assert "vcluster-password" not in str(cassette)
    replayer = ReplayTransport(cassette, SIM_SESSION)
    again = OpenNebulaProvider("sim", {"endpoint": "http://sim.invalid:2633/RPC2", "session": SIM_SESSION},
                               transport=replayer)
    assert [step(again) for step in script] == recorded
    replayer.assert_done()
    assert recorded[1] == [("100", Status.RUNNING, "hv1")]


def test_http_errors_over_the_real_transport(sim, tmp_path):
    """A wrong endpoint path gets HTTP 404 from the server: a ProviderError naming it."""
    with sim.serve() as url:
        wrong = url.replace("/RPC2", "/nope")
        provider = OpenNebulaProvider("sim", {"endpoint": wrong, "session": SIM_SESSION, "timeout": 5})
        with pytest.raises(ProviderError, match="answered HTTP 404 to one.hostpool.info"):
            provider.hosts()
        right = OpenNebulaProvider("sim", {"endpoint": url, "session": SIM_SESSION, "timeout": 5})
        assert [h.name for h in right.hosts()] == ["hv1", "hv2", "hv3"]
        right.close()
        provider.close()
