"""OpenStackProvider against a real Keystone + Placement + Glance + Nova (fake virt driver).

Nova enforces its own state rules here (which action is allowed in which VM
state), quotas, scheduling (two compute hosts cpu1/cpu2, each 1000 vCPUs and
800000 MiB), multi-create naming and faults. The fake driver runs no guest,
so boot files are checked in the user data Nova stores.
"""

import base64
import secrets
import time

import pytest

from tests.integration.openstack.conftest import make_spec
from vcluster.errors import PolicyError, ProviderError, ProviderStateError, ProviderTimeout, QuotaExceeded
from vcluster.providers.base import BootFile, Status
from vcluster.providers.openstack import OpenStackProvider, parse_user_data, tag_cluster

pytestmark = [pytest.mark.integration, pytest.mark.openstack]

FLEET = 10


def servers_of(prov, cluster):
    return {i.id: i for i in prov.list(cluster)}


def raw_servers(prov, cluster):
    """openstacksdk Server objects of a cluster (with metadata, launch_index, user_data)."""
    return list(prov.conn.compute.servers(details=True, tags=tag_cluster(cluster)))


def assert_cluster_empty(prov, cluster, timeout=60):
    deadline = time.monotonic() + timeout
    while prov.list(cluster):
        assert time.monotonic() < deadline, f"servers of {cluster} left behind: {prov.list(cluster)}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def fleet(openstack_testbed):
    """Ten servers made by one multi-create, shared by the tests of this module (in order)."""
    from tests.integration.openstack.conftest import provider_config

    prov = OpenStackProvider("testbed", provider_config(openstack_testbed))
    cluster = f"osfleet-{secrets.token_hex(3)}"
    specs = [make_spec(cluster, i) for i in range(FLEET)]
    started = time.monotonic()
    created = prov.create(specs)
    state = {
        "provider": prov,
        "cluster": cluster,
        "specs": specs,
        "created": created,
        "calls": dict(prov.calls),
        "seconds": time.monotonic() - started,
    }
    yield state
    leftovers = [i.id for i in prov.list(cluster)]
    if leftovers:
        prov.delete(leftovers)
    prov.close()


# -- create, batching, tagging -------------------------------------------------------


def test_multi_create_is_one_request(fleet):
    calls = fleet["calls"]
    assert calls["create"] == 1
    assert calls.get("get", 0) == 0, "polling must list the batch, not GET each server"
    # one list call per poll round, bounded by the rounds the boot can take
    rounds = fleet["seconds"] / 0.5 + 2
    assert 1 <= calls["list"] <= rounds
    assert calls["rename"] == FLEET and calls["metadata"] == FLEET
    assert len(fleet["created"]) == FLEET


def test_every_server_named_and_tagged_like_its_spec(fleet):
    prov, cluster = fleet["provider"], fleet["cluster"]
    by_id = {s.id: s for s in raw_servers(prov, cluster)}
    for spec, inst in zip(fleet["specs"], fleet["created"], strict=True):
        assert inst.name == spec.name and inst.status is Status.RUNNING
        server = by_id[inst.id]
        assert server.name == spec.name
        assert server.metadata["vcluster_cluster"] == cluster
        assert server.metadata["vcluster_node"] == spec.name
        assert server.metadata["vcluster_profile"] == "htc"
        assert server.metadata["vcluster_registry_id"] == spec.tags["registry_id"]
        assert "vcluster" in server.tags and tag_cluster(cluster) in server.tags


def test_user_data_part_of_each_launch_index_is_its_node(fleet):
    """cloud-init applies the part whose launch-index is the instance's: it must be that node's."""
    prov, cluster = fleet["provider"], fleet["cluster"]
    servers = raw_servers(prov, cluster)
    assert len({s.reservation_id for s in servers}) == 1  # one multi-create
    for server in servers:
        parts = dict(parse_user_data(server.user_data))
        own = parts[server.launch_index]
        assert own["launch-index"] == server.launch_index
        assert own["hostname"] == server.name
        [boot_file] = own["write_files"]
        assert boot_file["path"] == "/etc/salt/minion_id"

        assert base64.b64decode(boot_file["content"]).decode() == server.name + "\n"
        assert any("salt-minion" in " ".join(cmd) for cmd in own["runcmd"])


def test_list_is_one_call_and_isolated(fleet, os_provider, specs_for, cluster_name):
    prov, cluster = fleet["provider"], fleet["cluster"]
    [other] = os_provider.create(specs_for(1))
    before = prov.calls["list"]
    mine = prov.list(cluster)
    assert prov.calls["list"] == before + 1
    assert {i.id for i in mine} == {i.id for i in fleet["created"]}
    assert other.id not in {i.id for i in mine}
    assert [i.id for i in os_provider.list(cluster_name)] == [other.id]
    assert {i.id for i in fleet["created"]} | {other.id} <= {i.id for i in prov.list_all()}
    assert os_provider.calls["create"] == 1


