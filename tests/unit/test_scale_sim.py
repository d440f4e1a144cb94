"""Calls per operation of the control plane on a simulated site (tests/sim/site.py).

The real registry, policy, engine, reconcile, autoscale, liveness and the
real master and controller sides of the Salt calls run against a simulated
Slurm, Salt transport and provider (a site of hundreds of nodes cannot run
here). The numbers pinned are calls, never times: a periodic task must make
the same number of Salt, Slurm and provider calls whatever the number of
nodes, and an expand must call the provider per batch, not per node.
bench/scale.py measures the same operations at 100 to 10,000 nodes.
"""

import itertools
import math
import os

import pytest

from tests.sim.site import Site
from vcluster import autoscale, liveness, reconcile
from vcluster import expand as vexpand
from vcluster import status as vstatus
from vcluster.providers import openstack

CATEGORIES = ("salt", "slurm", "provider")


@pytest.fixture
def sites(tmp_path):
    made = []

    def make(size, **kwargs):
        path = tmp_path / f"site{len(made)}"
        path.mkdir()
        site = Site(str(path), size, **kwargs)
        made.append(site)
        return site

    yield make
    for site in made:
        site.close()


def calls_of(site, call):
    ret, measured = site.measure(call)
    return ret, {k: measured["calls"][k] for k in CATEGORIES}, measured["by_kind"]


def test_the_simulated_slurm_reads_through_the_real_client_and_parsers(sites):
    site = sites(200)
    nodes = site.ctx.slurm.nodes()
    jobs = site.ctx.slurm.jobs()
    assert len(nodes) == 200 + 20  # virtual and bare-metal nodes
    by_name = {n["name"]: n for n in nodes}
    assert by_name["vn00000"]["state"] == ["IDLE", "DRAIN"] and by_name["vn00000"]["reason"] == "warm pool"
    assert by_name["vn00002"]["dynamic"] is True and by_name["bm00000"]["dynamic"] is False
    running = [j for j in jobs if j["state"] == "RUNNING"]
    assert len(running) == len(range(0, 198, 2)) + len(range(0, 20, 2))
    assert all(len(j["nodes"]) == 1 and by_name[j["nodes"][0]]["state"][0] == "ALLOCATED" for j in running)
    assert sum(1 for j in jobs if j["state"] == "PENDING") == 10
    assert site.slurm.unsupported == [] and site.salt.unsupported == []


#: Slurm commands that read the whole cluster: each periodic operation runs each of its listings once.
LISTINGS = ("slurm:scontrol show node", "slurm:squeue", "slurm:sinfo")


@pytest.mark.parametrize("name, call, most, listings", [
    # most: Salt calls and provider calls at most (the site has 3 providers: one list each at most);
    # listings: the whole-cluster reads it makes
    ("status", lambda ctx: vstatus.status(ctx), {"salt": 3, "provider": 2},
     {"slurm:scontrol show node": 1, "slurm:squeue": 1}),
    ("reconcile", lambda ctx: reconcile.reconcile(ctx, apply=True), {"salt": 2, "provider": 3},
     {"slurm:scontrol show node": 1}),
    ("autoscale", lambda ctx: autoscale.run(ctx), {"salt": 2, "provider": 0},
     {"slurm:scontrol show node": 1, "slurm:squeue": 1}),
])
def test_a_periodic_operation_makes_the_same_calls_at_200_and_600_nodes(sites, name, call, most, listings):
    small, large = sites(200), sites(600)
    ret_small, small_calls, small_kinds = calls_of(small, lambda: call(small.ctx))
    ret_large, large_calls, by_kind = calls_of(large, lambda: call(large.ctx))
    assert ret_small["result"] is True and ret_large["result"] is True
    # not one call more of any kind for three times the nodes
    assert small_kinds == by_kind, (name, small_kinds, by_kind)
    assert small_calls == large_calls, (name, small_calls, large_calls)
    for category, bound in most.items():
        assert large_calls[category] <= bound, (name, by_kind)
    assert {k: v for k, v in by_kind.items() if k in LISTINGS} == listings, (name, by_kind)
    # every Salt call is a different one: no per-node call
    assert max(v for k, v in by_kind.items() if not k.startswith("slurm:")) <= 1, (name, by_kind)


def test_status_and_reconcile_see_every_node_and_nothing_wrong(sites):
    site = sites(600)
    status = vstatus.status(site.ctx)
    assert status["count"] == 600
    assert status["nodes"]["vn00000"]["slurm"] == "IDLE+DRAIN" and status["nodes"]["vn00000"]["state"] == "suspended"
    assert status["nodes"]["vn00010"]["slurm"] == "ALLOCATED" and len(status["nodes"]["vn00010"]["jobs"]) == 1
    assert status["nodes"]["vn00011"]["slurm"] == "IDLE" and status["nodes"]["vn00011"]["jobs"] == []
    report = reconcile.reconcile(site.ctx, apply=True)
    assert report["result"] is True and not any(report["report"].values()) and report["repairs"] == []


def test_autoscale_in_steady_state_acts_on_nothing(sites):
    site = sites(600)
    ret = autoscale.run(site.ctx)
    act = ret["actions"]["htc"]
    assert act == {"expand": 0, "resume": [], "retire": [], "warm": []}, act


