"""vcluster.suspend_resume, vcluster.migrate, vcluster.preempt against fakes of Slurm, Salt and a provider.

The registry and the policy are the real ones; Slurm, the minions and the
provider are small in-memory stand-ins that record what was asked of them.
"""

import contextlib
import copy

import pytest

from tests.unit.test_liveness import slurmd_seconds
from vcluster import migrate as mig
from vcluster import policy as _policy
from vcluster import preempt, reconcile
from vcluster import suspend_resume as sus
from vcluster.context import Context
from vcluster.errors import PolicyError, ProviderError, SlurmError
from vcluster.providers.base import Host, Instance, Status
from vcluster.registry import Registry

PILLAR = {
    "cluster": "t",
    "controller": "ctl",
    "master": "10.9.0.1",
    "pools": {"p": {"names": "vn[1-4]", "addresses": "10.9.0.10-10.9.0.20"}},
    "providers": {"lxd": {"driver": "lxd", "network": "br", "storage_pool": "sp"}},
    "profiles": {"htc": {"image": "img", "partition": "htc", "features": ["virtual", "htc"]}},
}


class FakeSlurm:
    def __init__(self):
        self.nodes_ = {}  # name -> {"state": [...], "reason": ""}
        self.jobs_ = {}  # id -> {"id", "state", "nodes", "partition"}
        self.calls = []
        self.slurmd = {}  # name -> the controller's SYN probe verdict; absent: listening
        self.scans = 0
        self.scan_error = None  # a SlurmError message for the controller's probe-and-release

    def liveness_scan(self, names, wait):
        self.scans += 1
        known = [n for n in names if n in self.nodes_]
        return {"nodes": [dict(name=n, **copy.deepcopy(self.nodes_[n])) for n in known],
                "slurmd": {n: self.slurmd.get(n, "listening") for n in known}}

    def release_when_listening(self, name, jobs, reason, wait):
        """The controller's probe-then-release (vcluster.slurm.client.Slurm, tested for real elsewhere)."""
        self.scans += 1
        if self.scan_error:
            raise SlurmError(self.scan_error)
        verdict = self.slurmd.get(name, "listening") if name in self.nodes_ else None
        released = self.release_node(name, jobs, reason) if verdict == "listening" else None
        return {"slurmd": verdict, "waited": 0.0, "released": released}

    def nodes(self):
        return [dict(name=n, **copy.deepcopy(v)) for n, v in self.nodes_.items()]

    def jobs(self, nodes=None):
        out = list(copy.deepcopy(list(self.jobs_.values())))
        if nodes:
            out = [j for j in out if set(j["nodes"]) & set(nodes)]
        return out

    def job(self, job_id):
        job = self.jobs_.get(int(job_id))
        return copy.deepcopy(job) if job else None

    def update_node(self, name, state, reason=None):
        self.calls.append(("update_node", name, state, reason))
        node = self.nodes_[name]
        if state == "DRAIN":
            node["state"] = [node["state"][0], "DRAIN"]
            node["reason"] = reason
        elif state == "RESUME":
            node["state"] = ["IDLE"]
            node["reason"] = ""
        elif state == "DOWN":
            node["state"] = ["DOWN"]
            node["reason"] = reason

    def suspend_job(self, job_id):
        self.calls.append(("suspend_job", job_id))
        self.jobs_[int(job_id)]["state"] = "SUSPENDED"

    def resume_job(self, job_id):
        self.calls.append(("resume_job", job_id))
        self.jobs_[int(job_id)]["state"] = "RUNNING"

    # the controller's one-call forms (vcluster.slurm.client.Slurm.hold_node
    # and release_node, tested against recorded and real Slurm elsewhere)
    def hold_node(self, name, jobs, reason):
        self.calls.append(("hold_node", name, list(jobs)))
        node = self.nodes_[name]
        foreign = "DRAIN" in node["state"] and node["reason"] not in ("", reason)
        if not foreign:
            node["state"], node["reason"] = [node["state"][0], "DRAIN"], reason
        for job_id in jobs:
            self.jobs_[int(job_id)]["state"] = "SUSPENDED"
        return {"drained": not foreign, "suspended": list(jobs)}

    def release_node(self, name, jobs, reason):
        self.calls.append(("release_node", name, list(jobs)))
        resumed = []
        for job_id in jobs:
            job = self.jobs_.get(int(job_id))
            if job and job["state"] == "SUSPENDED":
                job["state"] = "RUNNING"
                resumed.append(job_id)
        node = self.nodes_[name]
        undrain = "DRAIN" in node["state"] and node["reason"] == reason
        if undrain:
            node["state"], node["reason"] = ["IDLE"], ""
        return {"resumed": resumed, "undrained": undrain}


