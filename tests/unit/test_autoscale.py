"""Power saving (cloud membership) and autoscale: policy keys, decisions, handlers.

The handlers run against a real registry and in-memory provider, keys and
Slurm; Salt itself is tested in tests/integration/test_cloud_mode.py.
"""

import contextlib
import copy
import json
import pathlib
import re

import pytest

from vcluster import autoscale, policy, powersave
from vcluster.context import Context
from vcluster.errors import PolicyError
from vcluster.providers.base import Instance, Provider, Status
from vcluster.registry import Registry
from vcluster.slurm import parse

DATA_SLURM = pathlib.Path(__file__).parent / "data" / "slurm"

BASE = {
    "cluster": "unit",
    "controller": "ctl",
    "master": "10.9.0.1",
    "pools": {
        "cloudp": {"names": "cn[01-06]", "addresses": "10.9.0.10-10.9.0.15"},
        "dyn": {"names": "dn[01-06]", "addresses": "10.9.0.20-10.9.0.25"},
    },
    "providers": {"lxd": {"driver": "lxd", "network": "br", "storage_pool": "sp"}},
    "profiles": {
        "burst": {"image": "img", "pool": "cloudp", "membership": "cloud", "features": ["virtual", "burst"],
                  "partition": "cloud", "join_timeout": 100, "max_nodes": 4},
        "htc": {"image": "img", "pool": "dyn", "partition": "htc", "join_timeout": 100},
    },
}


def load(**extra):
    data = copy.deepcopy(BASE)
    for key, value in extra.items():
        data[key] = value
    return policy.load(data)


def refused(message, **extra):
    with pytest.raises(PolicyError) as err:
        load(**extra)
    text = str(err.value)
    assert text == message
    assert "\n" not in text and not re.search(r"[.!?]\s+[A-Z]", text)


# -- policy keys ------------------------------------------------------------------------


def test_defaults():
    pol = load()
    assert pol.power_save == policy.PowerSave()
    assert pol.power_save.suspend_time == 600 and pol.power_save.resume_timeout == 600
    assert pol.autoscale.enabled is False and pol.autoscale.interval == 60
    assert pol.autoscale.job_flag == "vcluster-own" and dict(pol.autoscale.profiles) == {}
    assert pol.as_dict()["power_save"]["suspend_rate"] == 0


def test_power_save_and_autoscale_accepted():
    pol = load(
        power_save={"suspend_time": 120, "suspend_timeout": 30, "resume_timeout": 300, "resume_rate": 5,
                    "suspend_rate": 10, "exclude_nodes": "spare[1-2]", "exclude_partitions": ["batch"]},
        autoscale={"enabled": True, "interval": 30, "job_flag": "own",
                   "profiles": {"htc": {"min_nodes": 1, "max_nodes": 5, "idle_time": 90, "warm_pool": 2,
                                        "per_job": True},
                                "burst": {"warm_pool": 1}}},
    )
    assert pol.power_save.exclude_nodes == ("spare1", "spare2")
    assert pol.power_save.exclude_partitions == ("batch",)
    htc = pol.autoscale.profiles["htc"]
    assert (htc.min_nodes, htc.max_nodes, htc.idle_time, htc.warm_pool, htc.per_job) == (1, 5, 90, 2, True)
    assert pol.autoscale.as_dict()["profiles"]["burst"]["warm_pool"] == 1


