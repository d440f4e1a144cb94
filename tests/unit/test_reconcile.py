"""vcluster.reconcile over a real registry file.

The provider, key store and Slurm controller here are small in-memory
implementations of the engine's interfaces (the provider is a full
:class:`~vcluster.providers.base.Provider` subclass): reconcile's decisions
are what is under test. tests/integration/test_reconcile.py repeats each
repair against real LXD containers, Salt keys and slurmctld.
"""

import time

import pytest

from vcluster import reconcile, reconcile_repair
from vcluster.context import Context
from vcluster.errors import ProviderError
from vcluster.policy import load
from vcluster.providers.base import Instance, Provider, Status
from vcluster.registry import Registry

PILLAR = {
    "cluster": "unit",
    "controller": "ctl",
    "master": "10.9.0.1",
    "pools": {"p": {"names": "vn[01-08]", "addresses": "10.9.0.10-10.9.0.17"}},
    "providers": {"lxd": {"driver": "lxd", "network": "br", "storage_pool": "sp"}},
    "profiles": {"htc": {"image": "img", "join_timeout": 100}},
    "reconcile": {"grace": 50},
    "faults": {"create_deadline": 40},  # below grace: allocated nodes are stuck after grace
}


class MemoryProvider(Provider):
    driver = "memory"

    def __init__(self):
        super().__init__("lxd", {})
        self.instances = {}
        self.fail_list = False

    def create(self, specs):
        out = []
        for spec in specs:
            inst = Instance(id=f"i-{spec.name}", name=spec.name, status=Status.RUNNING,
                            address=spec.address, tags=dict(spec.tags))
            self.instances[inst.id] = inst
            out.append(inst)
        return out

    def add(self, iid, node, cluster="unit", request=None, status=Status.RUNNING):
        tags = {"cluster": cluster, "node": node}
        if request is not None:
            tags["registry_id"] = request
        self.instances[iid] = Instance(id=iid, name=node, status=status, tags=tags)

    def delete(self, instance_ids):
        self.calls["delete"] += 1
        return [i for i in instance_ids if self.instances.pop(i, None) is not None]

    def list(self, cluster):
        self.calls["list"] += 1
        if self.fail_list:
            raise ProviderError("the provider API is down")
        return [i for i in self.instances.values() if i.tags.get("cluster") == cluster]

    def get(self, instance_id):
        self.calls["get"] += 1
        return self.instances.get(instance_id)


class MemoryKeys:
    def __init__(self):
        self.keys = set()  # accepted
        self.pending = set()

    def gen_accept(self, name, clear=True):
        if clear:
            self.delete(name)
        self.keys.add(name)
        return {"pub": "pub", "priv": "priv"}

    def delete(self, name):
        self.keys.discard(name)
        self.pending.discard(name)

    def accepted(self):
        return set(self.keys)

    def all(self):
        return {**{n: "pending" for n in self.pending}, **{n: "accepted" for n in self.keys}}

    def master_pub(self):
        return "master"


class MemorySlurm:
    def __init__(self):
        self.nodes_ = {}
        self.jobs_ = []
        self.requeued = []

    def add(self, name, state=("IDLE",), dynamic=True):
        self.nodes_[name] = {"name": name, "state": list(state), "dynamic": dynamic}

    def nodes(self):
        return list(self.nodes_.values())

    def jobs(self, nodes=None):
        return [j for j in self.jobs_ if not nodes or set(j["nodes"]) & set(nodes)]

    def update_node(self, name, state, reason=None):
        self.nodes_[name]["state"] = [state]

    def delete_node(self, name):
        self.nodes_.pop(name, None)

    def requeue(self, job_id):
        self.requeued.append(job_id)
        self.jobs_ = [j for j in self.jobs_ if j["id"] != job_id]


class Bus:
    def __init__(self):
        self.events = []

    def fire(self, tag, data):
        self.events.append((tag, data))

    def progress(self, message, **data):
        pass

    def wait_for_nodes(self, registry, names, done_states, deadline):
        pass


@pytest.fixture
def ctx(tmp_path):
    policy = load(PILLAR)
    reg = Registry(tmp_path / "registry.sqlite")
    c = Context(policy=policy, registry=reg, keys=MemoryKeys(), slurm=MemorySlurm(), salt=None, events=Bus())
    c._providers["lxd"] = MemoryProvider()
    yield c
    reg.close()


