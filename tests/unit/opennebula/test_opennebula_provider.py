"""OpenNebula provider against recorded XML-RPC exchanges.

Why recorded: no OpenNebula server can run on this machine (it needs oned,
its database, the scheduler and hypervisor hosts), so every test drives the
real provider, pyone and Python's XML-RPC marshalling, and only the HTTP
round trip is replaced by :class:`tests.unit.opennebula.replay.ReplayTransport`.

How the recordings were made, honestly: they were **not** captured from a
live OpenNebula. They are hand-written from OpenNebula's documentation: the
XML-RPC API reference (method signatures, the ``[success, value, code]``
reply and its error codes 0x0100 AUTHENTICATION, 0x0200 AUTHORIZATION,
0x0400 NO_EXISTS, 0x0800 ACTION, 0x2000 INTERNAL, 0x4000 ALLOCATE), the VM
states reference (STATE and LCM_STATE numbers), the VM/HOST/VMTEMPLATE XML
schemas, and the error sentences OpenNebula's request manager builds
("User couldn't be authenticated, aborting call.", "limit of N reached for
VMS quota", "This action is not available for state ..."). The XML bodies
in ``data/`` were typed from those schemas with a throwaway script, then
checked to parse with pyone's own bindings. The cassette format and the
reasons not to use pyone's ``tester.py`` are in ``replay.py``;
``RecordingTransport`` there can record real cassettes from a live
endpoint, and ``test_contract_opennebula.py`` checks a recording of the
simulator replays to the same results.
"""

import base64
import logging
import os
import socket
import subprocess
import time
import traceback
import xml.etree.ElementTree as ET

import pytest
import yaml

from tests.unit.opennebula.common import ENDPOINT, FAKE_KEY, PASSWORD, SESSION, USER, spec
from tests.unit.opennebula.replay import ReplayTransport
from vcluster.errors import PolicyError, ProviderError, ProviderStateError, ProviderTimeout, QuotaExceeded
from vcluster.providers import opennebula as one
from vcluster.providers.base import BootFile, Status
from vcluster.providers.opennebula import OpenNebulaProvider, start_script, status_of
from vcluster.providers.opennebula import states as one_states


def _secret_free(*texts):
    for text in texts:
        assert PASSWORD not in text
        assert SESSION not in text


# -- state mapping -----------------------------------------------------------------

ACTIVE = one.VM_STATES.index("ACTIVE")

STATE_TABLE = [
    # (STATE, LCM_STATE, Status)
    ("INIT", "LCM_INIT", Status.BUILDING),
    ("PENDING", "LCM_INIT", Status.BUILDING),
    ("HOLD", "LCM_INIT", Status.BUILDING),
    ("ACTIVE", "LCM_INIT", Status.BUILDING),
    ("ACTIVE", "PROLOG", Status.BUILDING),
    ("ACTIVE", "BOOT", Status.BUILDING),
    ("ACTIVE", "RUNNING", Status.RUNNING),
    ("ACTIVE", "MIGRATE", Status.MIGRATING),
    ("ACTIVE", "SAVE_MIGRATE", Status.MIGRATING),
    ("ACTIVE", "PROLOG_MIGRATE", Status.MIGRATING),
    ("ACTIVE", "BOOT_MIGRATE", Status.MIGRATING),
    ("ACTIVE", "PROLOG_MIGRATE_SUSPEND", Status.MIGRATING),
    ("ACTIVE", "SAVE_SUSPEND", Status.RUNNING),
    ("ACTIVE", "SHUTDOWN_POWEROFF", Status.RUNNING),
    ("ACTIVE", "BOOT_SUSPENDED", Status.BUILDING),
    ("ACTIVE", "BOOT_POWEROFF", Status.BUILDING),
    ("ACTIVE", "SHUTDOWN", Status.DELETED),
    ("ACTIVE", "EPILOG", Status.DELETED),
    ("ACTIVE", "CLEANUP_DELETE", Status.DELETED),
    ("ACTIVE", "UNKNOWN", Status.UNKNOWN),
    ("ACTIVE", "FAILURE", Status.ERROR),
    ("ACTIVE", "HOTPLUG_NIC", Status.RUNNING),
    ("ACTIVE", "DISK_SNAPSHOT_SUSPENDED", Status.SUSPENDED),
    ("ACTIVE", "BACKUP_POWEROFF", Status.STOPPED),
    ("STOPPED", "LCM_INIT", Status.SUSPENDED),
    ("SUSPENDED", "LCM_INIT", Status.SUSPENDED),
    ("DONE", "LCM_INIT", Status.DELETED),
    ("FAILED", "LCM_INIT", Status.ERROR),
    ("POWEROFF", "LCM_INIT", Status.STOPPED),
    ("UNDEPLOYED", "LCM_INIT", Status.SHELVED),
    ("CLONING", "LCM_INIT", Status.BUILDING),
    ("CLONING_FAILURE", "LCM_INIT", Status.ERROR),
]