class FakeProvider:
    def __init__(self):
        self.status = {}
        self.host = {}
        self.calls = []
        self.fail = set()
        self.resume_report = None  # what a measuring provider's resume returns (libvirt)

    def suspend(self, iid, mode="suspend"):
        self.calls.append(("suspend", iid, mode))
        if ("suspend", iid) in self.fail:
            raise ProviderError(f"cannot freeze {iid}")
        self.status[iid] = Status.SUSPENDED

    def resume(self, iid):
        self.calls.append(("resume", iid))
        self.status[iid] = Status.RUNNING
        return self.resume_report

    def migrate(self, iid, host=None, live=True):
        self.calls.append(("migrate", iid, host))
        self.host[iid] = host or "h2"
        return Instance(id=iid, name=iid, status=self.status[iid], host=self.host[iid], address="10.9.0.19")

    def list(self, cluster):
        return [Instance(id=i, name=i, status=s, host=self.host.get(i, "h1")) for i, s in self.status.items()]

    def hosts(self):
        return [Host(name="h1", cpus_free=0, memory_free_mb=0), Host(name="h2", cpus_free=8, memory_free_mb=8000)]

    def close(self):
        pass


class FakeSalt:
    def __init__(self, alive):
        self.alive = alive  # name -> True (slurmd runs) | False (no slurmd); absent: silent

    def probe(self, names, timeout):
        return {n: slurmd_seconds(self.alive[n]) for n in names if n in self.alive}


class FakeEvents:
    def __init__(self):
        self.fired = []
        self.starts = set()  # minions whose salt/minion/<id>/start event comes while watched

    @contextlib.contextmanager
    def watch(self, tag):
        self.watched = getattr(self, "watched", []) + [tag]
        yield lambda seconds: tag.split("/")[2] in self.starts

    def fire(self, tag, data):
        self.fired.append(tag)
        self.data = getattr(self, "data", []) + [(tag, data)]

    def progress(self, message, **data):
        pass


class FakeKeys:
    def accepted(self):
        return {"ctl", "vn1", "vn2", "vn3"}

    def all(self):
        return dict.fromkeys(self.accepted(), "accepted")


@pytest.fixture
def env(tmp_path):
    def make(extra=None):
        data = copy.deepcopy(PILLAR)
        data.update(extra or {})
        pol = _policy.load(data)
        reg = Registry(str(tmp_path / "r.sqlite"))
        slurm, prov, events = FakeSlurm(), FakeProvider(), FakeEvents()
        salt = FakeSalt({})
        ctx = Context(policy=pol, registry=reg, keys=FakeKeys(), slurm=slurm, salt=salt, events=events)
        ctx._providers["lxd"] = prov
        nodes = reg.allocate(pol.pools["p"], "htc", "lxd", 3, "r1")
        for n in nodes:
            reg.transition(n.name, "booting", instance_id=n.name, host="h1")
            reg.transition(n.name, "joining")
            reg.transition(n.name, "ready")
            slurm.nodes_[n.name] = {"state": ["IDLE"], "reason": ""}
            prov.status[n.name] = Status.RUNNING
            salt.alive[n.name] = True
        slurm.nodes_["h1"] = {"state": ["IDLE"], "reason": ""}
        return ctx
    return make