def prov(ctx):
    return ctx.provider("lxd")


def ready_node(ctx, count=1):
    """Allocate, 'create' and join ``count`` nodes the way expand and join do."""
    pool = ctx.policy.pools["p"]
    nodes = ctx.registry.allocate(pool, "htc", "lxd", count, "req1", membership="dynamic")
    out = []
    for n in nodes:
        iid = f"i-{n.name}"
        prov(ctx).add(iid, n.name, request="req1")
        ctx.keys.gen_accept(n.name)
        ctx.registry.transition(n.name, "booting", instance_id=iid)
        ctx.registry.transition(n.name, "joining")
        ctx.registry.transition(n.name, "ready")
        ctx.slurm.add(n.name)
        out.append(n.name)
    return out


def age(ctx, name, seconds):
    """Pretend the node's last transition was ``seconds`` ago."""
    ctx.registry._db.execute("UPDATE nodes SET updated = ? WHERE name = ? AND state != 'released'",
                             (time.time() - seconds, name))


def kinds(ret):
    return {k: len(v) for k, v in ret["report"].items() if v}


def test_consistent_cluster_reports_nothing(ctx):
    ready_node(ctx, 2)
    ret = reconcile.reconcile(ctx)
    assert ret["result"] is True, ret
    assert kinds(ret) == {}
    # one listing per provider, no per-node lookups
    assert prov(ctx).calls["list"] == 1 and prov(ctx).calls["get"] == 0


def test_report_only_changes_nothing(ctx):
    prov(ctx).add("stray", "vn05")
    ctx.keys.gen_accept("vn06")
    ret = reconcile.reconcile(ctx, apply=False)
    assert ret["result"] is False
    assert kinds(ret) == {"orphan_instance": 1, "orphan_key": 1}
    assert "stray" in prov(ctx).instances and "vn06" in ctx.keys.keys
    assert ret["repairs"] == [] and ctx.events.events == []


def test_each_orphan_kind_is_repaired_with_one_event(ctx):
    a, b = ready_node(ctx, 2)
    prov(ctx).add("stray", "vn07")                     # instance without node
    prov(ctx).add("other-cluster", "vn08", cluster="elsewhere")  # not ours: untouched
    del prov(ctx).instances[f"i-{b}"]                  # node without instance
    ctx.slurm.jobs_.append({"id": 7, "state": "RUNNING", "nodes": [b]})
    ctx.keys.gen_accept("vn06")                        # key without node
    ctx.keys.gen_accept("admin-box")                   # not a pool name: untouched
    ctx.slurm.add("vn05")                              # Slurm node without node
    ctx.slurm.add("baremetal1")                        # not a pool name: untouched

    ret = reconcile.reconcile(ctx, apply=True)
    assert ret["result"] is True, ret
    assert kinds(ret) == {"orphan_instance": 1, "node_without_instance": 1, "orphan_key": 1,
                          "orphan_slurm_node": 1}
    assert all("error" not in r for r in ret["repairs"]), ret["repairs"]
    assert set(prov(ctx).instances) == {f"i-{a}", "other-cluster"}
    assert ctx.keys.keys == {a, "admin-box"}
    assert set(ctx.slurm.nodes_) == {a, "baremetal1"}
    assert ctx.slurm.requeued == [7]  # the job of the vanished node went back to the queue
    assert [n.name for n in ctx.registry.nodes()] == [a]
    released = ctx.registry.get(b, include_released=True)
    assert released.state == "released" and "disappeared" in released.reason
    tags = [t for t, _ in ctx.events.events if t.startswith("vcluster/reconcile/")]
    assert sorted(tags) == sorted(f"vcluster/reconcile/{k}" for k in
                                  ("orphan_instance", "node_without_instance", "orphan_key", "orphan_slurm_node"))
    # and a second run finds nothing
    assert kinds(reconcile.reconcile(ctx, apply=True)) == {}