@pytest.mark.parametrize("extra, message", [
    ({"power_save": {"suspend_time": "soon"}}, "vcluster:power_save:suspend_time must be a positive integer, got 'soon'"),
    ({"power_save": {"suspend_time": 0}}, "vcluster:power_save:suspend_time must be a positive integer, got 0"),
    ({"power_save": {"resume_rate": -1}}, "vcluster:power_save:resume_rate must be a whole number, zero or more, got -1"),
    ({"power_save": {"resume_timeout": 100}},
     "vcluster:power_save:resume_timeout must exceed the join_timeout of cloud profile 'burst' (100 s), got 100"),
    ({"power_save": {"exclude_nodes": "bad[1-"}}, "vcluster:power_save:exclude_nodes is not a valid Slurm hostlist, got 'bad[1-'"),
    ({"power_save": {"exclude_partitions": "batch"}},
     "vcluster:power_save:exclude_partitions must be a list of Slurm partition names, got 'batch'"),
    ({"power_save": {"suspendtime": 5}},
     "vcluster:power_save:suspendtime is not a known key (did you mean 'suspend_time'?), accepted keys are "
     "exclude_nodes, exclude_partitions, resume_rate, resume_timeout, suspend_rate, suspend_time, suspend_timeout"),
    ({"autoscale": {"interval": "1m"}}, "vcluster:autoscale:interval must be a positive integer, got '1m'"),
    ({"autoscale": {"enabled": "yes"}}, "vcluster:autoscale:enabled must be true or false, got 'yes'"),
    ({"autoscale": {"job_flag": "own it"}},
     "vcluster:autoscale:job_flag must be a word of letters, digits, '-' or '_', got 'own it'"),
    ({"autoscale": {"profiles": {"gpu": {}}}},
     "vcluster:autoscale:profiles keys must name profiles defined in vcluster:profiles (burst, htc), got 'gpu'"),
    ({"autoscale": {"profiles": {"htc": {"warm_pool": -1}}}},
     "vcluster:autoscale:profiles:htc:warm_pool must be a whole number, zero or more, got -1"),
    ({"autoscale": {"profiles": {"htc": {"min_nodes": 3, "max_nodes": 2}}}},
     "vcluster:autoscale:profiles:htc:min_nodes must not exceed max_nodes (2), got 3"),
    ({"autoscale": {"profiles": {"htc": {"min_nodes": 2, "warm_pool": 2, "max_nodes": 3}}}},
     "vcluster:autoscale:profiles:htc:warm_pool plus min_nodes (2) must not exceed max_nodes (3), got 2"),
    ({"autoscale": {"profiles": {"burst": {"max_nodes": 9}}}},
     "vcluster:autoscale:profiles:burst:max_nodes must not exceed the profile's limit (4), got 9"),
    ({"autoscale": {"profiles": {"burst": {"min_nodes": 1}}}},
     "vcluster:autoscale:profiles:burst:min_nodes must be 0 for a cloud profile (Slurm's power saving decides "
     "which names run), got 1"),
    ({"autoscale": {"profiles": {"htc": {"idle": 5}}}},
     "vcluster:autoscale:profiles:htc:idle is not a known key (did you mean 'idle_time'?), accepted keys are "
     "idle_time, max_nodes, min_nodes, per_job, warm_pool"),
])
def test_bad_values_refused_in_one_sentence(extra, message):
    refused(message, **extra)


def _with_profile(name, **keys):
    data = copy.deepcopy(BASE)
    data["profiles"][name].update(keys)
    return data


def test_profile_resume_timeout_overrides_the_clusters():
    data = _with_profile("burst", resume_timeout=150)
    data["power_save"] = {"resume_timeout": 100}  # below burst's join_timeout: burst has its own
    assert policy.load(data).profiles["burst"].resume_timeout == 150


@pytest.mark.parametrize("name, value, message", [
    ("burst", 100, "vcluster:profiles:burst:resume_timeout must exceed the profile's join_timeout (100 s), got 100"),
    ("htc", 150, "vcluster:profiles:htc:resume_timeout applies to cloud membership only, got 150"),
    ("burst", "5m", "vcluster:profiles:burst:resume_timeout must be a positive integer, got '5m'"),
])
def test_profile_resume_timeout_refused(name, value, message):
    with pytest.raises(PolicyError) as err:
        policy.load(_with_profile(name, resume_timeout=value))
    assert str(err.value) == message


def test_cloud_pool_must_not_be_shared():
    data = copy.deepcopy(BASE)
    data["profiles"]["other"] = {"image": "img", "pool": "cloudp"}
    with pytest.raises(PolicyError, match=r"^vcluster:profiles:other:pool must not share the pool of cloud "
                                          r"profile 'burst' .*, got 'cloudp'$"):
        policy.load(data)


