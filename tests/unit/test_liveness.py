"""vcluster.liveness: the decision logic, against stand-ins of the controller, Salt and a provider.

The registry and the policy are the real ones. The controller's
``liveness_scan`` (a SYN probe of every slurmd, tested for real in
tests/unit/test_liveness_reach.py and end to end in
tests/integration/test_liveness.py) is replaced by a table of verdicts,
because what is under test here is what liveness decides from them and how
many calls it makes.
"""

import copy

import pytest

from vcluster import liveness
from vcluster import policy as _policy
from vcluster import status as vstatus
from vcluster.context import Context
from vcluster.errors import PolicyError
from vcluster.providers.base import Instance, Status
from vcluster.registry import Registry
from vcluster.saltlink import slurmd_age

PILLAR = {
    "cluster": "t",
    "controller": "ctl",
    "master": "10.9.0.1",
    "pools": {"p": {"names": "vn[1-300]", "addresses": "10.9.4.0/22"}},
    "providers": {"lxd": {"driver": "lxd", "network": "br", "storage_pool": "sp"}},
    "profiles": {"htc": {"image": "img", "partition": "htc", "features": ["virtual", "htc"]}},
}


class Controller:
    """The controller's ``slurm`` module as liveness uses it; records every call."""

    def __init__(self):
        self.nodes_ = {}  # name -> {"state": [...], "reason": ""}
        self.slurmd = {}  # name -> verdict of the SYN probe (listening, refused, silent, ...)
        self.second = {}  # verdicts of the closer look's scan, where they differ
        self.calls = []

    def nodes(self):
        return [dict(name=n, **copy.deepcopy(v)) for n, v in self.nodes_.items()]

    def liveness_scan(self, names, wait):
        scans = sum(1 for c in self.calls if c[0] == "liveness_scan")
        self.calls.append(("liveness_scan", sorted(names), wait))
        table = dict(self.slurmd, **self.second) if scans else self.slurmd
        known = [n for n in names if n in self.nodes_]
        return {"nodes": [dict(name=n, **copy.deepcopy(self.nodes_[n])) for n in known],
                "slurmd": {n: table.get(n, "listening") for n in known}}

    def update_node(self, name, state, reason=None):
        self.calls.append(("update_node", name, state, reason))
        node = self.nodes_[name]
        if state == "RESUME":
            node["state"], node["reason"] = ["IDLE"], ""
        elif state == "DOWN":
            node["state"], node["reason"] = ["DOWN"], reason

    def jobs(self, nodes=None):
        return []


def slurmd_seconds(alive):
    """The probe's answer for a fake minion: True -> slurmd running for an hour, False -> None (none runs)."""
    if alive is True:
        return 3600
    if alive is False:
        return None
    return alive


class Salt:
    """Minions: ``alive`` answers the probe (True: slurmd runs); ``connected`` the presence."""

    def __init__(self):
        self.alive = {}
        self.connected = set()
        self.probed = []

    def probe(self, names, timeout):
        self.probed.append(sorted(names))
        return {n: slurmd_seconds(self.alive[n]) for n in names if n in self.alive}

    def present(self, names):
        return self.connected & set(names)


class Provider:
    def __init__(self):
        self.status = {}
        self.lists = 0

    def list(self, cluster):
        self.lists += 1
        return [Instance(id=i, name=i, status=s, host="h1") for i, s in self.status.items()]

    def close(self):
        pass


class Events:
    def __init__(self):
        self.fired = []

    def fire(self, tag, data):
        self.fired.append(tag)


class Keys:
    def __init__(self, names):
        self.names = set(names)

    def accepted(self):
        return set(self.names)


@pytest.fixture(autouse=True)
def _fresh_events_memory():
    liveness._silent_fired.clear()
    yield
    liveness._silent_fired.clear()


@pytest.fixture
def env(tmp_path):
    def make(count=3, extra=None, baremetal=("h1",)):
        data = copy.deepcopy(PILLAR)
        for key, value in (extra or {}).items():
            data[key] = value
        pol = _policy.load(data)
        reg = Registry(str(tmp_path / "r.sqlite"))
        ctl, salt, prov = Controller(), Salt(), Provider()
        ctx = Context(policy=pol, registry=reg, keys=Keys(["ctl", *baremetal]), slurm=ctl, salt=salt,
                      events=Events())
        ctx._providers["lxd"] = prov
        for n in reg.allocate(pol.pools["p"], "htc", "lxd", count, "r1") if count else []:
            reg.transition(n.name, "booting", instance_id=n.name, host="h1")
            reg.transition(n.name, "joining")
            reg.transition(n.name, "ready")
            ctx.keys.names.add(n.name)
            ctl.nodes_[n.name] = {"state": ["IDLE"], "reason": ""}
            prov.status[n.name] = Status.RUNNING
            salt.alive[n.name] = True
            salt.connected.add(n.name)
        for name in baremetal:
            ctl.nodes_[name] = {"state": ["ALLOCATED"], "reason": ""}
            salt.alive[name] = True
            salt.connected.add(name)
        return ctx
    return make