def test_fresh_transitions_are_left_alone_and_old_ones_undone(ctx):
    pool = ctx.policy.pools["p"]
    nodes = ctx.registry.allocate(pool, "htc", "lxd", 3, "req2", membership="dynamic")
    alloc, boot, join = (n.name for n in nodes)
    for n in (boot, join):
        prov(ctx).add(f"i-{n}", n, request="req2")
        ctx.keys.gen_accept(n)
        ctx.registry.transition(n, "booting", instance_id=f"i-{n}")
    ctx.registry.transition(join, "joining")
    prov(ctx).add("i-late", alloc, request="req2")  # created; crash before its id was written
    ret = reconcile.reconcile(ctx, apply=True)
    assert kinds(ret) == {}, ret["report"]  # young: an expand may still be working on them
    age(ctx, alloc, 60)  # > grace 50
    age(ctx, boot, 60)  # < join_timeout 100
    age(ctx, join, 120)  # > join_timeout
    ret = reconcile.reconcile(ctx, apply=True)
    stuck = {i["node"]: i["state"] for i in ret["report"]["stuck"]}
    assert stuck == {alloc: "allocated", join: "joining"}
    assert {n.name for n in ctx.registry.nodes()} == {boot}
    assert reconcile.survey(ctx)[0]["stuck"] == []
    assert set(prov(ctx).instances) == {f"i-{boot}"}
    assert ctx.keys.keys == {boot}
    assert "did not join within 100" in ctx.registry.get(join, include_released=True).reason


def test_interrupted_retire_is_finished(ctx):
    (name,) = ready_node(ctx, 1)
    ctx.registry.transition(name, "draining")
    ctx.registry.transition(name, "retiring")
    age(ctx, name, 60)
    ret = reconcile.reconcile(ctx, apply=True)
    assert [i["state"] for i in ret["report"]["stuck"]] == ["retiring"]
    assert ctx.registry.get(name) is None
    assert prov(ctx).instances == {} and ctx.keys.keys == set() and ctx.slurm.nodes_ == {}


def test_interrupted_suspend_follows_the_instance(ctx):
    a, b = ready_node(ctx, 2)
    for n in (a, b):
        ctx.registry.transition(n, "suspending")
        age(ctx, n, 60)
    prov(ctx).instances[f"i-{a}"].status = Status.SUSPENDED
    reconcile.reconcile(ctx, apply=True)
    assert ctx.registry.get(a).state == "suspended"
    assert ctx.registry.get(b).state == "ready"


def test_duplicates_keep_the_registered_instance(ctx):
    (name,) = ready_node(ctx, 1)
    prov(ctx).add("i-dup", name, request="req1")  # same node, same request, other id
    ret = reconcile.reconcile(ctx, apply=True)
    # the registry names i-<name>: the other one is not owned, so it is an orphan
    assert kinds(ret) == {"orphan_instance": 1}
    assert set(prov(ctx).instances) == {f"i-{name}"}
    pool = ctx.policy.pools["p"]
    (n,) = ctx.registry.allocate(pool, "htc", "lxd", 1, "req3")
    prov(ctx).add("x1", n.name, request="req3")
    prov(ctx).add("x2", n.name, request="req3")
    ret = reconcile.reconcile(ctx, apply=True)
    assert kinds(ret) == {"duplicate_instance": 1}
    assert ret["report"]["duplicate_instance"][0]["keep"] is None
    assert ctx.registry.get(n.name) is None and set(prov(ctx).instances) == {f"i-{name}"}


def test_pending_key_of_a_pool_name_is_an_orphan(ctx):
    """A guest that outlived its deleted key re-authenticates: a pending key is left."""
    (name,) = ready_node(ctx, 1)
    ctx.keys.pending.update({"vn08", name, "admin-box"})
    ret = reconcile.reconcile(ctx, apply=False)
    assert ret["report"]["orphan_key"] == [{"node": "vn08", "key_state": "pending"}], ret
    ret = reconcile.reconcile(ctx, apply=True)
    assert ret["result"] is True, ret
    # the node's own name and a name outside the pool are not touched
    assert ctx.keys.pending == {name, "admin-box"} and ctx.keys.keys == {name}


def test_failed_listing_deletes_nothing(ctx):
    (name,) = ready_node(ctx, 1)
    ctx.keys.gen_accept("vn08")
    prov(ctx).fail_list = True
    ret = reconcile.reconcile(ctx, apply=True)
    assert ret["result"] is False
    assert "provider lxd" in ret["comment"] and "skipped" in ret["comment"]
    assert ctx.registry.get(name).state == "ready"  # not "instance gone"
    assert kinds(ret) == {"orphan_key": 1}  # the other views still work