def test_single_create_has_final_name_and_metadata(os_provider, specs_for, cluster_name):
    [spec] = specs_for(1, boot_files=[BootFile("/etc/vcluster/key", "secret-ish\n", 0o600)])
    [inst] = os_provider.create([spec])
    assert os_provider.calls["create"] == 1
    assert os_provider.calls.get("rename", 0) == 0 and os_provider.calls.get("metadata", 0) == 0
    [server] = raw_servers(os_provider, cluster_name)
    assert server.name == spec.name and server.metadata["vcluster_node"] == spec.name
    [(index, config)] = parse_user_data(server.user_data)
    assert index is None and config["write_files"][0]["permissions"] == "0600"


def test_hosts_report_placement_capacity(fleet):
    prov = fleet["provider"]
    hosts = {h.name: h for h in prov.hosts()}
    assert set(hosts) == {"cpu1", "cpu2"}
    assert all(h.state == "up" for h in hosts.values())
    assert sum(h.instances for h in hosts.values()) >= FLEET
    # fake driver: 1000 vCPUs x allocation ratio 4.0, 800000 MiB (512 reserved), m1.tiny = 1 vCPU / 64 MiB
    for host in hosts.values():
        assert host.cpus_free <= 4000 - host.instances
        assert host.memory_free_mb <= 800000 - 512 - 64 * host.instances


# -- primitives and Nova's state rules ------------------------------------------------------


def test_suspend_and_resume(fleet):
    prov, inst = fleet["provider"], fleet["created"][0]
    assert prov.suspend(inst.id).status is Status.SUSPENDED
    with pytest.raises(ProviderStateError, match="vm_state suspended"):
        prov.suspend(inst.id)  # Nova answers 409
    with pytest.raises(ProviderStateError, match="live migrate"):
        prov.migrate(inst.id)  # live migration of a SUSPENDED server: 409
    assert prov.resume(inst.id).status is Status.RUNNING
    with pytest.raises(ProviderStateError, match="not suspended, paused, shelved or stopped"):
        prov.resume(inst.id)


def test_pause_and_unpause(fleet):
    prov, inst = fleet["provider"], fleet["created"][1]
    assert prov.suspend(inst.id, mode="pause").status is Status.PAUSED
    with pytest.raises(ProviderStateError, match="vm_state paused"):
        prov.suspend(inst.id, mode="suspend")  # Nova suspends ACTIVE servers only: 409
    with pytest.raises(ProviderStateError, match="vm_state paused"):
        prov.migrate(inst.id, live=False)  # cold migration wants ACTIVE or SHUTOFF: 409
    back = prov.resume(inst.id)
    assert back.status is Status.RUNNING


def test_shelve_and_unshelve_onto_a_chosen_host(fleet):
    prov, inst = fleet["provider"], fleet["created"][2]
    shelved = prov.suspend(inst.id, mode="shelve")
    assert shelved.status is Status.SHELVED
    target = "cpu2" if inst.host == "cpu1" else "cpu1"
    back = prov.resume(inst.id, host=target)
    assert back.status is Status.RUNNING and back.host == target


def test_live_migrate_to_the_other_host(fleet):
    prov, inst = fleet["provider"], fleet["created"][3]
    source = prov.get(inst.id).host
    target = "cpu2" if source == "cpu1" else "cpu1"
    moved = prov.migrate(inst.id, host=target, live=True)
    assert moved.host == target and moved.status is Status.RUNNING
    again = prov.migrate(inst.id)  # scheduler's choice: the only other host
    assert again.host == source
    with pytest.raises(ProviderStateError, match="already runs on"):
        prov.migrate(inst.id, host=source)


def test_live_migrate_a_paused_server(fleet):
    prov, inst = fleet["provider"], fleet["created"][4]
    prov.suspend(inst.id, mode="pause")
    source = prov.get(inst.id).host
    moved = prov.migrate(inst.id, live=True)
    assert moved.status is Status.PAUSED and moved.host != source
    assert prov.resume(inst.id).status is Status.RUNNING


def test_cold_migrate_confirms_the_resize(fleet):
    prov, inst = fleet["provider"], fleet["created"][5]
    source = prov.get(inst.id).host
    before = dict(prov.calls)
    moved = prov.migrate(inst.id, live=False)
    assert moved.status is Status.RUNNING and moved.host != source
    assert prov.calls["confirm_resize"] == before.get("confirm_resize", 0) + 1


def test_delete_and_delete_again(fleet):
    prov, cluster = fleet["provider"], fleet["cluster"]
    victims = [i.id for i in fleet["created"][8:]]
    prov.delete(victims)
    assert not set(victims) & set(servers_of(prov, cluster))
    prov.delete(victims)  # already gone: ignored
    assert prov.get(victims[0]) is None


def test_unknown_suspend_mode_is_a_policy_error(fleet):
    with pytest.raises(PolicyError):
        fleet["provider"].suspend(fleet["created"][0].id, mode="hibernate")