def test_suspend_then_resume_keeps_job(env):
    ctx = env()
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    ret = sus.suspend(ctx, "vn1")
    assert ret["result"] is True, ret
    assert ctx.registry.get("vn1").state == "suspended"
    assert ctx.slurm.jobs_[7]["state"] == "SUSPENDED"
    assert ctx.slurm.nodes_["vn1"]["reason"] == sus.DRAIN_REASON
    assert ctx.provider("lxd").status["vn1"] is Status.SUSPENDED
    # one controller call (drain, then scontrol suspend), freeze last
    assert ctx.slurm.calls == [("hold_node", "vn1", [7])]
    assert ctx.events.fired == ["vcluster/node/vn1/suspending", "vcluster/node/vn1/suspended"]
    assert ctx.registry.jobs_on("vn1") == ["7"]

    ret = sus.resume(ctx, "vn1")
    assert ret["result"] is True, ret
    assert ctx.registry.get("vn1").state == "ready"
    assert ctx.slurm.jobs_[7]["state"] == "RUNNING"
    assert ctx.slurm.nodes_["vn1"]["state"] == ["IDLE"]
    assert ctx.registry.jobs_on("vn1") == []
    assert ctx.events.fired[-2:] == ["vcluster/node/vn1/resuming", "vcluster/node/vn1/ready"]


def test_resume_reports_what_the_provider_measured(env):
    ctx = env()
    sus.suspend(ctx, "vn1,vn2")
    report = {"seconds": 2.4, "clock_offset_before": -331.2, "clock_offset_after": -0.004, "clock_step_s": 0.3,
              "internal": "not reported"}
    ctx.provider("lxd").resume_report = report
    ret = sus.resume(ctx, "vn1")
    shown = {k: v for k, v in report.items() if k != "internal"}
    got = ret["resumed"]["vn1"]
    assert ret["result"] is True and {k: got[k] for k in shown} == shown, ret
    # when the provider returned, the jobs ran again and the minion answered, seconds after the resume began
    assert set(got) == set(shown) | {"provider_returned", "jobs_resumed", "minion_answered"}
    assert 0 <= got["provider_returned"] <= got["jobs_resumed"] <= got["minion_answered"]
    tag, data = ctx.events.data[-1]
    assert tag == "vcluster/node/vn1/ready" and data == dict(got, resumed=True, node="vn1", state="ready")
    ctx.provider("lxd").resume_report = None  # a provider that measures nothing: no key
    assert "resumed" not in sus.resume(ctx, "vn2")


def test_resume_leaves_jobs_it_did_not_suspend_and_foreign_drain(env):
    ctx = env()
    ctx.slurm.jobs_[8] = {"id": 8, "state": "SUSPENDED", "nodes": ["vn2"], "partition": "htc"}
    ctx.slurm.nodes_["vn2"] = {"state": ["IDLE", "DRAIN"], "reason": "admin: bad disk"}
    assert sus.suspend(ctx, "vn2")["result"] is True
    assert ("hold_node", "vn2", []) in ctx.slurm.calls  # job 8 was not RUNNING: not vcluster's
    assert sus.resume(ctx, "vn2")["result"] is True
    assert ctx.slurm.jobs_[8]["state"] == "SUSPENDED"  # the admin's suspended job stays
    assert ctx.slurm.nodes_["vn2"]["reason"] == "admin: bad disk"


@pytest.mark.parametrize(
    "nodes, kwargs, message",
    [
        ("vn[1-", {}, "nodes must be a Slurm hostlist"),
        ("zz9", {}, "'zz9' is not in the registry"),
        ("vn1", {"mode": "hibernate"}, "mode must be one of freeze, pause, save, shelve, suspend, got 'hibernate'"),
        ("", {}, "nodes must be a Slurm hostlist"),
    ],
)
def test_suspend_refuses_bad_input_without_side_effect(env, nodes, kwargs, message):
    ctx = env()
    with pytest.raises(PolicyError, match=message.replace("[", r"\[")):
        sus.suspend(ctx, nodes, **kwargs)
    assert ctx.slurm.calls == [] and ctx.provider("lxd").calls == [] and ctx.events.fired == []
    assert {n.state for n in ctx.registry.nodes()} == {"ready"}


