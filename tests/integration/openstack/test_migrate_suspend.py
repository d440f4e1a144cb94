"""vcluster.suspend / resume / migrate against the real Nova testbed.

Nova's fake virt driver boots no guest, so there is no minion and no slurmd:
the registry is the real one, the provider is the real OpenStack provider
against real Nova, and Slurm (its SYN probe of slurmd included) plus the
minion probe are recording stand-ins.
Checked: the registry (state, host) and what Slurm is told stay consistent
with where Nova says the server is.
"""

import pytest

from tests.integration.openstack.conftest import FLAVOR, make_spec
from vcluster import migrate as mig
from vcluster import policy as _policy
from vcluster import suspend_resume as sus
from vcluster.context import Context
from vcluster.errors import VclusterError
from vcluster.providers.base import Status
from vcluster.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.openstack]


class RecordingSlurm:
    def __init__(self, name):
        self.node = {"name": name, "state": ["IDLE"], "reason": ""}
        self.job = {"id": 41, "state": "RUNNING", "nodes": [name], "partition": "htc"}
        self.addr = []

    def nodes(self):
        return [dict(self.node)]

    def jobs(self, nodes=None):
        return [dict(self.job)]

    def update_node(self, name, state, reason=None):
        if state == "DRAIN":
            self.node.update(state=["IDLE", "DRAIN"], reason=reason)
        elif state == "RESUME":
            self.node.update(state=["IDLE"], reason="")

    def hold_node(self, name, jobs, reason):
        self.update_node(name, "DRAIN", reason)
        if self.job["id"] in jobs:
            self.job["state"] = "SUSPENDED"
        return {"drained": True, "suspended": list(jobs)}

    def release_node(self, name, jobs, reason):
        resumed = str(self.job["id"]) in [str(j) for j in jobs] and self.job["state"] == "SUSPENDED"
        if resumed:
            self.job["state"] = "RUNNING"
        self.update_node(name, "RESUME")
        return {"resumed": [self.job["id"]] if resumed else [], "undrained": True}

    def update_node_addr(self, name, address):
        self.addr.append((name, address))

    def liveness_scan(self, names, wait):
        """The controller's SYN probe: the stand-in's slurmd listens (resume waits for it, then the minion)."""
        return {"nodes": [dict(self.node)], "slurmd": dict.fromkeys(names, "listening")}

    def release_when_listening(self, name, jobs, reason, wait):
        """The controller's probe and release in one call: the stand-in's slurmd listens."""
        return {"slurmd": "listening", "waited": 0.0, "released": self.release_node(name, jobs, reason)}


class AlwaysAlive:
    def probe(self, names, timeout):
        return dict.fromkeys(names, 3600)  # slurmd running for an hour


class Events:
    def __init__(self):
        self.fired = []

    def fire(self, tag, data):
        self.fired.append(tag)

    def progress(self, message, **data):
        pass


@pytest.fixture
def nova_node(os_provider, cluster_name, tmp_path):
    pol = _policy.load({
        "cluster": cluster_name, "controller": "ctl", "master": "10.99.0.1",
        "pools": {"cloud": {"names": "osm[1-4]"}},
        "providers": {"nova": {"driver": "openstack", "cloud": "unused"}},
        "profiles": {"htc": {"image": "vcluster-node", "flavor": FLAVOR, "partition": "htc"}},
    })
    reg = Registry(str(tmp_path / "registry.sqlite"))
    (node,) = reg.allocate(pol.pools["cloud"], "htc", "nova", 1, "req")
    spec = make_spec(cluster_name, 1)
    spec.name = node.name
    (inst,) = os_provider.create([spec])
    reg.transition(node.name, "booting", instance_id=inst.id, host=inst.host)
    reg.transition(node.name, "joining")
    reg.transition(node.name, "ready")
    slurm = RecordingSlurm(node.name)
    ctx = Context(policy=pol, registry=reg, keys=None, slurm=slurm, salt=AlwaysAlive(), events=Events())
    ctx._providers["nova"] = os_provider
    yield ctx, node.name, inst.id
    reg.close()


def other_host(host):
    return "cpu2" if host == "cpu1" else "cpu1"


def test_live_migrate_ready_node_keeps_registry_in_step(nova_node, os_provider):
    ctx, name, iid = nova_node
    source = ctx.registry.get(name).host
    ret = mig.migrate(ctx, name, host=other_host(source))
    assert ret["result"] is True and ret["state"] == "ready"
    server = os_provider.get(iid)
    node = ctx.registry.get(name)
    assert (node.state, node.host) == ("ready", server.host) and server.host == other_host(source)
    assert server.status is Status.RUNNING
    assert ctx.slurm.addr == []  # address unchanged: Slurm not touched
    assert [t for t in ctx.events.fired if "/migrating" in t] == [f"vcluster/node/{name}/migrating"]
    states = [a["to_state"] for a in reversed(ctx.registry.audit(name))]
    assert states[-2:] == ["migrating", "ready"]


def test_paused_node_resumes_on_another_host_with_its_job(nova_node, os_provider):
    ctx, name, iid = nova_node
    source = ctx.registry.get(name).host
    assert sus.suspend(ctx, name, mode="pause")["result"] is True
    assert os_provider.get(iid).status is Status.PAUSED
    assert ctx.slurm.job["state"] == "SUSPENDED" and ctx.slurm.node["reason"] == sus.DRAIN_REASON
    assert ctx.registry.get(name).state == "suspended"

    ret = sus.resume(ctx, name, host=other_host(source))
    assert ret["result"] is True, ret
    server = os_provider.get(iid)
    node = ctx.registry.get(name)
    assert server.status is Status.RUNNING and server.host == other_host(source)
    assert (node.state, node.host) == ("ready", server.host)
    assert ctx.slurm.job["state"] == "RUNNING" and ctx.slurm.node["state"] == ["IDLE"]
    states = [a["to_state"] for a in reversed(ctx.registry.audit(name))]
    assert states[-6:] == ["suspending", "suspended", "migrating", "suspended", "resuming", "ready"]


def test_suspended_node_cannot_move_and_stays_consistent(nova_node, os_provider):
    ctx, name, iid = nova_node
    source = ctx.registry.get(name).host
    assert sus.suspend(ctx, name, mode="suspend")["result"] is True
    assert os_provider.get(iid).status is Status.SUSPENDED
    with pytest.raises(VclusterError, match=f"cannot migrate {name}"):
        mig.migrate(ctx, name, host=other_host(source))
    node = ctx.registry.get(name)
    assert (node.state, node.host) == ("suspended", source) and os_provider.get(iid).host == source
    assert sus.resume(ctx, name)["result"] is True
    assert os_provider.get(iid).status is Status.RUNNING and ctx.registry.get(name).state == "ready"