@pytest.mark.parametrize("state,lcm,expected", STATE_TABLE)
def test_state_mapping_table(state, lcm, expected):
    assert status_of(one.VM_STATES.index(state), one.LCM_STATES.index(lcm)) is expected


def test_state_numbers_follow_the_documented_reference():
    # spot checks against the "Virtual Machines States Reference" table
    assert [one.VM_STATES[n] for n in (1, 3, 5, 6, 8, 9)] == [
        "PENDING", "ACTIVE", "SUSPENDED", "DONE", "POWEROFF", "UNDEPLOYED"]
    assert [one.LCM_STATES[n] for n in (1, 2, 3, 4, 14, 16, 36, 39, 61, 68, 70)] == [
        "PROLOG", "BOOT", "RUNNING", "MIGRATE", "FAILURE", "UNKNOWN", "BOOT_FAILURE",
        "PROLOG_FAILURE", "PROLOG_MIGRATE_UNKNOWN_FAILURE", "HOTPLUG_SAVEAS_STOPPED", "BACKUP_POWEROFF"]


def test_every_failure_state_is_error_and_every_lcm_state_is_mapped():
    for number, name in enumerate(one.LCM_STATES):
        status = status_of(ACTIVE, number)
        assert status is not None
        if name.endswith("FAILURE"):
            assert status is Status.ERROR, name
        else:
            assert status is not Status.ERROR, name
    assert status_of(ACTIVE, 250) is Status.UNKNOWN
    assert status_of(99, 0) is Status.UNKNOWN


# -- list ------------------------------------------------------------------------

def test_list_finds_ours_and_only_ours_in_one_call(replay):
    provider = replay("list_isolation.json")
    demo = {i.id: i for i in provider.list("demo")}
    assert provider.calls["list"] == 1
    assert set(demo) == {"40", "41", "44", "45", "46", "47", "48", "49", "50", "51", "52"}
    prod = provider.list("prod")
    assert [(i.id, i.name, i.tags["cluster"]) for i in prod] == [("42", "prod001", "prod")]
    everything = {i.id for i in provider.list_all()}
    assert "43" not in everything and {"42", "40"} <= everything
    assert provider.calls["list"] == 3

    first = demo["40"]
    assert first.status is Status.RUNNING and first.address == "10.77.0.100" and first.host == "hv1"
    assert first.tags == {"cluster": "demo", "node": "vnode001", "profile": "htc", "registry_id": "req-1"}
    assert {k: demo[k].status for k in demo} == {
        "40": Status.RUNNING, "41": Status.BUILDING, "44": Status.ERROR, "45": Status.SUSPENDED,
        "46": Status.STOPPED, "47": Status.BUILDING, "48": Status.MIGRATING, "49": Status.SUSPENDED,
        "50": Status.UNKNOWN, "51": Status.SHELVED, "52": Status.DELETED,
    }
    assert "Could not create domain" in demo["44"].fault
    assert demo["47"].host is None  # PENDING: not placed yet
    assert demo["49"].host is None  # STOPPED: saved to the system datastore
    assert "UNKNOWN" in demo["50"].fault


# -- create ------------------------------------------------------------------------

