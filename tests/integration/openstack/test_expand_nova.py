"""The full node flow through the real Nova API: expand to running jobs, retire to nothing.

``salt-run vcluster.expand count=2 profile=os-htc`` goes through the
OpenStack provider to the testbed's Nova (one multi-create, rename and
metadata once ACTIVE). Nova's fake virt driver boots no guest, so
:class:`~tests.integration.openstack.guest.NovaGuests` plays the guest of
each server with an LXD container built from the server's own user data.
From there on everything is the product: the minion starts with its
pre-accepted key, the reactor highstates it, slurmd joins Slurm, jobs run.
``vcluster.retire`` then deletes the servers through Nova (the harness
destroys the guests as Nova deletes them), removes the Slurm nodes and keys
and releases names and addresses.
"""

import json
import pathlib
import subprocess
import time

import pytest

from tests.integration.lxd_fixtures import IMAGE_ALIAS
from tests.integration.openstack.conftest import CLOUD, FLAVOR, IMAGE, cloud_password, connect_testbed
from tests.integration.openstack.guest import NovaGuests
from tests.integration.stack import ClusterStack, job_states, node_info, sbatch, wait_jobs
from vcluster.providers.openstack import OpenStackProvider, tag_cluster

pytestmark = [pytest.mark.integration, pytest.mark.openstack, pytest.mark.slow]

CLUSTER = "vcnova"
PROFILE = "os-htc"


def site_extra(testbed):
    """The OpenStack provider and profile, merged into the stack's site pillar."""
    return {
        "vcluster": {
            "cluster": CLUSTER,
            "providers": {
                "nova": {
                    "driver": "openstack",
                    "cloud": CLOUD,
                    "clouds_yaml": str(testbed["clouds_yaml"]),
                    "networks": "none",  # the testbed has no Neutron networks
                    "poll_interval": 0.5,
                    "boot_timeout": 120,
                    "action_timeout": 90,
                },
            },
            "profiles": {
                PROFILE: {
                    "provider": "nova",
                    "pool": "local",
                    "image": IMAGE,
                    "flavor": FLAVOR,
                    "cpus": 1,
                    "memory": 1024,  # what the node tells Slurm; the guest harness sizes the container by it
                    "features": ["virtual", "htc"],
                    "partition": "htc",
                    "join_timeout": 300,
                },
            },
        }
    }


@pytest.fixture(scope="module")
def nova_stack(host_slurm_lock, salt_factories, lxd_network, lxd_image, openstack_testbed, tmp_path_factory):
    """The real stack (master, reactor, controller minion, Slurm) with the Nova provider in its policy."""
    cluster = ClusterStack(
        salt_factories, lxd_network, tmp_path_factory.mktemp("novastack"), site_extra=site_extra(openstack_testbed)
    )
    cluster.start()
    try:
        cluster.highstate_controller()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def nova_conn(openstack_testbed):
    conn = connect_testbed(openstack_testbed)
    yield conn
    conn.close()


@pytest.fixture
def guests(openstack_testbed, lxd_network, lxd_daemon, lxd_image):
    """The guest harness for the cluster's servers, stopped (and its containers deleted) after the test."""
    conn = connect_testbed(openstack_testbed)
    harness = NovaGuests(
        conn, CLUSTER, {"network": lxd_network["name"], "storage_pool": lxd_daemon, "image": IMAGE_ALIAS},
        deadline_seconds=1800,
    ).start()
    yield harness
    try:
        harness.stop()
    finally:
        conn.close()


def nova_servers(conn):
    return {s.id: s for s in conn.compute.servers(details=True, tags=tag_cluster(CLUSTER))}


def container_addresses(names):
    out = subprocess.run(["lxc", "list", "--format", "json"], capture_output=True, text=True, check=True).stdout
    found = {}
    for inst in json.loads(out):
        if inst["name"] in names:
            addrs = (inst.get("state") or {}).get("network", {}).get("eth0", {}).get("addresses", [])
            found[inst["name"]] = sorted(a["address"] for a in addrs if a["family"] == "inet")
    return found


def lxd_status(name):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "ns"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        n, _, status = line.partition(",")
        if n == name:
            return status
    return None


def all_keys(stack):
    data = stack.master.salt_key_cli().run("--list", "all", "--out", "json").data
    return {k: set(v) for k, v in data.items() if isinstance(v, list)}


