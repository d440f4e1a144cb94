"""OpenStack ``name_servers: false``: a batch's create call names its nodes, no call per server.

Nova plays its multi-create rules in the in-memory compute of
test_openstack_batching.py (names ``<base>-<n>``, ``launch_index``, metadata
refused before ACTIVE); the end-to-end check runs expand.expand and
reconcile on the simulated site of tests/sim/site.py.
"""

import math
import types

import pytest

from tests.sim.site import Site
from tests.unit.test_openstack_batching import FakeCompute, provider, spec
from vcluster import expand as vexpand
from vcluster import reconcile
from vcluster.providers.openstack import META_VALUE_LIMIT, batch_identity, batch_member, to_instance


def request_specs(count, request="req1", **kwargs):
    specs = [spec(i, **kwargs) for i in range(count)]
    for s in specs:
        s.tags["registry_id"] = request
    return specs


def test_a_batch_named_at_create_needs_no_call_per_server():
    nova = FakeCompute(build_rounds=2)
    prov = provider(nova, name_servers=False)
    specs = request_specs(10)
    created = prov.create(specs)
    assert prov.calls["create"] == 1 and prov.calls.get("rename", 0) == 0 and prov.calls.get("metadata", 0) == 0
    assert [i.name for i in created] == [s.name for s in specs]
    # Nova keeps its own names; the metadata of the request names the nodes by launch index
    servers = sorted(nova.db.values(), key=lambda s: s.launch_index)
    assert all(s.name.endswith(f"-{s.launch_index + 1}") and s.name != specs[s.launch_index].name for s in servers)
    assert servers[0].metadata["vcluster_nodes_00"] == ",".join(s.name for s in specs)
    assert servers[0].metadata["vcluster_registry_id"] == "req1"
    listed = {i.id: i for i in prov.list("c1")}
    for s, inst in zip(specs, created, strict=True):
        assert listed[inst.id].name == s.name
        assert listed[inst.id].tags == {"cluster": "c1", "node": s.name, "profile": "htc", "registry_id": "req1"}


def test_requests_never_share_a_batch_and_single_creates_keep_their_names():
    nova = FakeCompute(build_rounds=1)
    prov = provider(nova, name_servers=False)
    specs = request_specs(3, "reqA") + request_specs(1, "reqB")
    specs[3].name = specs[3].tags["node"] = "vn900"
    created = prov.create(specs)
    assert prov.calls["create"] == 2  # one per request: each batch's registry id is one value
    assert [i.name for i in created] == [s.name for s in specs]
    single = nova.db[created[3].id]
    assert single.name == "vn900" and single.metadata["vcluster_node"] == "vn900"


def test_long_names_span_several_values_and_come_back_whole():
    specs = request_specs(12)
    for i, s in enumerate(specs):
        s.name = s.tags["node"] = f"node-{i:02d}-" + "x" * 50
        s.address = f"10.9.0.{i + 10}"
    meta = batch_identity(specs)
    assert all(len(v) <= META_VALUE_LIMIT for v in meta.values())
    assert len([k for k in meta if k.startswith("vcluster_nodes_")]) == math.ceil(
        len(",".join(s.name for s in specs)) / META_VALUE_LIMIT) > 2
    for index, s in enumerate(specs):
        server = types.SimpleNamespace(id=f"id{index}", name=f"vcluster-r-0-{index + 1}", launch_index=index,
                                       metadata=meta, status="ACTIVE", addresses={})
        assert batch_member(server) == (s.name, s.address)
        assert to_instance(server).name == s.name


def test_without_launch_index_the_name_suffix_names_the_node():
    meta = batch_identity(request_specs(5))
    server = types.SimpleNamespace(id="x", name="vcluster-abc-1-4", launch_index=None, metadata=meta,
                                   status="ACTIVE", addresses={})
    assert batch_member(server) == ("vn003", None)
    outside = types.SimpleNamespace(id="y", name="vcluster-abc-1-9", launch_index=None, metadata=meta,
                                    status="ACTIVE", addresses={})
    assert batch_member(outside) is None and to_instance(outside).name == "vcluster-abc-1-9"


@pytest.fixture
def site(tmp_path):
    made = Site(str(tmp_path), 200, max_batch=16, slurmds=False)
    yield made
    made.close()


def test_expand_and_reconcile_on_batch_named_servers(site):
    """Reconcile maps the servers to their nodes from the batch's metadata: nothing orphaned, nothing lost."""
    ret, measured = site.measure(lambda: vexpand.expand(site.ctx, "osb", 64, wait=False))
    assert {v["state"] for v in ret["nodes"].values()} == {"booting"}
    by_kind = measured["by_kind"]
    assert by_kind["novab:create"] == math.ceil(64 / 16)
    assert "novab:rename" not in by_kind and "novab:metadata" not in by_kind
    assert measured["calls"]["provider"] == by_kind["novab:create"] + by_kind["novab:list"] + by_kind["novab:lookup"]
    report = reconcile.reconcile(site.ctx, apply=False)
    assert report["report"]["orphan_instance"] == [] and report["report"]["node_without_instance"] == []
    assert report["report"]["duplicate_instance"] == []


def test_a_batch_named_at_create_holds_at_most_100_nodes():
    """Their names and addresses must fit Nova's metadata items (128 per server by default)."""
    nova = FakeCompute(build_rounds=1)
    prov = provider(nova, name_servers=False, max_batch=500)
    created = prov.create(request_specs(150))
    assert prov.calls["create"] == 2 and len(created) == 150
    assert sorted(a["max_count"] for a in nova.create_args) == [50, 100]
    assert all(len(a["metadata"]) <= 128 for a in nova.create_args)
