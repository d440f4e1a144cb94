"""5xx answers from the compute API: bounded retries, no duplicate servers, nothing left behind.

The calls go to the testbed's real Nova through a proxy on loopback
(:mod:`tests.integration.openstack.faultproxy`) that answers chosen requests
with 500/502/503, before or after Nova has acted on them: a healthy Nova
never does, a busy cloud's API or load balancer does. Everything else the
provider sends and reads is Nova's own.
"""

import pathlib
import time

import pytest
import yaml

from tests.integration.openstack.conftest import CLOUD, connect_testbed, provider_config
from tests.integration.openstack.faultproxy import FaultProxy
from vcluster.errors import ProviderError
from vcluster.providers.openstack import OpenStackProvider, tag_cluster

pytestmark = [pytest.mark.integration, pytest.mark.openstack]

LIST = r"/servers/detail$"
CREATE = r"/servers$"
RETRIES = 2


@pytest.fixture(scope="module")
def nova_endpoint(openstack_testbed):
    conn = connect_testbed(openstack_testbed)
    try:
        return conn.compute.get_endpoint()
    finally:
        conn.close()


@pytest.fixture
def proxy(nova_endpoint):
    with FaultProxy(nova_endpoint) as p:
        yield p


@pytest.fixture
def direct(openstack_testbed):
    """A provider talking to Nova directly: the tests' own view, never faulted."""
    prov = OpenStackProvider("direct", provider_config(openstack_testbed))
    yield prov
    prov.close()


@pytest.fixture
def faulty(openstack_testbed, proxy, tmp_path, direct, cluster_name):
    """A provider whose compute calls go through the proxy; its cluster is emptied afterwards."""
    data = yaml.safe_load(pathlib.Path(openstack_testbed["clouds_yaml"]).read_text())
    data["clouds"][CLOUD]["compute_endpoint_override"] = proxy.url
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump(data))
    clouds.chmod(0o600)
    prov = OpenStackProvider("faulty", provider_config(
        openstack_testbed, clouds_yaml=str(clouds), api_retries=RETRIES, api_retry_backoff=0.05))
    yield prov
    prov.close()
    leftovers = [i.id for i in direct.list(cluster_name)]
    if leftovers:
        direct.delete(leftovers)


def nova_servers(direct, cluster):
    return list(direct.conn.compute.servers(details=True, tags=tag_cluster(cluster)))


def test_list_retries_a_passing_503(faulty, proxy, cluster_name):
    proxy.add("GET", LIST, 503, times=2)
    assert faulty.list(cluster_name) == []
    assert proxy.requests("GET", LIST) == [503, 503, 200]
    assert faulty.calls["retry"] == 2


def test_a_lasting_500_gives_up_after_the_bounded_retries(faulty, proxy, cluster_name):
    proxy.add("GET", LIST, 500, times=None)
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        faulty.list(cluster_name)
    assert proxy.requests("GET", LIST) == [500] * (RETRIES + 1)
    assert time.monotonic() - started < 30
    message = str(err.value)
    assert "500" in message and "\n" not in message, message


def test_create_answered_502_after_nova_created_is_not_duplicated(faulty, proxy, direct, specs_for,
                                                                  cluster_name):
    """Nova created the servers, the answer was lost: the provider finds them instead of asking again."""
    proxy.add("POST", CREATE, 502, when="after")
    specs = specs_for(2)
    created = faulty.create(specs)
    assert sorted(i.name for i in created) == sorted(s.name for s in specs)
    assert proxy.requests("POST", CREATE) == [502]
    servers = nova_servers(direct, cluster_name)
    assert sorted(s.name for s in servers) == sorted(s.name for s in specs), [s.name for s in servers]


def test_create_refused_with_503_is_asked_again(faulty, proxy, direct, specs_for, cluster_name):
    proxy.add("POST", CREATE, 503, when="before")
    specs = specs_for(2)
    created = faulty.create(specs)
    assert len(created) == 2
    assert proxy.requests("POST", CREATE) == [503, 202]
    assert len(nova_servers(direct, cluster_name)) == 2


def test_create_refused_every_time_fails_and_creates_nothing(faulty, proxy, direct, specs_for, cluster_name):
    proxy.add("POST", CREATE, 503, when="before", times=None)
    with pytest.raises(ProviderError) as err:
        faulty.create(specs_for(2))
    assert proxy.requests("POST", CREATE) == [503] * (RETRIES + 1)
    assert "\n" not in str(err.value)
    assert nova_servers(direct, cluster_name) == []


def test_create_whose_servers_cannot_be_seen_leaves_them_findable(faulty, proxy, direct, specs_for,
                                                                   cluster_name):
    """Nova created the servers, but the answer and every look afterwards fail.

    The provider cannot delete what it cannot list: it gives up with one
    sentence, and what Nova made carries the cluster's tag, so reconcile
    (``orphan_instance``: a server of the cluster no registry node owns) finds
    and deletes it once the API answers again.
    """
    proxy.add("POST", CREATE, 500, when="after")
    proxy.add("GET", LIST, 503, times=None)
    specs = specs_for(2)
    with pytest.raises(ProviderError) as err:
        faulty.create(specs)
    assert "\n" not in str(err.value)
    assert proxy.requests("POST", CREATE) == [500]
    left = direct.list(cluster_name)
    assert len(left) == len(specs) and all(i.tags.get("cluster") == cluster_name for i in left), left


def test_delete_retries_a_passing_503(faulty, proxy, direct, specs_for, cluster_name):
    (inst,) = direct.create(specs_for(1))
    proxy.add("DELETE", r"/servers/[0-9a-f-]+$", 503, times=1)
    faulty.delete([inst.id])
    assert proxy.requests("DELETE", r"/servers/")[:2] == [503, 204]
    assert direct.get(inst.id) is None