def test_create_instantiates_the_named_template_with_tags_nic_and_context(replay):
    provider = replay("create_two.json")
    first = spec("vnode001", "10.77.0.100", network_owner="oneadmin",
                 context={"ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly admin@master"},
                 sched_requirements='HYPERVISOR="kvm"')
    second = spec("vnode002", "10.77.0.101")
    made = provider.create([first, second])
    assert [(i.id, i.name, i.status, i.address) for i in made] == [
        ("60", "vnode001", Status.BUILDING, "10.77.0.100"), ("61", "vnode002", Status.BUILDING, "10.77.0.101")]
    assert made[0].tags["registry_id"] == "req-2"
    assert provider.calls["create"] == 2 and provider.calls["templates"] == 1

    # the engine then waits with one pool call per round
    ready = provider.wait(["60", "61"], ["running"], time.monotonic() + 5, interval=0, cluster="demo")
    assert [(i.id, i.status, i.host) for i in ready] == [("60", Status.RUNNING, "hv1"), ("61", Status.RUNNING, "hv2")]
    assert provider.calls["list"] == 2


def test_create_by_template_id_skips_the_lookup_and_quota_cleans_up(replay):
    provider = replay("create_quota.json")
    with pytest.raises(QuotaExceeded) as err:
        provider.create([spec("vnode001", "10.77.0.100", template=7), spec("vnode002", "10.77.0.101", template=7)])
    assert "limit of 1 reached for VMS quota" in str(err.value)
    assert "terminated VM 60" in str(err.value)
    assert provider.calls == {"create": 2, "delete": 1}


def test_create_timeout_terminates_the_vm_it_never_heard_of(replay):
    provider = replay("create_timeout.json", template="7")
    with pytest.raises(ProviderTimeout) as err:
        provider.create([spec("vnode001", "10.77.0.100"), spec("vnode002", "10.77.0.101")])
    assert ENDPOINT in str(err.value) and "terminated VM 60, 61" in str(err.value)


def test_create_reports_a_failed_cleanup(replay):
    provider = replay("create_cleanup_fails.json")
    with pytest.raises(ProviderError) as err:
        provider.create([spec("vnode001", "10.77.0.100", template=7), spec("vnode002", "10.77.0.101", template=7)])
    assert "Cannot get IP/MAC lease" in str(err.value)
    assert "cleanup failed for VM 60" in str(err.value)


def test_create_authentication_error_names_endpoint_not_credential(replay, caplog):
    caplog.set_level(logging.DEBUG)
    provider = replay("create_auth.json")
    with pytest.raises(ProviderError) as err:
        provider.create([spec("vnode001", template=7)])
    message = str(err.value)
    assert ENDPOINT in message and "authentication failed" in message
    assert USER not in message
    _secret_free(message, caplog.text, "".join(traceback.format_exception(err.value)))
    assert FAKE_KEY.splitlines()[1] not in caplog.text


def test_create_template_name_must_resolve_to_one_template(replay):
    provider = replay("create_template_errors.json")
    with pytest.raises(ProviderError, match="no VM template named 'nope'"):
        provider.create([spec("vnode001", template="nope")])
    with pytest.raises(ProviderError, match="ambiguous"):
        provider.create([spec("vnode001", template="shared-name")])
    assert provider.calls["create"] == 0


def test_create_validates_every_spec_before_any_call(replay):
    provider = replay({"exchanges": []})
    bad = spec("vnode002")
    bad.address = "10.77.0.101"  # an address but no network to pin it in
    with pytest.raises(PolicyError, match="only with a network"):
        provider.create([spec("vnode001", template=7), bad])
    with pytest.raises(PolicyError, match="boot must be"):
        provider.create([spec("vnode001", template=7, boot="floppy")])
    assert sum(provider.calls.values()) == 0


# -- boot files in the context -------------------------------------------------------

def test_start_script_writes_the_boot_files_atomically(tmp_path):
    files = [BootFile(str(tmp_path / "etc/salt/minion.d/vcluster.conf"), "id: vnode001\nmaster: 'x y'\n", 0o644),
             BootFile(str(tmp_path / "etc/salt/pki/minion/minion.pem"), FAKE_KEY, 0o400)]
    script = start_script(files, f"touch {tmp_path}/minion-restarted")
    subprocess.run(["sh", "-c", script], check=True)
    conf = tmp_path / "etc/salt/minion.d/vcluster.conf"
    key = tmp_path / "etc/salt/pki/minion/minion.pem"
    assert conf.read_text() == "id: vnode001\nmaster: 'x y'\n" and key.read_text() == FAKE_KEY
    assert oct(key.stat().st_mode & 0o777) == "0o400" and oct(conf.stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "minion-restarted").exists()
    assert not list(tmp_path.rglob("*.vcluster-new"))
    subprocess.run(["sh", "-c", script], check=True)  # every boot runs it again: fine