# -- fakes ---------------------------------------------------------------------------------


class MemoryProvider(Provider):
    driver = "memory"

    def __init__(self):
        super().__init__("lxd", {})
        self.instances = {}
        self.frozen = set()

    def create(self, specs):
        out = []
        for spec in specs:
            inst = Instance(id=f"i-{spec.name}", name=spec.name, status=Status.RUNNING, address=spec.address,
                            tags=dict(spec.tags))
            self.instances[inst.id] = inst
            out.append(inst)
        return out

    def delete(self, instance_ids):
        return [i for i in instance_ids if self.instances.pop(i, None) is not None]

    def list(self, cluster):
        return list(self.instances.values())

    def get(self, instance_id):
        return self.instances.get(instance_id)

    def suspend(self, instance_id, mode="suspend"):
        self.frozen.add(instance_id)

    def resume(self, instance_id):
        self.frozen.discard(instance_id)
        return self.instances[instance_id]


class MemoryKeys:
    def __init__(self):
        self.keys = set()

    def gen_accept(self, name, clear=True):
        self.keys.add(name)
        return {"pub": "PUB", "priv": "PRIV"}

    def delete(self, name):
        self.keys.discard(name)

    def accepted(self):
        return set(self.keys)

    def all(self):
        return {n: "accepted" for n in self.keys}

    def master_pub(self):
        return "MASTER"


class MemorySlurm:
    def __init__(self):
        self.updates = []
        self.nodes_ = {}
        self.jobs_ = []

    def nodes(self):
        return list(self.nodes_.values())

    def jobs(self, nodes=None):
        return [j for j in self.jobs_ if not nodes or set(j["nodes"]) & set(nodes)]

    def update_node(self, name, state, reason=None):
        self.updates.append((name, state, reason))

    def delete_node(self, name):
        self.updates.append((name, "deleted", None))

    def reserve_for_job(self, job_id, nodes, user):
        self.updates.append((str(job_id), "reserved", (list(nodes), user)))
        return {"reservation": f"vcjob{job_id}", "nodes": list(nodes)}

    def delete_reservation(self, name):
        self.updates.append((name, "reservation deleted", None))
        return True


class Bus:
    def __init__(self):
        self.events = []

    def fire(self, tag, data):
        self.events.append((tag, data))

    def progress(self, message, **data):
        pass

    def wait_for_nodes(self, registry, names, done_states, deadline):
        pass

    @contextlib.contextmanager
    def watch(self, tag):
        self.events.append(("watch", tag))
        yield lambda seconds: True


class Salt:
    def __init__(self):
        self.calls = []

    def _call(self, target, fun, arg=(), kwarg=None, timeout=60, tgt_type="glob"):
        self.calls.append((target, fun, list(arg)))
        return {target: {"ret": True, "retcode": 0}}

    def restart_slurmd(self, minion, timeout):
        self.calls.append((minion, "restart_slurmd", []))
        return True


@pytest.fixture
def ctx(tmp_path):
    data = copy.deepcopy(BASE)
    data["autoscale"] = {"profiles": {"burst": {"warm_pool": 0}}}
    reg = Registry(tmp_path / "registry.sqlite")
    c = Context(policy=policy.load(data), registry=reg, keys=MemoryKeys(), slurm=MemorySlurm(), salt=Salt(),
                events=Bus())
    c._providers["lxd"] = MemoryProvider()
    yield c
    reg.close()


def with_warm(ctx, n):
    data = copy.deepcopy(BASE)
    data["autoscale"] = {"profiles": {"burst": {"warm_pool": n}}}
    ctx.policy = policy.load(data)


def join(ctx, names):
    for name in names:
        ctx.registry.transition(name, "joining")
        ctx.registry.transition(name, "ready")


# -- power-saving handlers -------------------------------------------------------------------