def test_suspend_refuses_a_mode_the_provider_cannot_do_before_any_side_effect(env):
    ctx = env()
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    ctx.provider("lxd").suspend_modes = ("suspend",)
    with pytest.raises(PolicyError, match="provider lxd cannot suspend node vn1 with mode 'pause': it takes suspend"):
        sus.suspend(ctx, "vn1", mode="pause")
    assert ctx.slurm.calls == [] and ctx.provider("lxd").calls == [] and ctx.events.fired == []
    assert ctx.registry.get("vn1").state == "ready"


def test_suspend_refuses_job_spanning_other_nodes(env):
    ctx = env()
    ctx.slurm.jobs_[9] = {"id": 9, "state": "RUNNING", "nodes": ["vn1", "vn2"], "partition": "htc"}
    with pytest.raises(PolicyError, match=r"job 9 on vn1 also runs on vn2"):
        sus.suspend(ctx, "vn1")
    assert ctx.slurm.calls == []
    assert sus.suspend(ctx, "vn[1-2]")["result"] is True
    assert ctx.slurm.calls == [("hold_node", "vn1", [9]), ("hold_node", "vn2", [])]
    assert ctx.registry.jobs_on("vn1") == ctx.registry.jobs_on("vn2") == ["9"]
    assert sus.resume(ctx, "vn[1-2]")["result"] is True
    assert ctx.slurm.jobs_[9]["state"] == "RUNNING"


def test_failed_freeze_rolls_back(env):
    ctx = env()
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    ctx.provider("lxd").fail.add(("suspend", "vn1"))
    ret = sus.suspend(ctx, "vn1")
    assert ret["result"] is False and "cannot freeze vn1" in ret["comment"]
    assert ctx.registry.get("vn1").state == "ready"
    assert ctx.slurm.jobs_[7]["state"] == "RUNNING"
    assert ctx.slurm.nodes_["vn1"]["state"] == ["IDLE"]


def test_resume_waits_for_slurmd_and_gives_up_at_deadline(env):
    """A slurmd that does not answer the controller: the node goes back to suspended, its job with it."""
    ctx = env()
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    sus.suspend(ctx, "vn1")
    ctx.slurm.slurmd["vn1"] = "silent"
    ret = sus.resume(ctx, "vn1", timeout=1)
    assert ret["result"] is False and "its slurmd did not answer the controller (silent)" in ret["comment"], ret
    assert ctx.registry.get("vn1").state == "suspended"
    assert ctx.slurm.jobs_[7]["state"] == "SUSPENDED" and ctx.registry.jobs_on("vn1") == ["7"]
    del ctx.slurm.slurmd["vn1"]
    assert sus.resume(ctx, "vn1")["result"] is True
    assert ctx.slurm.jobs_[7]["state"] == "RUNNING"


def test_resumed_jobs_do_not_wait_for_a_silent_minion(env):
    """slurmd listens, the minion stays silent (a restored VM's minion restarting): jobs run, the minion is reported."""
    ctx = env()
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    sus.suspend(ctx, "vn1")
    del ctx.salt.alive["vn1"]
    resumed_before_probe = []
    probe = ctx.salt.probe

    def watching(names, timeout):
        resumed_before_probe.append(ctx.slurm.jobs_[7]["state"])
        return probe(names, timeout)

    ctx.salt.probe = watching
    ctx.provider("lxd").resume_report = {"seconds": 1.0}
    ret = sus.resume(ctx, "vn1", timeout=1)
    assert ret["result"] is True, ret
    assert resumed_before_probe and set(resumed_before_probe) == {"RUNNING"}
    assert ctx.registry.get("vn1").state == "ready" and ctx.registry.jobs_on("vn1") == []
    assert ret["resumed"]["vn1"]["minion_answered"] is None
    assert "vcluster/node/vn1/minion-silent" in ctx.events.fired
    assert ctx.events.fired[-1] == "vcluster/node/vn1/ready"


