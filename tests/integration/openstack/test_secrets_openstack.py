"""No secret leaves where it belongs: an expand and retire through the real Nova API.

The stack's provider authenticates with the testbed's ``clouds.yaml``
(a password). Its master logs at ``debug`` (the runners log there,
openstacksdk and keystoneauth included). While ``vcluster.expand`` creates a
server through Nova, the guest harness plays it (tests/integration/openstack/
guest.py) and the node joins, a job runs, and ``vcluster.retire`` deletes it,
every master-bus event, every job in the master's job cache, the master's,
controller's and node's minion logs, slurmctld's log and every runner return
are searched (tests/integration/secrets_scan.py) for the cloud password, the
node's private key, the munge key, and the server's user data as Nova keeps
it (base64, which holds the key). The controller's pillar must not hold the
password nor the key either.
"""

import os
import pathlib

import pytest
import yaml

from tests.integration.openstack.conftest import cloud_password
from tests.integration.openstack.test_expand_nova import (  # noqa: F401 - fixtures
    PROFILE,
    all_keys,
    guests,
    nova_conn,
    nova_servers,
    site_extra,
)
from tests.integration.secrets_scan import KeyCollector, Secrets, Watch
from tests.integration.stack import ClusterStack, job_states, sbatch, slurm, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.openstack, pytest.mark.slow]


@pytest.fixture(scope="module")
def debug_nova_stack(host_slurm_lock, salt_factories, lxd_network, lxd_image, openstack_testbed, tmp_path_factory):
    """The Nova stack of test_expand_nova, its master logging at debug."""
    saved = os.environ.get("VCLUSTER_TEST_LOG_LEVEL")
    os.environ["VCLUSTER_TEST_LOG_LEVEL"] = "debug"
    try:
        cluster = ClusterStack(salt_factories, lxd_network, tmp_path_factory.mktemp("novasecrets"),
                               site_extra=site_extra(openstack_testbed))
        cluster.start()
    finally:
        if saved is None:
            os.environ.pop("VCLUSTER_TEST_LOG_LEVEL", None)
        else:
            os.environ["VCLUSTER_TEST_LOG_LEVEL"] = saved
    try:
        assert cluster.master.config["log_level_logfile"] == "debug"
        cluster.highstate_controller()
        yield cluster
    finally:
        cluster.stop()


def test_openstack_expand_and_retire_leak_no_secret(debug_nova_stack, guests, nova_conn, openstack_testbed):
    stack = debug_nova_stack
    secrets = Secrets()
    password = cloud_password(openstack_testbed)
    secrets.add_value("cloud password", password)
    munge = yaml.safe_load((stack.site / "secrets.sls").read_text())["munge"]["key"]
    secrets.add_value("munge key (pillar base64)", munge)
    secrets.add_bytes("munge key", pathlib.Path("/etc/munge/munge.key").read_bytes())
    watch = Watch(stack.master, secrets).start()
    keys = KeyCollector(secrets).start()
    try:
        ret = watch.record("expand", stack.run("vcluster.expand", "count=1", f"profile={PROFILE}"))
        assert ret.data["result"] is True, ret.data
        (name,) = ret.data["nodes"]
        assert keys.pull(name) or keys.pems.get(name), f"the key of {name} was never seen"

        # the user data as Nova keeps it holds the node's key (base64 of the
        # cloud-config): it must not be found anywhere else either
        (server,) = nova_servers(nova_conn).values()
        stored = nova_conn.compute.get("/servers/" + server.id,
                                       microversion="2.3").json()["server"]["OS-EXT-SRV-ATTR:user_data"]
        assert stored and keys.pems[name][-1] not in stored  # base64, not the PEM text
        secrets.add_value("server user data (base64)", stored)

        job = sbatch("-p", "htc", "-w", name, script="hostname")
        assert wait_jobs([job], timeout=180) == {job: "COMPLETED"}
        watch.pull_node_log(name)
        ret = watch.record("retire", stack.run("vcluster.retire", f"nodes={name}"))
        assert ret.data["result"] is True, ret.data
        guests.wait_for(lambda: nova_servers(nova_conn) == {}, 30, "the server gone")
        left = all_keys(stack)
        stray = {name} & left.get("minions", set())
        assert not stray, left
        assert job_states([job]) == {job: "COMPLETED"}
    finally:
        keys.stop()
        watch.stop()

    # the search has something to find, and finds it where it is
    assert secrets.found_in(keys.pems[name][-1]) == [f"private key of {name} #1"]
    assert secrets.found_in(pathlib.Path(openstack_testbed["clouds_yaml"]).read_text()) == ["cloud password"]
    log = pathlib.Path(stack.master.config["log_file"]).read_text(errors="replace")
    assert "[DEBUG   ]" in log  # the runners' debug lines are in it
    assert watch.node_logs, "the node's minion log was not searched"

    slurmctld_log = [ln.split("=", 1)[1].strip() for ln in slurm("scontrol", "show", "config").splitlines()
                     if ln.startswith("SlurmctldLogFile")]
    leaks = watch.leaks(extra_files=[stack.minion.config["log_file"], *slurmctld_log])
    assert leaks == {}, leaks

    pillar = stack.call("pillar.items").stdout
    assert secrets.found_in(pillar, ignore=[lb for lb in secrets.labels() if lb.startswith("munge")]) == []
    assert guests.errors == []