def test_extra_template_carries_the_start_script(replay):
    provider = replay({"exchanges": []})
    root = ET.fromstring(provider.extra_template(spec("vnode001", "10.77.0.100")))
    script = base64.b64decode(root.find("CONTEXT/START_SCRIPT_BASE64").text).decode()
    assert script.startswith("#!/bin/sh") and "systemctl restart salt-minion" in script
    assert base64.b64encode(FAKE_KEY.encode()).decode() in script
    assert root.find("CONTEXT/NETWORK").text == "YES"
    assert root.find("NIC/IP").text == "10.77.0.100" and root.find("NIC/NETWORK").text == "vcnet"
    assert root.find("VCLUSTER_CLUSTER").text == "demo"


def test_cloud_init_boot_mode_uses_user_data(replay):
    provider = replay({"exchanges": []}, boot="cloud_init", cpu_factor=0.5)
    root = ET.fromstring(provider.extra_template(spec("vnode001", "10.77.0.100", network="7")))
    assert root.find("CONTEXT/START_SCRIPT_BASE64") is None
    assert root.find("CONTEXT/USERDATA_ENCODING").text == "base64"
    user_data = base64.b64decode(root.find("CONTEXT/USER_DATA").text).decode()
    assert user_data.startswith("#cloud-config\n")
    doc = yaml.safe_load(user_data)
    pem = [f for f in doc["write_files"] if f["path"].endswith("minion.pem")][0]
    assert pem["permissions"] == "0400" and base64.b64decode(pem["content"]).decode() == FAKE_KEY
    assert doc["runcmd"][-1][:2] == ["sh", "-c"] and "salt-minion" in doc["runcmd"][-1][2]
    assert root.find("CPU").text == "1" and root.find("VCPU").text == "2"


# -- suspend / resume / migrate ----------------------------------------------------------

def test_suspend_modes_and_idempotence(replay):
    provider = replay("suspend_modes.json")
    provider.suspend("40")
    provider.suspend("40", mode="stop")
    provider.suspend("40", mode="poweroff")
    provider.suspend("45")  # already SUSPENDED: nothing sent
    assert provider.calls == {"get": 4, "suspend": 3}
    with pytest.raises(ProviderError, match="suspend mode must be one of"):
        provider.suspend("40", mode="hibernate")


def test_suspend_refused_where_opennebula_refuses(replay):
    provider = replay("suspend_refused.json")
    with pytest.raises(ProviderStateError) as err:
        provider.suspend("41")
    assert str(err.value) == ("cannot suspend VM 41 (vnode002) in state PROLOG; OpenNebula allows it in RUNNING")
    with pytest.raises(ProviderStateError, match="in state POWEROFF"):
        provider.suspend("46")
    with pytest.raises(ProviderStateError, match="in state SAVE_SUSPEND"):
        provider.suspend("40")
    with pytest.raises(ProviderError) as failed:
        provider.suspend("44")
    assert not isinstance(failed.value, ProviderStateError)
    assert "failed in BOOT_FAILURE" in str(failed.value) and "Could not create domain" in str(failed.value)
    with pytest.raises(ProviderError, match="no vcluster VM 43"):
        provider.suspend("43")
    with pytest.raises(ProviderError, match="no vcluster VM 999"):
        provider.suspend("999")
    assert provider.calls["suspend"] == 0
    # the state changed between our look and the action: the server's ACTION error
    with pytest.raises(ProviderStateError, match="not available for state SAVE_SUSPEND"):
        provider.suspend("40")