def test_a_minion_silent_after_its_reset_is_restarted_once(env, monkeypatch):
    """The provider reset the minion's connections (libvirt); silent past the grace, it is restarted, then answers."""
    monkeypatch.setattr(sus, "MINION_RECONNECT_GRACE", 0.2)
    ctx = env()
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    sus.suspend(ctx, "vn1")
    del ctx.salt.alive["vn1"]
    provider = ctx.provider("lxd")
    restarted = []

    def restart_minion(iid):
        restarted.append(iid)
        ctx.salt.alive["vn1"] = True  # the restarted minion answers
        return {"ok": True, "seconds": 0.1, "error": None}

    reset = {"ok": True, "seconds": 0.2, "connections": 2, "error": None}
    resets = []

    def reconnect_minion(iid):
        resets.append(ctx.slurm.jobs_[7]["state"])  # the jobs run before the minion is looked after
        return dict(reset)

    provider.reconnect_minion, provider.restart_minion = reconnect_minion, restart_minion
    provider.resume_report = {"seconds": 1.0}
    ret = sus.resume(ctx, "vn1", timeout=10)
    got = ret["resumed"]["vn1"]
    assert ret["result"] is True and restarted == ["vn1"] and resets == ["RUNNING"], ret
    assert got["minion_reconnect"] == reset and got["minion_restart"] == {"ok": True, "seconds": 0.1, "error": None}
    assert got["minion_answered"] is not None and "vcluster/node/vn1/minion-silent" not in ctx.events.fired
    # a minion that answers after its reset is not restarted
    sus.suspend(ctx, "vn1")
    ret = sus.resume(ctx, "vn1", timeout=10)
    assert restarted == ["vn1"] and "minion_restart" not in ret["resumed"]["vn1"], ret
    # a reset that failed (no guest agent): no restart either, it goes through the same agent; the runner waits
    sus.suspend(ctx, "vn1")
    del ctx.salt.alive["vn1"]
    reset.update(ok=False, connections=None, error="no agent")
    ret = sus.resume(ctx, "vn1", timeout=1)
    assert restarted == ["vn1"] and ret["resumed"]["vn1"]["minion_answered"] is None, ret
    assert "vcluster/node/vn1/minion-silent" in ctx.events.fired
    # a reset that raised: the node is ready all the same, its jobs running, the error reported
    sus.suspend(ctx, "vn1")
    provider.reconnect_minion = lambda iid: (_ for _ in ()).throw(ProviderError(f"no domain {iid}"))
    ret = sus.resume(ctx, "vn1", timeout=1)
    assert ret["result"] is True and ret["resumed"]["vn1"]["minion_reconnect"]["ok"] is False, ret
    assert ctx.registry.get("vn1").state == "ready" and ctx.slurm.jobs_[7]["state"] == "RUNNING"


def test_a_reset_minion_is_back_at_its_start_event_without_a_probe(env):
    """Salt fires the start event on a reconnection: the runner waits for it instead of probing a reconnecting minion."""
    ctx = env()
    sus.suspend(ctx, "vn1")
    provider = ctx.provider("lxd")
    provider.reconnect_minion = lambda iid: {"ok": True, "seconds": 0.3, "connections": 4, "error": None}
    provider.resume_report = {"seconds": 1.0}
    probes = []
    ctx.salt.probe = lambda names, timeout: probes.append(names) or {}
    ctx.events.starts.add("vn1")
    ret = sus.resume(ctx, "vn1", timeout=10)
    got = ret["resumed"]["vn1"]
    assert ret["result"] is True and probes == [] and got["minion_answered"] is not None, ret
    assert ctx.events.watched == ["salt/minion/vn1/start"] and "minion_restart" not in got


def test_a_node_slurm_does_not_probe_is_checked_through_its_minion(env):
    """A node the scan skips (or a controller that cannot scan): its minion must see slurmd run."""
    ctx = env()
    sus.suspend(ctx, "vn1")
    ctx.slurm.slurmd["vn1"] = "skipped"
    ctx.salt.alive["vn1"] = False  # the minion answers, no slurmd runs
    ret = sus.resume(ctx, "vn1", timeout=1)
    assert ret["result"] is False and "its slurmd is not running" in ret["comment"], ret
    assert ctx.registry.get("vn1").state == "suspended"
    ctx.salt.alive["vn1"] = True
    assert sus.resume(ctx, "vn1")["result"] is True