def scans(ctx):
    return [c for c in ctx.slurm.calls if c[0] == "liveness_scan"]


def downs(ctx):
    return [c[1] for c in ctx.slurm.calls if c[0] == "update_node" and c[2] == "DOWN"]


def test_silent_minions_with_answering_slurmd_stay_up_and_are_reported_once(env):
    ctx = env()
    for name in ("vn1", "h1"):  # a virtual node and a bare-metal node, both busy or idle
        del ctx.salt.alive[name]
        ctx.salt.connected.discard(name)
    ret = liveness.check(ctx)
    assert ret["down"] == {} and downs(ctx) == [], ret
    assert ret["minion_silent"] == ["h1", "vn1"]
    assert ctx.salt.probed == []  # nothing flagged: no minion is asked anything
    assert ret["calls"] == {"controller": 1, "salt_probe": 0, "provider_list": 1}
    assert sorted(t for t in ctx.events.fired if t.endswith("minion-silent")) == [
        "vcluster/node/h1/minion-silent", "vcluster/node/vn1/minion-silent"]
    # the next round reports them again but announces nothing new
    ret = liveness.check(ctx)
    assert ret["minion_silent"] == ["h1", "vn1"] and ret["down"] == {}
    assert len([t for t in ctx.events.fired if t.endswith("minion-silent")]) == 2
    # back, then silent again: announced again
    ctx.salt.connected.add("vn1")
    liveness.check(ctx)
    ctx.salt.connected.discard("vn1")
    liveness.check(ctx)
    assert ctx.events.fired.count("vcluster/node/vn1/minion-silent") == 2


def test_killed_slurmd_is_set_down_after_a_look_at_only_that_node(env):
    ctx = env()
    ctx.slurm.slurmd["vn2"] = "refused"
    ctx.salt.alive["vn2"] = False  # the minion answers: no slurmd
    ret = liveness.check(ctx)
    assert list(ret["down"]) == ["vn2"], ret
    assert ret["down"]["vn2"] == "vcluster liveness: its slurmd is not running"
    assert ctx.slurm.nodes_["vn2"]["state"] == ["DOWN"]
    assert ctx.salt.probed == [["vn2"]]
    # "ctl" is an accepted minion outside the pools: asked about, unknown to Slurm, not watched
    assert [c[1] for c in scans(ctx)] == [["ctl", "h1", "vn1", "vn2", "vn3"], ["vn2"]]
    assert ret["calls"] == {"controller": 2, "salt_probe": 1, "provider_list": 1}
    assert "vcluster/node/vn2/down" in ctx.events.fired


def test_dead_host_is_down_when_neither_slurmd_nor_minion_answers(env):
    ctx = env(baremetal=("h1", "h2"))
    ctx.slurm.slurmd["h2"] = "silent"
    del ctx.salt.alive["h2"]
    ctx.salt.connected.discard("h2")
    ret = liveness.check(ctx, timeout=3)
    assert list(ret["down"]) == ["h2"], ret
    assert "does not answer the controller (silent)" in ret["down"]["h2"]
    assert "minion did not answer within 3 s" in ret["down"]["h2"]
    assert ret["minion_silent"] == []  # dead nodes are reported as dead, not as silent minions
    # silent to the scan and to Salt: gone, without a second scan
    assert ret["calls"] == {"controller": 1, "salt_probe": 1, "provider_list": 1}, ret


def test_slurmd_that_runs_but_does_not_answer_the_controller_is_dead(env):
    ctx = env()
    ctx.slurm.slurmd["vn1"] = "silent"  # e.g. a firewall or a hung network between them
    ret = liveness.check(ctx)
    assert "though its minion sees slurmd running" in ret["down"]["vn1"], ret


def test_a_slurmd_restarted_just_now_is_judged_next_round_not_set_down(env):
    """A highstate restarts the bare-metal node's slurmd: the process runs a second before it listens.

    Seen in a test stack's master log: a round fell into that second, both
    scans found slurmd refusing, and the host was set DOWN (its jobs would
    have been requeued). A slurmd younger than SLURMD_START_GRACE is starting.
    """
    ctx = env()
    ctx.slurm.slurmd["h1"] = "refused"
    ctx.slurm.second["h1"] = "refused"
    ctx.salt.alive["h1"] = 1  # seconds slurmd has run
    ret = liveness.check(ctx)
    assert ret["down"] == {} and downs(ctx) == [], ret
    assert ret["flagged"] == ["h1"] and ret["starting"] == ["h1"], ret
    # still refusing once it has run past the grace: hung, set DOWN, with its age
    ctx.salt.alive["h1"] = liveness.SLURMD_START_GRACE + 5
    ret = liveness.check(ctx)
    assert ret["starting"] == [] and list(ret["down"]) == ["h1"], ret
    assert ret["down"]["h1"].endswith(f"though its minion sees slurmd running (for {liveness.SLURMD_START_GRACE + 5} s)")