# -- errors and all-or-nothing -------------------------------------------------------------------


def test_unschedulable_flavor_gives_novas_fault_and_cleans_up(os_provider, specs_for, cluster_name):
    specs = specs_for(3, flavor="m1.toobig")
    with pytest.raises(ProviderError, match="No valid host") as err:
        os_provider.create(specs)
    assert not isinstance(err.value, (ProviderTimeout, QuotaExceeded))
    assert os_provider.calls["create"] == 1
    assert_cluster_empty(os_provider, cluster_name)


def test_failure_in_second_batch_deletes_the_first(os_provider, specs_for, cluster_name):
    specs = specs_for(2) + specs_for(1, start=2, flavor="m1.toobig")
    with pytest.raises(ProviderError, match="No valid host"):
        os_provider.create(specs)
    assert os_provider.calls["create"] == 2  # two flavors: two requests
    assert_cluster_empty(os_provider, cluster_name)


def test_quota_exceeded_is_all_or_nothing(os_provider, specs_for, cluster_name, admin_conn):
    project = admin_conn.identity.find_project("vcluster")
    used = len(list(admin_conn.compute.servers(all_projects=True, project_id=project.id)))
    admin_conn.set_compute_quotas(project.id, instances=used + 2)
    try:
        with pytest.raises(QuotaExceeded, match="(?i)quota exceeded"):
            os_provider.create(specs_for(3))
        assert os_provider.calls["create"] == 1
        assert_cluster_empty(os_provider, cluster_name)
    finally:
        admin_conn.set_compute_quotas(project.id, instances=500)


def test_boot_timeout_raises_and_cleans_up(os_provider, specs_for, cluster_name):
    specs = specs_for(2, extra={"boot_timeout": 0.01})
    with pytest.raises(ProviderTimeout, match="not ACTIVE before the boot deadline"):
        os_provider.create(specs)
    assert_cluster_empty(os_provider, cluster_name)


def test_action_timeout_raises(os_provider_factory, specs_for):
    prov = os_provider_factory()
    [inst] = prov.create(specs_for(1))
    impatient = os_provider_factory(action_timeout=0.01)
    with pytest.raises(ProviderTimeout, match="at the deadline"):
        impatient.suspend(inst.id, mode="shelve")


def test_unknown_image_creates_nothing(os_provider, specs_for, cluster_name):
    with pytest.raises(ProviderError, match="image 'no-such-image' does not exist"):
        os_provider.create(specs_for(2, image="no-such-image"))
    assert os_provider.calls.get("create", 0) == 0


def test_anti_affinity_spreads_and_refuses_a_third(os_provider, specs_for, cluster_name):
    policy = {"server_group_policy": "anti-affinity", "server_group": f"vcluster-{cluster_name}-anti"}
    pair = os_provider.create(specs_for(2, extra=policy))
    assert {i.host for i in pair} == {"cpu1", "cpu2"}
    with pytest.raises(ProviderError, match="No valid host"):
        os_provider.create(specs_for(1, start=2, extra=policy))
    assert {i.id for i in os_provider.list(cluster_name)} == {i.id for i in pair}
    groups = [g for g in os_provider.conn.compute.server_groups() if g.name == policy["server_group"]]
    assert len(groups) == 1 and groups[0].policy == "anti-affinity"
    os_provider.delete([i.id for i in pair])
    os_provider.conn.compute.delete_server_group(groups[0])


def test_affinity_keeps_a_batch_on_one_host(os_provider, specs_for, cluster_name):
    servers = os_provider.create(specs_for(3, extra={"server_group_policy": "affinity"}))
    assert len({i.host for i in servers}) == 1
    assert os_provider.calls["create"] == 1
    group = f"vcluster-{cluster_name}-htc-affinity"
    os_provider.delete([i.id for i in servers])
    for g in os_provider.conn.compute.server_groups():
        if g.name == group:
            os_provider.conn.compute.delete_server_group(g)


# -- credentials ---------------------------------------------------------------------------------


def test_auth_dict_works_and_is_never_shown(openstack_testbed):
    import yaml

    clouds = yaml.safe_load(openstack_testbed["clouds_yaml"].read_text())["clouds"]
    auth = clouds["vcluster-testbed"]["auth"]
    prov = OpenStackProvider("direct", {"auth": auth, "region_name": "RegionOne", "networks": "none"})
    try:
        assert isinstance(prov.list("ostest-nobody"), list)
        for text in (repr(prov), str(prov), str(prov.config)):
            assert auth["password"] not in text
        assert "auth" not in prov.config
    finally:
        prov.close()
    bad = OpenStackProvider("bad", {"auth": {**auth, "password": "wrong-password"}, "region_name": "RegionOne"})
    with pytest.raises(ProviderError) as err:
        bad.list("x")
    assert "wrong-password" not in str(err.value)