def test_only_the_controller_may_send(ctx):
    ret = powersave.handle(ctx, "resume", "cn01", "cn02")
    assert ret["result"] is False and ret["ignored"] is True
    assert ctx.registry.nodes() == [] and ctx.provider("lxd").instances == {}


def test_bad_action_and_hostlist_refused(ctx):
    with pytest.raises(PolicyError, match=r"^action must be one of resume, suspend, resume_fail, got 'boom'$"):
        powersave.handle(ctx, "boom", "cn01", "ctl")
    with pytest.raises(PolicyError, match="hostlist"):
        powersave.handle(ctx, "resume", "cn[01", "ctl")


def test_resume_creates_exactly_the_named_nodes(ctx):
    # what Slurm 22.05 writes to SLURM_RESUME_FILE (measured with the harness)
    resume_file = {"jobs": [{"job_id": 41, "nodes": "cn[02,05]"}], "all_nodes": "cn[02,05]"}
    ret = powersave.handle(ctx, "resume", "cn[02,05],dn01,foreign1", "ctl", resume_file)
    assert ret["result"] is True, ret
    assert ret["nodes"]["cn02"] == ret["nodes"]["cn05"] == "booting"
    assert ret["nodes"]["dn01"].startswith("ignored") and ret["nodes"]["foreign1"].startswith("ignored")
    nodes = {n.name: n for n in ctx.registry.nodes()}
    assert sorted(nodes) == ["cn02", "cn05"]
    assert all(n.membership == "cloud" and n.state == "booting" for n in nodes.values())
    assert sorted(ctx.provider("lxd").instances) == ["i-cn02", "i-cn05"]
    assert ctx.keys.accepted() == {"cn02", "cn05"}
    assert ctx.registry.jobs_on("cn02") == ["41"]
    # a second resume of the same names does nothing new
    again = powersave.handle(ctx, "resume", "cn02", "ctl")
    assert again["nodes"]["cn02"] == "already booting"
    assert len(ctx.provider("lxd").instances) == 2


def test_resume_over_the_limit_sets_down(ctx):
    ret = powersave.resume(ctx, ["cn01", "cn02", "cn03", "cn04", "cn05"])
    assert ret["result"] is False
    assert ret["nodes"]["cn05"] == "failed: profile burst is at its node limit"
    assert ("cn05", "DOWN", "vcluster: profile burst is at its node limit") in ctx.slurm.updates
    assert len(ctx.registry.nodes()) == 4


def test_failed_create_releases_and_sets_down(ctx):
    def boom(specs):
        raise RuntimeError("quota exceeded")

    ctx.provider("lxd").create = boom
    ret = powersave.resume(ctx, ["cn01"])
    assert ret["result"] is False and "quota exceeded" in ret["nodes"]["cn01"]
    assert ctx.registry.get("cn01") is None and ctx.keys.accepted() == set()
    assert ctx.slurm.updates[-1][:2] == ("cn01", "DOWN")


def test_suspend_retires_idle_node(ctx):
    powersave.resume(ctx, ["cn01"])
    join(ctx, ["cn01"])
    ret = powersave.handle(ctx, "suspend", "cn01,cn03", "ctl")
    assert ret["nodes"] == {"cn01": "released", "cn03": "not held"}
    assert ctx.registry.get("cn01") is None
    assert ctx.provider("lxd").instances == {} and ctx.keys.accepted() == set()
    assert ctx.registry.get("cn01", include_released=True).reason == "powered down by Slurm"


def test_suspend_keeps_warm_pool_and_resume_thaws_it(ctx):
    with_warm(ctx, 1)
    powersave.resume(ctx, ["cn01", "cn02"])
    join(ctx, ["cn01", "cn02"])
    ret = powersave.power_down(ctx, ["cn01", "cn02"])
    assert ret["nodes"] == {"cn01": "suspended (warm pool)", "cn02": "released"}
    assert ctx.registry.get("cn01").state == "suspended"
    assert ctx.provider("lxd").frozen == {"i-cn01"}
    ret = powersave.resume(ctx, ["cn01"])
    assert ret["nodes"]["cn01"] == "resumed from the warm pool"
    assert ctx.registry.get("cn01").state == "ready" and ctx.provider("lxd").frozen == set()
    assert ("cn01", "restart_slurmd", []) in ctx.salt.calls