def test_resume_probes_briefly_then_longer_while_the_minion_is_silent(env, monkeypatch):
    ctx = env()
    sus.suspend(ctx, "vn1")
    asked = []
    silent_for = 3  # probes without an answer: a restored minion still reconnecting

    def probe(names, timeout):
        asked.append(timeout)
        return {} if len(asked) <= silent_for else {n: 30 for n in names}

    ctx.salt.probe = probe
    monkeypatch.setattr(sus.time, "sleep", lambda s: None)  # the once-a-second pacing between probes
    assert sus.resume(ctx, "vn1", timeout=600)["result"] is True
    assert asked == [3.0, 6.0, 10.0, 10.0]


def test_migrate_updates_registry_and_slurm_address(env):
    ctx = env()
    calls = []
    ctx.slurm.update_node_addr = lambda name, addr: calls.append((name, addr))
    ret = mig.migrate(ctx, "vn1", host="h2")
    assert ret["result"] is True and ret["state"] == "ready"
    node = ctx.registry.get("vn1")
    assert (node.state, node.host, node.address) == ("ready", "h2", "10.9.0.19")
    assert calls == [("vn1", "10.9.0.19")]
    assert "vcluster/node/vn1/migrating" in ctx.events.fired
    with pytest.raises(PolicyError, match="host must differ"):
        mig.migrate(ctx, "vn1", host="h2")
    assert "migration" not in ret  # a provider that measures nothing adds nothing


def test_migrate_returns_what_the_provider_measured(env):
    """libvirt's provider keeps its last move's timings (last_migration): the return carries them."""
    ctx = env()
    ctx.slurm.update_node_addr = lambda name, addr: None
    prov = ctx.provider("lxd")
    plain = prov.migrate

    def measured(iid, host=None, live=True):
        inst = plain(iid, host=host, live=live)
        prov.last_migration = {"source": "h1", "host": inst.host, "live": live, "seconds": 2.5, "downtime_s": 0.27}
        return inst

    prov.migrate = measured
    ret = mig.migrate(ctx, "vn1", host="h2")
    assert ret["migration"] == {"source": "h1", "host": "h2", "live": True, "seconds": 2.5, "downtime_s": 0.27}


def test_migrate_failure_restores_state(env):
    ctx = env()
    sus.suspend(ctx, "vn2")

    def refuse(*a, **k):
        raise ProviderError("LXD needs CRIU")

    ctx.provider("lxd").migrate = refuse
    with pytest.raises(Exception, match="cannot migrate vn2: LXD needs CRIU"):
        mig.migrate(ctx, "vn2", host="h2")
    assert ctx.registry.get("vn2").state == "suspended"


PREEMPTION = {"preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"]},
              "profiles": {"htc": {"image": "img", "partition": "htc"}}}