def test_a_slurmd_back_at_the_second_look_is_alive(env):
    """A slurmd restart caught by the first scan: the closer look sees it listening."""
    ctx = env()
    ctx.slurm.slurmd["vn3"] = "refused"
    ctx.slurm.second["vn3"] = "listening"
    ret = liveness.check(ctx)
    assert ret["down"] == {} and ret["flagged"] == ["vn3"] and downs(ctx) == [], ret


def test_an_address_the_controller_cannot_probe_is_judged_by_the_minion_only(env):
    """No IPv4 address to probe: only a minion that sees no slurmd makes the node dead."""
    ctx = env()
    for name in ("vn1", "vn2", "vn3"):
        ctx.slurm.slurmd[name] = "unresolved"
    ctx.salt.alive["vn1"] = False  # no slurmd: dead
    del ctx.salt.alive["vn2"]  # silent minion: no verdict
    ret = liveness.check(ctx)  # vn3: minion sees slurmd: alive
    assert ret["down"] == {"vn1": "vcluster liveness: its slurmd is not running"}, ret


def test_frozen_nodes_are_neither_scanned_nor_set_down(env):
    ctx = env()
    ctx.registry.transition("vn1", "suspending", expect="ready")
    ctx.registry.transition("vn1", "suspended", expect="suspending")
    ctx.provider("lxd").status["vn1"] = Status.SUSPENDED
    ctx.slurm.slurmd["vn1"] = "silent"
    del ctx.salt.alive["vn1"]
    ctx.salt.connected.discard("vn1")
    ret = liveness.check(ctx)
    assert ret["down"] == {} and ret["watched"] == 3, ret
    assert "vn1" not in scans(ctx)[0][1]
    assert ret["minion_silent"] == []


def test_provider_verdicts_need_no_probe(env):
    ctx = env()
    ctx.provider("lxd").status["vn3"] = Status.STOPPED
    del ctx.provider("lxd").status["vn2"]
    ctx.provider("lxd").status["vn1"] = Status.PAUSED
    ret = liveness.check(ctx)
    assert ret["down"] == {
        "vn1": "vcluster liveness: its instance is paused but vcluster did not suspend it",
        "vn2": "vcluster liveness: its instance vn2 is gone",
        "vn3": "vcluster liveness: its instance is stopped",
    }, ret
    assert ctx.salt.probed == []


def test_resume_lifts_only_vclusters_own_down_once_slurmd_listens(env):
    ctx = env()
    ctx.slurm.nodes_["vn1"] = {"state": ["DOWN"], "reason": "vcluster liveness: its slurmd is not running"}
    ctx.slurm.nodes_["vn2"] = {"state": ["DOWN"], "reason": "disk failure"}
    ctx.slurm.nodes_["vn3"] = {"state": ["DOWN"], "reason": "vcluster liveness: its slurmd is not running"}
    ctx.slurm.slurmd["vn3"] = "refused"  # still dead: stays down, no closer look at an already DOWN node
    ret = liveness.check(ctx)
    assert ret["up"] == ["vn1"], ret
    assert ctx.slurm.nodes_["vn1"]["state"] == ["IDLE"]
    assert ctx.slurm.nodes_["vn2"]["state"] == ["DOWN"] and ctx.slurm.nodes_["vn3"]["state"] == ["DOWN"]
    assert ctx.salt.probed == [] and "vcluster/node/vn1/up" in ctx.events.fired


def test_dry_run_says_what_it_would_do_and_changes_nothing(env):
    ctx = env()
    ctx.slurm.slurmd["vn2"] = "refused"
    ctx.salt.alive["vn2"] = False
    ctx.slurm.nodes_["vn1"] = {"state": ["DOWN"], "reason": "vcluster liveness: its slurmd is not running"}
    ctx.salt.connected.discard("vn3")
    before = copy.deepcopy(ctx.slurm.nodes_)
    ret = liveness.check(ctx, test="True")
    assert ret["test"] is True and list(ret["down"]) == ["vn2"] and ret["up"] == ["vn1"], ret
    assert ret["down"]["vn2"].endswith("(test: nothing changed)")
    assert ret["comment"] == ("4 node(s) watched, 1 would be set DOWN, 1 would come back up, "
                              "1 with a silent minion (not a reason to set DOWN)")
    assert ctx.slurm.nodes_ == before
    assert [c for c in ctx.slurm.calls if c[0] == "update_node"] == []
    assert ctx.events.fired == []