def test_node_born_during_the_survey_is_not_an_orphan(ctx):
    """An expand writing an instance id after the listing must not look like a lost instance."""
    pool = ctx.policy.pools["p"]
    (n,) = ctx.registry.allocate(pool, "htc", "lxd", 1, "req4")
    real_list = prov(ctx).list

    def list_then_expand(cluster):
        out = real_list(cluster)
        time.sleep(0.01)
        ctx.provider("lxd").add("i-new", n.name, request="req4")
        ctx.registry.transition(n.name, "booting", instance_id="i-new")
        return out

    prov(ctx).list = list_then_expand
    ret = reconcile.reconcile(ctx, apply=True)
    assert kinds(ret) == {}, ret["report"]
    assert ctx.registry.get(n.name).state == "booting"


def test_second_reconcile_waits_its_turn(ctx):
    with reconcile._exclusive(ctx.registry) as mine:
        assert mine
        ret = reconcile.reconcile(ctx, apply=True)
    assert ret["skipped"] is True


def test_schedule_due(ctx):
    ok, _ = reconcile.due(ctx.policy, ctx.registry)
    assert ok  # never ran
    reconcile.reconcile(ctx)
    ok, why = reconcile.due(ctx.policy, ctx.registry)
    assert not ok and "interval 300" in why
    assert reconcile.due(ctx.policy, ctx.registry, now=time.time() + 300)[0]
    off = load(dict(PILLAR, reconcile={"interval": 0}))
    assert not reconcile.due(off, ctx.registry, now=time.time() + 10**6)[0]
    assert reconcile.scheduled(ctx)["skipped"] is True


def test_bad_arguments_are_one_sentence(ctx):
    from vcluster.errors import PolicyError

    with pytest.raises(PolicyError, match="apply must be true or false, got 'maybe'"):
        reconcile.reconcile(ctx, apply="maybe")
    with pytest.raises(PolicyError, match="grace must be a number of seconds"):
        reconcile.reconcile(ctx, grace="soon")


def test_orphan_whose_name_is_allocated_again_is_left_alone(ctx):
    """LXD ids are names: a repair must not delete the instance of a node allocated since the survey."""
    prov(ctx).add("vn01", "vn01")
    found, _ = reconcile.survey(ctx)
    (item,) = found["orphan_instance"]
    ctx.registry.allocate(ctx.policy.pools["p"], "htc", "lxd", 1, "again")
    assert reconcile_repair.repair(ctx, "orphan_instance", item) == "node allocated meanwhile, left alone"
    assert "vn01" in prov(ctx).instances


def test_cloud_mode_powered_down_pool_nodes_are_expected(ctx):
    ctx.slurm.add("vn03", state=("IDLE", "CLOUD", "POWERED_DOWN"), dynamic=False)
    ctx.slurm.add("vn04", state=("IDLE", "CLOUD"), dynamic=False)  # powered up, but no node: orphan
    # powering up with a job, its node released after a failed join: Slurm's
    # ResumeTimeout and ResumeFailProgram handle it, reconcile must not requeue
    ctx.slurm.add("vn02", state=("MIXED", "CLOUD", "POWERING_UP"), dynamic=False)
    ret = reconcile.reconcile(ctx, apply=True)
    assert [i["node"] for i in ret["report"]["orphan_slurm_node"]] == ["vn04"]
    assert "power saving" in ret["repairs"][0]["action"]
    ctx.slurm.add("vn05", dynamic=False)  # a configured node of a pool name without node: set DOWN
    reconcile.reconcile(ctx, apply=True)
    assert ctx.slurm.nodes_["vn05"]["state"] == ["DOWN"]


def test_allocation_is_not_stuck_while_a_create_may_still_run(ctx):
    slow = load(dict(PILLAR, faults={"create_deadline": 500}))
    ctx.policy = slow
    (n,) = ctx.registry.allocate(ctx.policy.pools["p"], "htc", "lxd", 1, "slow")
    age(ctx, n.name, 100)  # > grace 50, < create_deadline 500
    assert reconcile.survey(ctx)[0]["stuck"] == []
    age(ctx, n.name, 501)
    assert [i["node"] for i in reconcile.survey(ctx)[0]["stuck"]] == [n.name]