def warm_node(ctx):
    with_warm(ctx, 1)
    powersave.resume(ctx, ["cn01"])
    join(ctx, ["cn01"])
    assert powersave.power_down(ctx, ["cn01"])["nodes"] == {"cn01": "suspended (warm pool)"}


def test_a_warm_pool_node_is_retired_as_it_is(ctx):
    from vcluster import retire as vretire

    warm_node(ctx)
    ret = vretire.retire(ctx, "cn01")
    assert ret["result"] is True and ret["nodes"] == {"cn01": "released"}, ret
    assert ctx.registry.get("cn01") is None and ctx.provider("lxd").instances == {}
    assert ctx.keys.accepted() == set()
    assert ("cn01", "POWER_DOWN_FORCE", None) in ctx.slurm.updates  # cloud name: powered down in Slurm


def test_admin_resume_of_a_cloud_warm_node_is_refused_before_any_change(ctx):
    from vcluster import suspend_resume as suspend

    warm_node(ctx)
    calls = list(ctx.salt.calls)
    with pytest.raises(PolicyError, match=r"^cn01 is in the warm pool, which Slurm powers up when a job needs it: "
                                          r"scontrol update nodename=cn01 state=POWER_UP$"):
        suspend.resume(ctx, "cn01")
    assert ctx.registry.get("cn01").state == "suspended" and ctx.provider("lxd").frozen == {"i-cn01"}
    assert ctx.salt.calls == calls


def test_a_suspended_node_with_jobs_is_refused_and_not_shrunk(ctx):
    from vcluster import retire as vretire

    warm_node(ctx)
    ctx.slurm.jobs_.append({"id": 9, "state": "SUSPENDED", "nodes": ["cn01"]})
    with pytest.raises(PolicyError, match=r"^suspended node\(s\) cn01 hold suspended jobs; resume them first"):
        vretire.retire(ctx, "cn01", force=True)
    ret = vretire.shrink(ctx, 1, "burst")
    assert ret["nodes"] == {} and ctx.registry.get("cn01").state == "suspended", ret
    assert ctx.provider("lxd").instances


def test_resume_fail_releases_and_sets_down_with_reason(ctx):
    powersave.resume(ctx, ["cn03"])
    ret = powersave.handle(ctx, "resume_fail", "cn03,cn04", "ctl")
    assert ret["nodes"] == {"cn03": "released", "cn04": "not held"}
    assert ctx.registry.get("cn03") is None and ctx.provider("lxd").instances == {}
    downs = {n: r for n, s, r in ctx.slurm.updates if s == "DOWN"}
    assert downs["cn03"] == downs["cn04"] == "vcluster: resume failed: it did not register within ResumeTimeout"
    assert "Slurm gave up resuming it" in ctx.registry.get("cn03", include_released=True).reason


def test_resume_fail_after_failed_join_gives_the_join_reason(ctx):
    powersave.resume(ctx, ["cn02"])
    from vcluster import lifecycle

    lifecycle.fail(ctx, "cn02", "highstate failed: no munge key")
    powersave.resume_fail(ctx, ["cn02"])
    assert ctx.slurm.updates[-1] == ("cn02", "DOWN", "vcluster: resume failed: highstate failed: no munge key")


def test_no_secret_in_events(ctx):
    ctx.policy.providers["lxd"].options._data["password"] = "s3cret"  # noqa: SLF001
    powersave.resume(ctx, ["cn01"])
    assert "s3cret" not in json.dumps(ctx.events.events)


# -- autoscale decisions -----------------------------------------------------------------------


class N:
    def __init__(self, name, state="ready", profile="htc", reason=None):
        self.name, self.state, self.profile, self.reason = name, state, profile, reason


def scaled(**profiles):
    data = copy.deepcopy(BASE)
    data["autoscale"] = {"enabled": True, "interval": 30, "profiles": profiles}
    return policy.load(data)