def test_disabled_liveness_only_reports(env):
    ctx = env(extra={"liveness": {"enabled": False}})
    ctx.slurm.slurmd["vn2"] = "refused"
    ctx.salt.alive["vn2"] = False
    ret = liveness.check(ctx)
    assert ret["down"]["vn2"].endswith("(report only: liveness disabled)")
    assert downs(ctx) == []


def test_calls_per_round_do_not_grow_with_the_node_count(env):
    ctx = env(count=250)
    for name in ("vn7", "vn100", "vn250"):
        ctx.slurm.slurmd[name] = "refused"
        ctx.salt.alive[name] = False
    for name in ("vn8", "vn9"):
        del ctx.salt.alive[name]
        ctx.salt.connected.discard(name)
    ret = liveness.check(ctx)
    assert ret["watched"] == 251 and sorted(ret["down"]) == ["vn100", "vn250", "vn7"], ret
    assert ret["calls"] == {"controller": 2, "salt_probe": 1, "provider_list": 1}
    assert ctx.salt.probed == [["vn100", "vn250", "vn7"]]
    assert ret["minion_silent"] == ["vn8", "vn9"]


def test_baremetal_is_every_slurm_minion_outside_the_pools(env):
    ctx = env(baremetal=("h1",))
    ctx.keys.names |= {"vn200", "nosuch"}  # a pool name being created; a minion that is no Slurm node
    ctx.slurm.nodes_["vn200"] = {"state": ["IDLE"], "reason": ""}
    ctx.slurm.slurmd["vn200"] = "silent"
    ret = liveness.check(ctx)
    assert ret["watched"] == 4 and ret["down"] == {}, ret
    assert "vn200" not in scans(ctx)[0][1]
    assert "nosuch" in scans(ctx)[0][1]  # asked about; the controller does not know it

    ctx = env(extra={"liveness": {"baremetal": False}})
    ret = liveness.check(ctx)
    assert ret["watched"] == 3 and "h1" not in scans(ctx)[0][1]


def test_a_node_that_changed_while_it_was_looked_at_is_left_to_the_next_round(env):
    ctx = env()
    ctx.slurm.slurmd["vn2"] = "refused"
    ctx.salt.alive["vn2"] = False
    probe = ctx.salt.probe

    def slow_probe(names, timeout):
        ctx.registry.update("vn2", host="h1")  # e.g. a join finishing meanwhile
        return probe(names, timeout)

    ctx.salt.probe = slow_probe
    ret = liveness.check(ctx)
    assert ret["down"] == {} and ret["skipped"] == ["vn2"], ret
    ctx.salt.probe = probe
    ret = liveness.check(ctx)
    assert list(ret["down"]) == ["vn2"], ret


def test_nothing_to_watch_makes_no_call(env):
    ctx = env(count=0, extra={"liveness": {"baremetal": False}})
    ret = liveness.check(ctx)
    assert ret["watched"] == 0 and ctx.slurm.calls == [] and ret["calls"]["controller"] == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ({"timeout": "soon"}, "timeout must be a positive number of seconds, got 'soon'"),
    ({"test": "maybe"}, "test must be true or false, got 'maybe'"),
])
def test_bad_arguments_are_refused_before_any_call(env, kwargs, message):
    ctx = env()
    with pytest.raises(PolicyError, match=message):
        liveness.check(ctx, **kwargs)
    assert ctx.slurm.calls == []


def test_status_warns_about_silent_minions(env):
    ctx = env()
    assert vstatus.status(ctx)["warnings"] == []
    ctx.salt.connected -= {"vn2", "h1"}
    warnings = vstatus.status(ctx)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("the minion of h1, vn2 is not connected"), warnings


def test_a_down_node_with_a_silent_minion_is_not_reported_as_a_silent_minion(env):
    ctx = env()
    ctx.slurm.nodes_["vn1"] = {"state": ["DOWN"], "reason": "vcluster liveness: its slurmd is not running"}
    ctx.slurm.slurmd["vn1"] = "silent"
    ctx.salt.connected.discard("vn1")
    ret = liveness.check(ctx)
    assert ret["minion_silent"] == [] and ret["flagged"] == [] and ret["up"] == [], ret
    assert not [t for t in ctx.events.fired if t.endswith("minion-silent")]


@pytest.mark.parametrize("result, age", [
    ({"retcode": 0, "stdout": "   42\n"}, 42),
    ({"retcode": 0, "stdout": " 3605\n    1\n"}, 3605),  # the daemon and a child it just forked
    ({"retcode": 1, "stdout": ""}, None),  # no slurmd
    ({"retcode": 0, "stdout": "ps: garbage"}, None),
])
def test_the_probe_reads_slurmds_age_from_ps(result, age):
    assert slurmd_age(result) == age
