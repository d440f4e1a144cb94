"""OpenStackProvider logic that needs no cloud: batching, user data, mapping, errors.

A small in-memory stand-in for openstacksdk's compute proxy plays Nova's
multi-create rules (names ``<base>-<n>``, ``launch_index``, one user data for
the whole request, metadata refused before ACTIVE).
"""

import base64
import itertools
import os
import types
import uuid

import pytest
from openstack import exceptions as os_exc

from vcluster.errors import PolicyError, ProviderError, ProviderStateError, ProviderTimeout, QuotaExceeded
from vcluster.providers.base import BootFile, InstanceSpec, Status
from vcluster.providers.openstack import (
    USER_DATA_LIMIT,
    OpenStackProvider,
    batch_user_data,
    encoded_size,
    map_batch,
    parse_user_data,
    plan_batches,
    tag_cluster,
    to_instance,
)


def spec(i, cluster="c1", flavor="m1.tiny", image="img", boot=None, network=None, address=None, extra=None):
    name = f"vn{i:03d}"
    return InstanceSpec(
        name=name,
        address=address,
        image=image,
        cpus=1,
        memory_mb=64,
        flavor=flavor,
        network=network,
        boot_files=[BootFile("/etc/salt/minion_id", boot if boot is not None else name + "\n")],
        tags={"cluster": cluster, "node": name, "profile": "htc", "registry_id": str(i)},
        extra=dict(extra or {}),
    )


# -- pure functions ---------------------------------------------------------------------


def test_plan_batches_groups_by_key_and_keeps_order():
    specs = [spec(i) for i in range(6)]
    keys = ["a", "b", "a", None, "b", "a"]
    assert plan_batches(specs, keys) == [[3], [0, 2, 5], [1, 4]]