def test_pending_jobs_thaw_warm_nodes_first_then_expand():
    pol = scaled(htc={"max_nodes": 5, "warm_pool": 1})
    nodes = [N("dn01", "suspended", reason="warm pool")]
    jobs = [{"id": i, "state": "PENDING", "partition": "htc", "reason": "Resources", "nodes": []} for i in range(3)]
    act = autoscale.plan(pol, nodes, {}, jobs, {}, 1000)["htc"]
    assert act["resume"] == ["dn01"] and act["expand"] == 2
    assert act["retire"] == [] and act["warm"] == []


def test_expand_capped_by_max_and_held_jobs_ignored():
    pol = scaled(htc={"max_nodes": 2})
    jobs = [{"id": i, "state": "PENDING", "partition": "htc", "reason": "Resources", "nodes": []} for i in range(5)]
    jobs.append({"id": 9, "state": "PENDING", "partition": "htc", "reason": "JobHeldUser", "nodes": []})
    assert autoscale.plan(pol, [N("dn01", "booting")], {}, jobs, {}, 0)["htc"]["expand"] == 1


def test_min_nodes_kept_and_idle_nodes_retired_after_idle_time():
    pol = scaled(htc={"min_nodes": 1, "idle_time": 60})
    nodes = [N("dn01"), N("dn02"), N("dn03")]
    slurm = {n.name: {"name": n.name, "state": ["IDLE"]} for n in nodes}
    jobs = [{"id": 1, "state": "RUNNING", "partition": "htc", "nodes": ["dn03"]}]
    state = {}
    first = autoscale.plan(pol, nodes, slurm, jobs, state, 1000)["htc"]
    assert first["retire"] == [] and set(state["idle_since"]) == {"dn01", "dn02"}
    later = autoscale.plan(pol, nodes, slurm, jobs, state, 1061)["htc"]
    assert later["retire"] == ["dn01", "dn02"][:2] and later["expand"] == 0
    # min_nodes counts ready nodes: with no job anywhere one idle node stays
    state = {"idle_since": {"dn01": 0, "dn02": 0, "dn03": 0}}
    act = autoscale.plan(pol, nodes, slurm, [], state, 1000)["htc"]
    assert len(act["retire"]) == 2


def test_idle_nodes_fill_the_warm_pool_before_being_retired():
    pol = scaled(htc={"idle_time": 10, "warm_pool": 1})
    nodes = [N("dn01"), N("dn02")]
    slurm = {n.name: {"name": n.name, "state": ["IDLE"]} for n in nodes}
    act = autoscale.plan(pol, nodes, slurm, [], {"idle_since": {"dn01": 0, "dn02": 0}}, 100)["htc"]
    assert act["warm"] == ["dn01"] and act["retire"] == ["dn02"]


def test_empty_warm_pool_is_filled_with_new_nodes():
    pol = scaled(htc={"warm_pool": 2, "max_nodes": 3})
    act = autoscale.plan(pol, [N("dn01", "booting")], {}, [], {}, 0)["htc"]
    assert act["expand"] == 0 and act["expand_warm"] == 2


def test_cloud_profiles_are_left_to_slurm():
    pol = scaled(burst={"warm_pool": 1})
    act = autoscale.plan(pol, [N("cn01", profile="burst")], {}, [], {}, 0)["burst"]
    assert act == {"expand": 0, "resume": [], "retire": [], "warm": []}


def test_schedule_due():
    pol = scaled(htc={})
    assert autoscale.due(pol, {"last_run": None}, 100) == (True, "due")
    assert autoscale.due(pol, {"last_run": 90}, 100)[0] is False
    assert autoscale.due(pol, {"last_run": 60}, 100)[0] is True
    off = load(autoscale={"profiles": {"htc": {}}})
    assert autoscale.due(off, {"last_run": None}, 100)[0] is False