def test_resume(replay):
    provider = replay("resume.json")
    provider.resume("45")
    provider.resume("40")  # STOPPED
    provider.resume("46")  # POWEROFF
    provider.resume("40")  # RUNNING: nothing to do
    assert provider.calls["resume"] == 3
    with pytest.raises(ProviderStateError, match="cannot resume VM 41 .* PROLOG; OpenNebula allows it in SUSPENDED"):
        provider.resume("41")
    with pytest.raises(ProviderError, match="Could not create domain"):
        provider.resume("44")


def test_migrate(replay):
    provider = replay("migrate.json")
    provider.migrate("40", "hv2")  # live, by host name
    provider.migrate("45", "1")  # SUSPENDED: cold, by host id
    with pytest.raises(ProviderStateError, match="already runs on host hv1"):
        provider.migrate("40", "hv1")
    with pytest.raises(ProviderStateError, match="cannot migrate VM 41"):
        provider.migrate("41", "hv2")
    provider.migrate("40")  # no host: let the scheduler choose (resched)
    with pytest.raises(ProviderStateError, match="Not enough capacity"):
        provider.migrate("40", 1)
    with pytest.raises(ProviderError, match="no host named 'nope'"):
        provider.migrate("40", "nope")
    assert provider.calls["migrate"] == 4 and provider.calls["hosts"] == 3


# -- delete --------------------------------------------------------------------------

def test_delete_is_terminate_hard_with_recover_fallback_and_idempotent(replay):
    provider = replay("delete.json")
    provider.delete(["40", "41", "45", "52", "999"])
    assert provider.calls == {"list": 1, "delete": 5}
    provider.delete(["40", "41"])  # all gone now: one listing, no action
    provider.delete([])
    assert provider.calls == {"list": 2, "delete": 5}


def test_delete_never_touches_untagged_vms_and_ignores_races(replay):
    provider = replay("delete_refused.json")
    with pytest.raises(ProviderError, match="43 \\(web\\) carries no vcluster tags"):
        provider.delete(["40", "43"])
    assert provider.calls["delete"] == 0
    provider.delete(["40"])  # NO_EXISTS on terminate: already gone


# -- hosts and get ------------------------------------------------------------------------

def test_hosts_report_unallocated_capacity(replay):
    provider = replay("hosts.json")
    hosts = {h.name: h for h in provider.hosts()}
    assert (hosts["hv1"].cpus_free, hosts["hv1"].memory_free_mb, hosts["hv1"].instances) == (11, 26624, 5)
    assert (hosts["hv2"].cpus_free, hosts["hv2"].memory_free_mb, hosts["hv2"].state) == (4, 12288, "up")
    assert hosts["hv3"].state == "disabled"
    assert provider.calls == {"hosts": 1}


def test_get(replay):
    provider = replay("get.json")
    inst = provider.get("40")
    assert (inst.id, inst.status, inst.host) == ("40", Status.RUNNING, "hv1")
    assert provider.get("999") is None  # NO_EXISTS
    assert provider.get("52") is None  # DONE
    assert provider.get("43") is None  # not a vcluster VM
    assert provider.calls == {"get": 4}


# -- errors, timeouts, credentials -------------------------------------------------------------

def test_transport_failures(replay):
    """How each failure reads once no try is left (retries off here; test_retries.py has them)."""
    provider = replay("transport_errors.json")
    provider._one.retries = 0
    with pytest.raises(ProviderTimeout, match="did not answer one.vmpool.infoextended within 30 s$"):
        provider.list("demo")
    with pytest.raises(ProviderError, match=f"cannot reach OpenNebula at {ENDPOINT} for one.vmpool.infoextended "):
        provider.list("demo")
    with pytest.raises(ProviderError, match="database is locked"):
        provider.list("demo")


def test_a_read_rides_through_transport_failures_but_not_an_internal_error(replay):
    """The same exchanges with retries: one list() call, tried three times; INTERNAL is oned's answer."""
    provider = replay("transport_errors.json")
    waits = []
    provider._one.wait = waits.append
    with pytest.raises(ProviderError, match="database is locked"):
        provider.list("demo")
    assert waits == [0.5, 1.0]
    assert provider.calls == {"list": 1, "retry": 2}