def test_reconcile_finds_and_repairs_a_lost_instance_with_per_finding_calls_only(sites):
    site = sites(200)
    site.provider.instances.pop("i-vn00100")  # deleted behind vcluster's back
    ret, calls, by_kind = calls_of(site, lambda: reconcile.reconcile(site.ctx, apply=True))
    assert [f["node"] for f in ret["report"]["node_without_instance"]] == ["vn00100"]
    assert ret["repairs"][0]["action"].startswith("retired"), ret["repairs"]
    assert site.registry.get("vn00100") is None and "vn00100" not in site.slurm.nodes
    assert "vn00100" not in site.salt.keys
    # one survey, then the one repair: a second look at the instance, its jobs requeued, Slurm node and key deleted
    assert by_kind.get("provider:get") == 1 and by_kind.get("local:slurm.delete_node") == 1
    assert calls["provider"] == 4 and by_kind.get("wheel:key.delete") == 1, by_kind  # 3 lists, 1 get
    # one listing of the node's jobs (squeue --nodelist, or the whole JSON listing on an older client)
    assert by_kind.get("slurm:scontrol show node") == 1, by_kind
    assert by_kind.get("slurm:squeue --nodelist", 0) + by_kind.get("slurm:squeue", 0) == 1, by_kind


@pytest.mark.skipif(os.geteuid() != 0, reason="the liveness probe opens a raw socket, as on the controller (root)")
def test_a_liveness_round_makes_the_same_calls_at_100_and_1000_nodes(sites):
    """Every live node heard in one scan: none flagged, none set DOWN, no closer look at any.

    1,100 SYN-ACKs in one burst (3,300 packets on loopback, where the raw
    socket also sees its own SYNs and RSTs) overflowed the probe's default
    receive buffer once and set 570 live nodes DOWN (docs/scaling.md).
    """
    small, large = sites(100), sites(1000)
    ret_small, small_calls, _ = calls_of(small, lambda: liveness.check(small.ctx))
    ret_large, large_calls, by_kind = calls_of(large, lambda: liveness.check(large.ctx))
    assert len(ret_small["down"]) == 0 and len(ret_large["down"]) == 0, (ret_small["down"], ret_large["down"])
    assert ret_large["watched"] == 1000 - 10 + 100  # ready virtual nodes (warm ones are frozen) and bare metal
    assert small_calls == large_calls, (small_calls, large_calls, by_kind)
    assert max(v for k, v in by_kind.items() if not k.startswith("slurm:")) <= 1, by_kind
    assert by_kind.get("slurm:scontrol show node") == 1, by_kind


def test_expand_calls_the_provider_once_per_batch(sites):
    site = sites(200, max_batch=16)
    ret, calls, by_kind = calls_of(site, lambda: vexpand.expand(site.ctx, "htc", 64, wait=False))
    assert {v["state"] for v in ret["nodes"].values()} == {"booting"}
    assert by_kind["provider:create"] == 4 and calls["provider"] == 4 + 1
    # keys: one listing and the master's public key, none per node; no Slurm call before the nodes boot
    assert calls["salt"] == 2 and calls["slurm"] == 0, by_kind
    assert site.salt.generated == 64


def test_openstack_expand_is_one_create_per_batch_plus_two_calls_per_server(sites):
    # 8 parts of key-sized user data (~3 KiB each) stay far below Nova's 64 KiB: batches of max_batch
    site = sites(200, max_batch=8)
    ret, calls, by_kind = calls_of(site, lambda: vexpand.expand(site.ctx, "os", 64, wait=False))
    assert {v["state"] for v in ret["nodes"].values()} == {"booting"}
    assert by_kind["nova:create"] == math.ceil(64 / 8)
    assert by_kind["nova:list"] <= 3  # one list per poll round, every batch at once
    # Nova cannot name or tag the servers of one multi-create one by one: a rename and a
    # metadata call per server once ACTIVE (docs/scaling.md), in a thread pool
    assert by_kind["nova:rename"] == 64 and by_kind["nova:metadata"] == 64


def test_plan_batches_makes_each_part_once_and_few_archives(monkeypatch):
    """The user-data limit is found by bisection, not by one archive per added part (quadratic)."""
    from tests.unit.test_openstack_batching import spec

    made = {"cloud_config": 0, "batch_user_data": 0}
    real_cc, real_bud = openstack.cloud_config, openstack.batch_user_data

    def cloud_config(*args, **kwargs):
        made["cloud_config"] += 1
        return real_cc(*args, **kwargs)

    def batch_user_data(*args, **kwargs):
        made["batch_user_data"] += 1
        return real_bud(*args, **kwargs)

    # where plan_batches looks them up: the package's user-data module
    monkeypatch.setattr(openstack.userdata, "cloud_config", cloud_config)
    monkeypatch.setattr(openstack.userdata, "batch_user_data", batch_user_data)
    # ~3 KiB of incompressible boot data per node, like a minion key pair: the limit splits batches
    specs = [spec(i, boot=os.urandom(1800).hex()) for i in range(120)]
    batches = openstack.plan_batches(specs, ["k"] * 120, max_batch=50)
    assert made["cloud_config"] <= 2 * len(specs)
    assert made["batch_user_data"] <= len(batches) * (math.ceil(math.log2(50)) + 1)
    assert sorted(i for b in batches for i in b) == list(range(120)) and len(batches) > 3
    for batch in batches:
        data = real_bud([specs[i] for i in batch])
        assert openstack.encoded_size(data) <= openstack.USER_DATA_LIMIT
    # each batch is as long as the limit allows: one more part would not fit
    for batch, following in itertools.pairwise(batches):
        if len(batch) < 50:
            assert openstack.encoded_size(real_bud([specs[i] for i in batch + following[:1]])) > \
                openstack.USER_DATA_LIMIT