def test_flagged_jobs():
    jobs = [
        {"id": 7, "state": "PENDING", "comment": "vcluster-own", "node_count": 2, "user": "alice",
         "reason": "JobHeldUser"},
        {"id": 8, "state": "PENDING", "comment": "vcluster-own:burst", "node_count": 1, "user": "bob",
         "reason": "JobHeldUser"},
        {"id": 9, "state": "PENDING", "comment": "other", "node_count": 1},
        {"id": 10, "state": "RUNNING", "comment": "vcluster-own", "node_count": 1},
    ]
    flagged = autoscale.flagged_jobs(jobs, "vcluster-own", ["htc"])
    assert [(j["id"], j["count"], j["profile"], j["held"]) for j in flagged] == [
        ("7", 2, "htc", True), ("8", 1, "burst", True)]
    assert "error" not in flagged[0] and "per_job: true" in flagged[1]["error"]


@pytest.mark.parametrize("release", ["22.05", "23.02", "23.11", "24.05", "24.11", "25.05", "25.11"])
def test_flagged_jobs_from_every_releases_squeue(release):
    """The held job of the fixtures carries --comment=vcluster-own:htc, through the version-aware parser."""
    text = (DATA_SLURM / release / "squeue.json").read_text(encoding="utf-8")
    ids = json.loads((DATA_SLURM / release / "meta.json").read_text(encoding="utf-8"))["jobs"]
    jobs = [j.to_dict() for j in parse.jobs_from_squeue_json(text, release)]
    assert autoscale.flagged_jobs(jobs, "vcluster-own", ["htc"]) == [
        {"id": str(ids["held"]), "user": "root", "count": 1, "profile": "htc", "held": True}]


def test_state_round_trip(tmp_path):
    """In the registry's file (more in test_taskstate.py)."""
    path = tmp_path / "r.sqlite"
    Registry(path).close()
    state = autoscale.load_state(path)
    assert state == {"last_run": None, "idle_since": {}, "jobs": {}}
    state["jobs"]["5"] = ["dn01"]
    autoscale.save_state(path, state)
    assert autoscale.load_state(path)["jobs"] == {"5": ["dn01"]}


# -- per-job nodes: served through the Slurm client, ended and cleaned up ------------------


class JoiningBus(Bus):
    """A bus whose wait sees the new nodes join, as the reactor's join would make them."""

    def wait_for_nodes(self, registry, names, done_states, deadline):
        for name in names:
            if registry.get(name).state == "booting":
                registry.transition(name, "joining")
                registry.transition(name, "ready")


def test_a_held_flagged_job_gets_its_nodes_then_they_go_when_it_ends(tmp_path):
    data = copy.deepcopy(BASE)
    data["autoscale"] = {"profiles": {"htc": {"per_job": True}}}
    data["registry"] = str(tmp_path / "registry.sqlite")  # autoscale keeps its state there: never the host's
    reg = Registry(data["registry"])
    ctx = Context(policy=policy.load(data), registry=reg, keys=MemoryKeys(), slurm=MemorySlurm(), salt=Salt(),
                  events=JoiningBus())
    ctx._providers["lxd"] = MemoryProvider()
    held = {"id": 7, "state": "PENDING", "comment": "vcluster-own", "node_count": 2, "user": "alice",
            "reason": "JobHeldUser", "partition": "htc", "nodes": []}
    ctx.slurm.jobs_ = [held]
    ret = autoscale.run(ctx)
    assert ret["result"] is True, ret
    assert ret["per_job"] == {"7": "own nodes dn01,dn02"}
    assert ("7", "reserved", (["dn01", "dn02"], "alice")) in ctx.slurm.updates
    assert ctx.salt.calls == []  # Slurm is reached only through ctx.slurm
    # the job ran and ended: its nodes are retired and its reservation deleted
    ctx.slurm.jobs_ = [dict(held, state="COMPLETED", reason="None")]
    ret = autoscale.run(ctx)
    assert ret["per_job"] == {"7": "ended; retired dn01,dn02"}, ret
    assert ("vcjob7", "reservation deleted", None) in ctx.slurm.updates
    assert [n.name for n in reg.nodes() if n.active] == []
    reg.close()
