"""``name_servers: false`` against the testbed's real Nova: one create per batch, no call per server.

Nova stores the batch's metadata on every server of the multi-create and
names them ``<base>-<n>``; the provider names each server after its node
from that metadata, whether or not this user may see ``launch_index``.
"""

import time

import pytest

from tests.integration.openstack.conftest import make_spec
from vcluster.providers.base import Status
from vcluster.providers.openstack import batch_member, parse_user_data, tag_cluster

pytestmark = [pytest.mark.integration, pytest.mark.openstack]

COUNT = 6


def test_batch_named_servers_on_nova(os_provider_factory, cluster_name):
    prov = os_provider_factory(name_servers=False)
    specs = [make_spec(cluster_name, i) for i in range(COUNT)]
    for s in specs:
        s.tags["registry_id"] = "req-batch"  # one expand request
        s.address = f"10.77.0.{20 + specs.index(s)}"
    created = prov.create(specs)
    assert prov.calls["create"] == 1
    assert prov.calls.get("rename", 0) == 0 and prov.calls.get("metadata", 0) == 0
    assert [i.name for i in created] == [s.name for s in specs]
    assert all(i.status is Status.RUNNING for i in created)

    raw = list(prov.conn.compute.servers(details=True, tags=tag_cluster(cluster_name)))
    assert len(raw) == COUNT and len({s.reservation_id for s in raw}) == 1  # one multi-create
    by_id = {s.id: s for s in raw}
    for spec, inst in zip(specs, created, strict=True):
        server = by_id[inst.id]
        assert server.name != spec.name and server.name.startswith("vcluster-")  # Nova's own batch name
        assert batch_member(server) == (spec.name, spec.address)
        # the guest still finds its own part of the user data by launch index
        parts = dict(parse_user_data(server.user_data))
        index = server.launch_index if server.launch_index is not None else int(server.name.rsplit("-", 1)[1]) - 1
        assert parts[index]["hostname"] == spec.name

    listed = {i.id: i for i in prov.list(cluster_name)}
    assert prov.calls["list"] >= 1
    for spec, inst in zip(specs, created, strict=True):
        assert listed[inst.id].name == spec.name
        assert listed[inst.id].tags["node"] == spec.name and listed[inst.id].tags["registry_id"] == "req-batch"
        assert prov.get(inst.id).name == spec.name

    prov.delete([i.id for i in created])
    deadline = time.monotonic() + 60
    while prov.list(cluster_name):
        assert time.monotonic() < deadline, "servers left behind"
        time.sleep(0.5)