def test_expand_through_nova_runs_jobs_and_retire_leaves_nothing(nova_stack, guests, nova_conn, openstack_testbed):
    stack = nova_stack
    password = cloud_password(openstack_testbed)
    assert nova_servers(nova_conn) == {}

    started = time.monotonic()
    ret = stack.run("vcluster.expand", "count=2", f"profile={PROFILE}")
    expand_seconds = time.monotonic() - started
    assert ret.returncode == 0, ret.stdout
    assert ret.data["result"] is True, ret.data
    assert password not in ret.stdout
    nodes = ret.data["nodes"]
    names = sorted(nodes)
    assert len(names) == 2 and all(nodes[n]["state"] == "ready" for n in names), nodes

    # Nova holds exactly these servers: named after their nodes, tagged, ACTIVE
    servers = nova_servers(nova_conn)
    assert sorted(s.name for s in servers.values()) == names
    assert len({s.reservation_id for s in servers.values()}) == 1  # one multi-create
    for name in names:
        server = servers[nodes[name]["instance"]]
        assert server.status == "ACTIVE"
        assert server.metadata["vcluster_node"] == name
        assert server.metadata["vcluster_cluster"] == CLUSTER
        assert server.metadata["vcluster_address"] == nodes[name]["address"]

    # the harness played each server's guest with its own boot files and address
    assert guests.errors == []
    assert guests.containers() == names
    assert {g["name"]: g["address"] for g in guests.guests.values()} == {n: nodes[n]["address"] for n in names}
    assert container_addresses(names) == {n: [nodes[n]["address"]] for n in names}
    accepted = all_keys(stack)
    assert set(names) <= accepted.get("minions", set())

    # Slurm has them, with the profile's features; status agrees
    for name in names:
        info = node_info(name)
        assert info is not None, f"{name} not in Slurm"
        assert info["State"].split("+")[0] in ("IDLE", "MIXED", "ALLOCATED"), info["State"]
        assert "htc" in info.get("AvailableFeatures", "")
        assert info.get("NodeAddr") == nodes[name]["address"]
    status = stack.run("vcluster.status").data
    assert sorted(status["nodes"]) == names
    assert all(status["nodes"][n]["provider"] == "nova" and status["nodes"][n]["state"] == "ready" for n in names)

    # jobs run on the new nodes and all complete
    jobs = [sbatch("-p", "htc", "-w", name) for name in names for _ in range(2)]
    final = wait_jobs(jobs, timeout=180)
    assert set(final.values()) == {"COMPLETED"}

    # the harness follows Nova's state: suspend freezes the guest, resume thaws it
    provider = OpenStackProvider("check", {"cloud": CLOUD, "clouds_yaml": str(openstack_testbed["clouds_yaml"]),
                                           "networks": "none", "poll_interval": 0.5})
    try:
        first = names[0]
        provider.suspend(nodes[first]["instance"])
        guests.wait_for(lambda: lxd_status(first) == "FROZEN", 30, f"{first} frozen")
        provider.resume(nodes[first]["instance"])
        guests.wait_for(lambda: lxd_status(first) == "RUNNING", 30, f"{first} thawed")
    finally:
        provider.close()
    assert [a[3] for a in guests.actions if a[2] == first] == ["boot", "freeze", "thaw"]

    # retire: drain, delete the servers through Nova, remove from Slurm, delete keys, free the pool
    started = time.monotonic()
    ret = stack.run("vcluster.retire", f"nodes={','.join(names)}")
    retire_seconds = time.monotonic() - started
    assert ret.returncode == 0, ret.stdout
    assert ret.data["result"] is True, ret.data
    assert all(v == "released" for v in ret.data["nodes"].values()), ret.data
    assert password not in ret.stdout

    # Nova reports a server DELETED (hypervisor done) for a moment before it drops out of listings
    left = nova_servers(nova_conn)
    assert all(s.status in ("DELETED", "SOFT_DELETED") for s in left.values()), {s.name: s.status for s in left.values()}
    guests.wait_for(lambda: nova_servers(nova_conn) == {}, 30, "no server of the cluster listed")
    guests.wait_for(lambda: not guests.guests, 30, "every guest destroyed")
    assert guests.containers() == [] and lxd_status(names[0]) is None
    assert guests.errors == []
    keys = all_keys(stack)
    assert not set(names) & keys.get("minions", set()), keys
    # A guest this harness destroys a moment after Nova reports it gone may
    # re-authenticate in between and leave a *pending* key (see guest.py).
    # Reconcile owns that case: it reports such a key and deletes it.
    stray = set(names) & set().union(*keys.values())
    if stray:
        report = stack.run("vcluster.reconcile").data
        assert {i["node"] for i in report["report"]["orphan_key"]} == stray, report
        assert stack.run("vcluster.reconcile", "apply=True").data["result"] is True
        keys = all_keys(stack)
    assert not set(names) & set().union(*keys.values()), keys
    for name in names:
        assert node_info(name) is None
    assert stack.run("vcluster.status").data["nodes"] == {}
    # names and addresses are free again: a plan would take the same ones
    plan = stack.run("vcluster.plan", "count=2", f"profile={PROFILE}").data
    assert plan["nodes"] == {n: nodes[n]["address"] for n in names}
    # no job was lost: every job submitted still shows COMPLETED
    assert job_states(jobs) == final
    # the cloud credentials never reached the master's log (the runner ran in the master's salt-run)
    log_file = pathlib.Path(stack.master.config["log_file"])
    assert log_file.exists() and password not in log_file.read_text(errors="replace")
    t0 = guests.actions[0][0]
    print(f"expand of 2 nodes through Nova: {expand_seconds:.1f} s; retire: {retire_seconds:.1f} s"
          f" (from +{started - t0:.1f} s); guest actions:",
          [(round(t - t0, 1), name, action) for t, _, name, action in guests.actions])