def test_plan_batches_respects_max_batch_and_multi_create_off():
    specs = [spec(i) for i in range(7)]
    assert plan_batches(specs, ["k"] * 7, max_batch=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_batches(specs, ["k"] * 7, multi_create=False) == [[i] for i in range(7)]


def test_plan_batches_splits_on_the_user_data_limit():
    # ~3 KiB of incompressible boot data per node, like a minion key pair and config
    specs = [spec(i, boot=base64.b64encode(os.urandom(2400)).decode()) for i in range(60)]
    batches = plan_batches(specs, ["k"] * 60, max_batch=50)
    assert len(batches) > 2
    assert sorted(itertools.chain.from_iterable(batches)) == list(range(60))
    for batch in batches:
        data = batch_user_data([specs[i] for i in batch])
        assert encoded_size(data) <= USER_DATA_LIMIT


def test_single_user_data_is_plain_cloud_config():
    data = batch_user_data([spec(1)])
    assert data.startswith(b"#cloud-config\n")
    [(index, config)] = parse_user_data(base64.b64encode(data).decode())
    assert index is None and config["hostname"] == "vn001"
    [wf] = config["write_files"]
    assert wf["encoding"] == "b64" and base64.b64decode(wf["content"]) == b"vn001\n"
    assert wf["permissions"] == "0644"
    assert config["runcmd"][-1][0:2] == ["sh", "-c"] and "salt-minion" in config["runcmd"][-1][2]


def test_multi_user_data_has_one_part_per_launch_index():
    specs = [spec(i) for i in range(4)]
    parts = parse_user_data(batch_user_data(specs))
    assert [index for index, _ in parts] == [0, 1, 2, 3]
    for index, config in parts:
        assert config["launch-index"] == index
        assert config["hostname"] == specs[index].name
        assert base64.b64decode(config["write_files"][0]["content"]).decode() == specs[index].name + "\n"


def test_large_multi_user_data_is_gzipped_when_that_makes_it_fit():
    specs = [spec(i, boot="x" * 3000) for i in range(30)]  # compressible
    data = batch_user_data(specs)
    assert data[:2] == b"\x1f\x8b"
    assert len(parse_user_data(data)) == 30


def test_map_batch_by_launch_index_or_name_suffix():
    srv = lambda name, li: types.SimpleNamespace(id=name, name=name, launch_index=li)  # noqa: E731
    by_index = map_batch([srv("x-2", 1), srv("x-1", 0)], "x", 2)
    assert by_index[0].name == "x-1" and by_index[1].name == "x-2"
    by_name = map_batch([srv("b-3", None), srv("b-1", None), srv("b-2", None)], "b", 3)
    assert [by_name[i].name for i in range(3)] == ["b-1", "b-2", "b-3"]
    with pytest.raises(ProviderError, match="2 servers"):
        map_batch([srv("b-1", None)], "b", 2)
    with pytest.raises(ProviderError, match="cannot map"):
        map_batch([srv("b-1", 0), srv("other", 0)], "b", 2)


def test_to_instance_normalises_status_tags_and_fault():
    server = types.SimpleNamespace(
        id="i1", name="vn001", status="ERROR", compute_host="cpu1",
        addresses={"net": [{"version": 6, "addr": "fe80::1"}, {"version": 4, "addr": "10.0.0.5"}]},
        metadata={"vcluster_cluster": "c", "vcluster_node": "vn001", "vcluster_batch": "0", "other": "x"},
        fault={"message": "No valid host was found. "},
    )
    inst = to_instance(server)
    assert inst.status is Status.ERROR and inst.fault.startswith("No valid host")
    assert inst.tags == {"cluster": "c", "node": "vn001"} and inst.address == "10.0.0.5" and inst.host == "cpu1"
    for nova, ours in [("SHELVED_OFFLOADED", Status.SHELVED), ("VERIFY_RESIZE", Status.MIGRATING), ("BUILD", Status.BUILDING), ("REBOOT", Status.UNKNOWN)]:
        server.status = nova
        assert to_instance(server).status is ours


def test_tag_cluster_fits_novas_tag_rules():
    assert tag_cluster("demo") == "vcluster-cluster=demo"
    long = tag_cluster("x" * 80)
    assert len(long) <= 60 and "," not in long and "/" not in long
    assert tag_cluster("a/b") != tag_cluster("a,b")


# -- a fake Nova ------------------------------------------------------------------------------


class FakeCompute:
    """Enough of openstacksdk's compute proxy to play multi-create by Nova's rules."""

    def __init__(self, build_rounds=2, fail=None, quota=None, list_errors=0, create_errors=0, error_status=500):
        self.db = {}
        self.build_rounds = build_rounds  # list calls a server stays in BUILD
        self.fail = fail or {}  # launch index -> fault message
        self.quota = quota
        self.list_errors = list_errors
        self.create_errors = create_errors
        self.error_status = error_status
        self.create_args = []
        self.ticks = {}

    def _http(self, status, message):
        cls = os_exc.ConflictException if status == 409 else os_exc.HttpException
        return cls(message=message, http_status=status, details=message)

    def create_server(self, **args):
        self.create_args.append(args)
        n = args.get("max_count", 1)
        if self.quota is not None and len(self.db) + n > self.quota:
            raise os_exc.ForbiddenException(
                message="quota", http_status=403,
                details=f"Quota exceeded for instances: Requested {n}, but already used {len(self.db)} of {self.quota} instances",
            )
        created = []
        for index in range(n):
            name = args["name"] if n == 1 else f"{args['name']}-{index + 1}"
            server = types.SimpleNamespace(
                id=str(uuid.uuid4()), name=name, status="BUILD", task_state="scheduling", launch_index=index,
                metadata=dict(args["metadata"]), tags=list(args["tags"]), compute_host=None, addresses={},
                fault=None, user_data=args["user_data"], reservation_id="r-1",
            )
            self.db[server.id] = server
            self.ticks[server.id] = 0
            created.append(server)
        if self.create_errors:
            self.create_errors -= 1
            raise self._http(self.error_status, "the API died after creating the servers")
        return created[0]

    def servers(self, details=True, tags=None):  # noqa: F811 - the proxy method
        if self.list_errors:
            self.list_errors -= 1
            raise self._http(503, "Service Unavailable")
        result = []
        for server in list(self.db.values()):
            if tags and tags not in server.tags:
                continue
            self.ticks[server.id] += 1
            if server.status == "BUILD" and self.ticks[server.id] > self.build_rounds:
                if server.launch_index in self.fail:
                    server.status, server.task_state = "ERROR", None
                    server.fault = {"message": self.fail[server.launch_index]}
                else:
                    server.status, server.task_state, server.compute_host = "ACTIVE", None, "cpu1"
            result.append(types.SimpleNamespace(**vars(server)))
        return result

    def update_server(self, server_id, name):
        self.db[server_id].name = name

    def set_server_metadata(self, server_id, **metadata):
        server = self.db[server_id]
        if server.status != "ACTIVE":
            raise self._http(409, f"Cannot 'update_metadata' instance {server_id} while it is in vm_state building")
        server.metadata.update(metadata)

    def delete_server(self, server_id, ignore_missing=True):
        self.db.pop(server_id, None)

    def get_server(self, server_id):
        if server_id not in self.db:
            raise os_exc.NotFoundException(message="nf", http_status=404)
        return types.SimpleNamespace(**vars(self.db[server_id]))

    def suspend_server(self, server):
        sid = getattr(server, "id", server)
        if self.db[sid].status != "ACTIVE":
            raise self._http(409, f"Cannot 'suspend' instance {sid} while it is in vm_state {self.db[sid].status.lower()}")
        self.db[sid].status = "SUSPENDED"

    def find_flavor(self, name, ignore_missing=True):
        return types.SimpleNamespace(id="flavor-" + name)


class FakeConn:
    def __init__(self, compute):
        self.compute = compute
        self.image = types.SimpleNamespace(find_image=lambda name, ignore_missing=True: types.SimpleNamespace(id="image-" + name))
        self.network = types.SimpleNamespace(find_network=lambda name, ignore_missing=True: types.SimpleNamespace(id="net-" + name))

    def close(self):
        pass


def provider(compute, **config):
    base = {"cloud": "fake", "networks": "none", "poll_interval": 0, "api_retry_backoff": 0, "boot_timeout": 30}
    base.update(config)
    return OpenStackProvider("fake", base, connection=FakeConn(compute))


def test_batch_of_ten_is_one_create_and_maps_every_server():
    nova = FakeCompute(build_rounds=2)
    prov = provider(nova)
    specs = [spec(i) for i in range(10)]
    created = prov.create(specs)
    assert prov.calls["create"] == 1 and len(nova.create_args) == 1
    args = nova.create_args[0]
    assert args["min_count"] == args["max_count"] == 10
    assert prov.calls["list"] == 3  # BUILD, BUILD, ACTIVE: one list per round
    assert prov.calls["rename"] == 10 and prov.calls["metadata"] == 10
    assert [i.name for i in created] == [s.name for s in specs]
    for s, inst in zip(specs, created, strict=True):
        server = nova.db[inst.id]
        assert server.name == s.name
        assert server.metadata["vcluster_node"] == s.name and server.metadata["vcluster_registry_id"] == s.tags["registry_id"]
        parts = dict(parse_user_data(server.user_data))
        assert parts[server.launch_index]["hostname"] == s.name


def test_different_flavors_and_fixed_addresses_make_separate_requests():
    nova = FakeCompute(build_rounds=0)
    prov = provider(nova)
    specs = [spec(0), spec(1), spec(2, flavor="m1.small"), spec(3, network="cluster-net", address="10.0.0.3")]
    prov.create(specs)
    assert prov.calls["create"] == 3
    fixed = [a for a in nova.create_args if a["name"] == "vn003"][0]
    assert fixed["networks"] == [{"uuid": "net-cluster-net", "fixed_ip": "10.0.0.3"}]
    assert "max_count" not in fixed and fixed["metadata"]["vcluster_node"] == "vn003"
    assert prov.calls.get("rename", 0) == 2  # only the 2-server batch is renamed


def test_error_server_fails_the_request_with_novas_fault_and_deletes_all():
    nova = FakeCompute(build_rounds=1, fail={2: "No valid host was found. "})
    prov = provider(nova)
    with pytest.raises(ProviderError, match=r"vn002 went to ERROR: No valid host was found"):
        prov.create([spec(i) for i in range(4)])
    assert nova.db == {}


def test_quota_403_is_quota_exceeded_and_earlier_batches_are_deleted():
    nova = FakeCompute(build_rounds=0, quota=3)
    prov = provider(nova)
    specs = [spec(0), spec(1), spec(2, flavor="m1.small"), spec(3, flavor="m1.small")]
    with pytest.raises(QuotaExceeded, match="Quota exceeded for instances"):
        prov.create(specs)
    assert nova.db == {}


def test_boot_timeout_is_provider_timeout_and_cleans_up():
    nova = FakeCompute(build_rounds=10**6)
    prov = provider(nova, boot_timeout=0)
    with pytest.raises(ProviderTimeout, match="vn000, vn001 were not ACTIVE"):
        prov.create([spec(0), spec(1)])
    assert nova.db == {}


def test_5xx_on_list_is_retried_with_backoff():
    nova = FakeCompute(build_rounds=0, list_errors=2)
    prov = provider(nova)
    prov.create([spec(0), spec(1)])
    assert prov.calls["retry"] == 2


def test_5xx_retries_are_bounded():
    nova = FakeCompute(build_rounds=0, list_errors=100)
    prov = provider(nova, api_retries=2)
    with pytest.raises(ProviderError, match="HTTP 503 after retries"):
        prov.list("c1")
    assert prov.calls["list"] == 3 and prov.calls["retry"] == 2


def test_5xx_after_create_does_not_create_twice():
    nova = FakeCompute(build_rounds=0, create_errors=1)
    prov = provider(nova)
    created = prov.create([spec(i) for i in range(3)])
    assert len(nova.create_args) == 1 and len(nova.db) == 3 and len(created) == 3


def test_409_becomes_provider_state_error_with_a_sentence():
    nova = FakeCompute(build_rounds=0)
    prov = provider(nova)
    [inst] = prov.create([spec(0)])
    nova.db[inst.id].status = "SUSPENDED"
    with pytest.raises(ProviderStateError, match=r"cannot suspend server vn000: Nova refuses it .*vm_state suspended"):
        prov.suspend(inst.id)
    with pytest.raises(ProviderStateError, match="not suspended, paused, shelved or stopped"):
        nova.db[inst.id].status = "ACTIVE"
        prov.resume(inst.id)


def test_credentials_never_shown():
    prov = OpenStackProvider(
        "p", {"auth": {"auth_url": "http://x", "username": "u", "password": "s3cr3t"}, "application_credential_secret": "zz"}
    )
    assert "s3cr3t" not in repr(prov) and "s3cr3t" not in str(prov.config) and "zz" not in str(prov.config)
    assert "auth=<hidden>" in repr(prov)
    with pytest.raises(PolicyError, match="needs 'cloud'"):
        OpenStackProvider("p", {"region_name": "RegionOne"})


def test_specs_need_unique_names_and_a_cluster():
    prov = provider(FakeCompute())
    with pytest.raises(PolicyError, match="unique"):
        prov.create([spec(0), spec(0)])
    bad = spec(1)
    bad.tags.pop("cluster")
    with pytest.raises(PolicyError, match="no cluster tag"):
        prov.create([bad])


def test_server_group_policy_is_validated():
    prov = provider(FakeCompute())
    with pytest.raises(PolicyError, match="server_group_policy"):
        prov.create([spec(0, extra={"server_group_policy": "spread"})])


def test_allocated_address_is_server_metadata_single_and_multi_create():
    """``vcluster_address`` tells the guest (or the test harness) the node's pool address."""
    nova = FakeCompute(build_rounds=1)
    prov = provider(nova)
    specs = [spec(0, address="10.9.0.100"), spec(1, address="10.9.0.101"), spec(2, flavor="m1.small", address="10.9.0.102")]
    created = prov.create(specs)
    for s, inst in zip(specs, created, strict=True):
        assert nova.db[inst.id].metadata["vcluster_address"] == s.address
        assert "address" not in inst.tags  # metadata, not one of the instance tags
    single = [a for a in nova.create_args if a["name"] == "vn002"][0]
    assert single["metadata"]["vcluster_address"] == "10.9.0.102"  # set at create
    [unaddressed] = prov.create([spec(3)])
    assert "vcluster_address" not in nova.db[unaddressed.id].metadata