def test_real_socket_timeout_is_a_provider_timeout(credentials_file):
    """A loopback server that accepts and never answers; no fixed sleep."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        provider = OpenNebulaProvider("one", {"endpoint": f"http://127.0.0.1:{port}/RPC2",
                                              "credentials_file": credentials_file, "timeout": 0.3})
        waits = []
        provider._one.wait = waits.append  # the backoff's length is checked, not slept
        with pytest.raises(ProviderTimeout, match="within 0.3 s after 5 tries$"):
            provider.hosts()
        assert waits == [0.5, 1.0, 2.0, 4.0] and provider.calls == {"hosts": 1, "retry": 4}
        provider.close()


def test_authentication_failure_and_credentials_never_leak(replay, caplog, credentials_file):
    caplog.set_level(logging.DEBUG)
    provider = replay("auth_list.json")
    with pytest.raises(ProviderError) as err:
        provider.list("demo")
    assert not isinstance(err.value, (QuotaExceeded, ProviderStateError))
    assert str(err.value) == (f"OpenNebula at {ENDPOINT} rejected the credentials of provider one "
                              "(authentication failed)")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    _secret_free(str(err.value), repr(err.value), repr(provider), str(provider.config), caplog.text,
                 "".join(traceback.format_exception(err.value)))
    assert repr(provider) == f"OpenNebulaProvider(name='one', endpoint='{ENDPOINT}')"


def test_session_from_pillar_is_removed_from_config(credentials_file):
    provider = OpenNebulaProvider("one", {"endpoint": "https://user:pw@one.example.org:2633/RPC2",
                                          "session": SESSION})
    assert "session" not in provider.config
    assert provider.endpoint == ENDPOINT and "pw" not in repr(provider)
    _secret_free(repr(provider), str(provider.config), str(vars(provider)))


def test_credentials_configuration_errors(tmp_path, credentials_file):
    loose = tmp_path / "loose"
    loose.write_text(SESSION)
    os.chmod(loose, 0o644)
    cases = [
        ({"credentials_file": str(loose)}, "readable by others"),
        ({"credentials_file": str(tmp_path / "missing")}, "cannot be read"),
        ({"credentials_file": credentials_file, "session": SESSION}, "both credentials_file and session"),
        ({}, "needs credentials"),
        ({"session": "no-colon"}, "needs credentials"),
    ]
    for options, message in cases:
        with pytest.raises(PolicyError, match=message) as err:
            OpenNebulaProvider("one", {"endpoint": ENDPOINT, **options})
        _secret_free(str(err.value))
    with pytest.raises(PolicyError, match="endpoint is required"):
        OpenNebulaProvider("one", {"session": SESSION})
    with pytest.raises(PolicyError, match="must be an http"):
        OpenNebulaProvider("one", {"session": SESSION, "endpoint": "one.example.org:2634"})


def test_server_messages_are_scrubbed(replay):
    provider = replay({"exchanges": [
        {"call": "one.vmpool.infoextended", "params": [-3, -1, -1, -1],
         "reply": [False, f"[one.vmpool.infoextended] bad session {SESSION} near "
                          f"{base64.b64encode(FAKE_KEY.encode()).decode()}", 8192]}]})
    with pytest.raises(ProviderError) as err:
        provider.list("demo")
    _secret_free(str(err.value))
    assert "<redacted>" in str(err.value) and "LS0tLS1CRUdJTi" not in str(err.value)


def test_replay_transport_checks_the_session():
    transport = ReplayTransport({"exchanges": []}, "someone:else")
    provider = OpenNebulaProvider("one", {"endpoint": ENDPOINT, "session": SESSION}, transport=transport)
    with pytest.raises(AssertionError, match="unexpected session"):
        provider.hosts()


def test_local_state_rules_match_the_messages_they_print():
    """``ALLOWED_LABELS`` (shown to the admin) says exactly what ``states.allowed`` lets through."""
    for action, labels in one.ALLOWED_LABELS.items():
        allowed = set()
        for s, sname in enumerate(one.VM_STATES):
            lcms = range(len(one.LCM_STATES)) if sname == "ACTIVE" else [0]
            for lcm in lcms:
                if one_states.allowed(action, sname, one.LCM_STATES[lcm]):
                    allowed.add(one.state_label(s, lcm))
        assert allowed == set(labels), action