def test_preemption_start_and_end(env):
    ctx = env(PREEMPTION)
    ctx.slurm.jobs_[5] = {"id": 5, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    ctx.slurm.jobs_[6] = {"id": 6, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    ret = preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 start job=6 partition=batch nodes=h1")
    assert ret["result"] is True, ret
    assert {n.name: n.state for n in ctx.registry.nodes()} == dict.fromkeys(["vn1", "vn2", "vn3"], "suspended")
    assert ctx.slurm.jobs_[5]["state"] == "SUSPENDED"
    assert ctx.registry.get("vn1").reason == "preempted by job 6"

    ctx.slurm.jobs_[6]["state"] = "COMPLETING"
    ret = preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 end job=6 partition=batch nodes=h1")
    assert ret["result"] is True, ret
    assert {n.state for n in ctx.registry.nodes()} == {"ready"}
    assert ctx.slurm.jobs_[5]["state"] == "RUNNING"


def test_preemption_keeps_nodes_while_host_busy_or_migrates(env):
    ctx = env(PREEMPTION)
    ctx.slurm.jobs_[6] = {"id": 6, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    preempt.job_started(ctx, 6)
    del ctx.slurm.jobs_[6]
    ret = preempt.job_ended(ctx, 6, ["h1"])
    assert {n.state for n in ctx.registry.nodes()} == {"suspended"}, ret
    assert "stay suspended" in ret["comment"]


def preempted_by_6(env):
    """vn1-3 suspended by batch job 6 on h1; htc job 5 on vn1 suspended with them."""
    ctx = env(PREEMPTION)
    ctx.slurm.jobs_[5] = {"id": 5, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    ctx.slurm.jobs_[6] = {"id": 6, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    assert preempt.job_started(ctx, 6)["result"] is True
    assert ctx.slurm.jobs_[5]["state"] == "SUSPENDED"
    return ctx


def test_reconcile_resumes_victims_of_a_preemption_whose_end_was_lost(env):
    ctx = preempted_by_6(env)
    del ctx.slurm.jobs_[6]  # ended while the controller's minion was down: no end event
    jobs_before = sorted(ctx.slurm.jobs_)

    report = reconcile.reconcile(ctx)
    assert report["report"]["preemption_over"] == [
        {"job": "6", "node": "vn[1-3]", "nodes": ["vn1", "vn2", "vn3"], "job_state": "gone"}]
    assert {n.state for n in ctx.registry.nodes()} == {"suspended"}  # report only

    ret = reconcile.reconcile(ctx, apply=True)
    assert ret["result"] is True, ret
    assert ret["repairs"][0]["kind"] == "preemption_over" and ret["repairs"][0]["job"] == "6"
    assert {n.state for n in ctx.registry.nodes()} == {"ready"}
    assert ctx.slurm.jobs_[5]["state"] == "RUNNING"
    assert sorted(ctx.slurm.jobs_) == jobs_before  # no job lost
    assert reconcile.reconcile(ctx)["report"]["preemption_over"] == []


@pytest.mark.parametrize("still", ["RUNNING", "SUSPENDED", "other job on the host"])
def test_reconcile_leaves_victims_while_their_host_is_held(env, still):
    ctx = preempted_by_6(env)
    if still == "other job on the host":
        ctx.slurm.jobs_[6]["state"] = "COMPLETED"
        ctx.slurm.jobs_[8] = {"id": 8, "state": "RUNNING", "nodes": ["h1"], "partition": "batch"}
    else:
        ctx.slurm.jobs_[6]["state"] = still
    ret = reconcile.reconcile(ctx, apply=True)
    assert ret["report"]["preemption_over"] == [] and ret["repairs"] == [], ret
    assert {n.state for n in ctx.registry.nodes()} == {"suspended"}


def test_reconcile_skips_the_check_when_slurm_jobs_cannot_be_read(env):
    ctx = preempted_by_6(env)
    del ctx.slurm.jobs_[6]

    def broken(nodes=None):
        raise ProviderError("squeue: slurmctld not answering")

    ctx.slurm.jobs = broken
    ret = reconcile.reconcile(ctx, apply=True)
    assert ret["result"] is False and ret["repairs"] == []
    assert "slurm jobs: squeue: slurmctld not answering" in ret["comment"]
    assert {n.state for n in ctx.registry.nodes()} == {"suspended"}


def test_preemption_trusts_only_the_controller_and_checks_slurm(env):
    ctx = env(PREEMPTION)
    ret = preempt.on_event(ctx, "vn1", "vcluster-slurm-event v1 start job=6 partition=batch nodes=h1")
    assert ret.get("ignored") is True
    ret = preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 start job=99 partition=batch nodes=h1")
    assert ret.get("ignored") is True  # Slurm does not know job 99
    ctx.slurm.jobs_[3] = {"id": 3, "state": "RUNNING", "nodes": ["h1"], "partition": "htc"}
    assert preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 start job=3 partition=batch nodes=h1")["ignored"]
    assert {n.state for n in ctx.registry.nodes()} == {"ready"}
    with pytest.raises(PolicyError, match="vcluster Slurm event line"):
        preempt.on_event(ctx, "ctl", "rm -rf /")
    with pytest.raises(PolicyError, match="job must be a Slurm job id"):
        preempt.on_event(ctx, "ctl", "vcluster-slurm-event v1 start job=x1 nodes=h1")


@pytest.mark.parametrize(
    "section, message",
    [
        ({"liveness": {"timeout": 0}}, "vcluster:liveness:timeout must be a positive number, got 0"),
        ({"liveness": {"interval": 5}}, "vcluster:liveness:interval is not a known key"),
        ({"suspend": {"mode": "shelve"}}, r"vcluster:suspend:mode must be one of freeze \| pause \| save \| suspend, got 'shelve'"),
        ({"preemption": {"enabled": True, "partitions": ["batch"]}},
         "vcluster:preemption:preemptible must name at least one partition"),
        ({"preemption": {"partitions": "batch"}}, "vcluster:preemption:partitions must be a list"),
        ({"preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["gpu"]}},
         r"vcluster:preemption:preemptible\[0\] must be the partition of some profile"),
        ({"preemption": {"partitions": ["htc"], "preemptible": ["htc"]}},
         "must not list a partition that also preempts"),
        ({"preemption": {"hypervisors": {"h1": ""}}}, "vcluster:preemption:hypervisors:h1 must be a non-empty string"),
        ({"preemption": {"migrate": "yes"}}, "vcluster:preemption:migrate must be true or false"),
    ],
)
def test_policy_sections_refuse_bad_values(section, message):
    data = copy.deepcopy(PILLAR)
    data.update(section)
    with pytest.raises(PolicyError, match=message):
        _policy.load(data)


def test_policy_defaults():
    pol = _policy.load(copy.deepcopy(PILLAR))
    assert pol.liveness.timeout == 30 and pol.liveness.enabled is True
    assert pol.suspend.mode == "suspend"
    assert pol.preemption.enabled is False
    assert pol.as_dict()["preemption"]["partitions"] == []


def test_suspend_reports_the_memory_a_provider_freed(env):
    """A provider that measures freed host memory (libvirt save) has it in the return and the event."""
    ctx = env()
    fired = []
    ctx.events.fire = lambda tag, data: fired.append((tag, data))
    prov = ctx.provider("lxd")
    plain = prov.suspend

    def measured(iid, mode="suspend"):
        plain(iid, mode)
        return {"mode": "save", "seconds": 1.5, "freed_mib": 987}

    prov.suspend = measured
    ret = sus.suspend(ctx, "vn1,vn2")
    assert ret["result"] is True and ret["freed_mib"] == {"vn1": 987, "vn2": 987}
    suspended = [data for tag, data in fired if tag.endswith("/suspended")]
    assert [d["freed_mib"] for d in suspended] == [987, 987]
    prov.suspend = plain
    assert "freed_mib" not in sus.suspend(ctx, "vn3")


def test_suspend_reports_the_hosts_available_memory_delta_beside_the_freed_memory(env):
    """libvirt's save: freed_mib (what QEMU held) and available_delta_mib (MemAvailable) both pass through."""
    ctx = env()
    fired = []
    ctx.events.fire = lambda tag, data: fired.append((tag, data))
    prov = ctx.provider("lxd")
    plain = prov.suspend

    def measured(iid, mode="suspend"):
        plain(iid, mode)
        return {"mode": "save", "seconds": 1.5, "freed_mib": 612, "available_delta_mib": -40,
                "process_mib": {"source": "smaps_rollup", "pid": 7, "rss_mib": 650, "pss_mib": 612}}

    prov.suspend = measured
    ret = sus.suspend(ctx, "vn1")
    assert ret["freed_mib"] == {"vn1": 612} and ret["available_delta_mib"] == {"vn1": -40}
    [data] = [data for tag, data in fired if tag.endswith("/suspended")]
    assert (data["freed_mib"], data["available_delta_mib"]) == (612, -40)
    assert "process_mib" not in data  # the detail stays with the provider


def test_a_controller_that_cannot_probe_has_the_minion_asked_then_releases(env):
    """The controller's probe-and-release fails (no raw socket, say): the node's minion sees slurmd, then release."""
    ctx = env()
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    sus.suspend(ctx, "vn1")
    ctx.slurm.scan_error = "probing slurmd needs root on the controller (a raw socket)"
    ret = sus.resume(ctx, "vn1", timeout=5)
    assert ret["result"] is True and ret["nodes"] == {"vn1": "ready"}, ret
    assert ctx.slurm.jobs_[7]["state"] == "RUNNING" and ctx.registry.jobs_on("vn1") == []
    assert ctx.slurm.calls[-1] == ("release_node", "vn1", ["7"])
