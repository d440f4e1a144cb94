"""The Debian 13 (trixie) node image: Slurm 24.11, Salt, and the node states on it.

Groundwork for a 24.11 test stack (issue 16, item 2): one container of the
trixie variant of the node image (``SUITE=trixie image/build.sh``, its own
cache directory and LXD alias, see image/README.md), launched by the LXD
provider as expand launches nodes. Checked in it:

- the packages: slurmd 24.11, munge, chrony, nfs-common, and Salt in
  /opt/salt at the bookworm image's version, on Debian 13's Python 3.13;
- the states a virtual node gets (munge, slurm.compute, chrony.client,
  nfs.client: salt/top.sls for roles slurm-compute + vcluster-virtual) from
  this checkout's salt/ and pillar/, pushed into the container and run by
  its own masterless ``salt-call --local`` with its own Debian 13 grains:
  the top assigns them, they render, a ``test=True`` highstate has no
  failure, munge, chrony.client and nfs.client apply (munged runs with the
  pillar's key), and slurmd, started with the options file the states
  write, runs configless and asks the conf server (nothing listens yet);
- the states read Slurm 24.11 from the node's slurmd (slurm.release), give
  slurmd --instance-id/--instance-type from the node's grains, and bound
  slurmd's Type=notify start: slurm.compute against the address where
  nothing listens returns after slurm:slurmd_start_timeout with the start
  failed and explained, and no slurmd left running.

Then a 24.11 controller: a second container of the same image with Debian
13's slurmctld package added (its .deb fetched from the Debian mirror into
the image's .deb cache: the containers have no route out), configured by
this checkout's munge and slurm.controller states (no accounting: see
docs/slurm-versions.md for what slurmdbd on Debian 13 needs). The node's
full highstate then starts its configless slurmd against it, the node
registers as a dynamic node with its InstanceId/InstanceType (set again by
a slurmd restart after `scontrol update` changed them), `sinfo` lists it
and a job runs on it. The controller's states read 24.11 from its
slurmctld, and cloud membership's slurm.conf rendered there has no
cloud_reg_addrs. Nothing is mocked.
"""

import base64
import hashlib
import json
import re
import subprocess

import pytest
import yaml

from tests.integration.lxd_fixtures import REPO, run_script
from tests.integration.trixie_stack import (
    TRIXIE_PACKAGES,
    fetch_debs,
    lxc_exec,
    packages_index,
    push,
    wait_booted,
)
from tests.provider_contract import SpecFactory, eventually
from vcluster.providers.lxd import LxdProvider

pytestmark = pytest.mark.integration

SUITE = "trixie"
IMAGE_ALIAS = "vcluster-node-trixie"
# Its own cache directory: build.sh prunes every other build in its cache
# directory, so the bookworm and trixie images would evict each other there.
CACHE_DIR = "/var/cache/vcluster/trixie"
SALT_VERSION = "3008.3"  # image/build.sh's default, the bookworm image's Salt
NODE_STATES = ["munge", "slurm.compute", "chrony.client", "nfs.client"]
MUNGE_KEY_RAW = hashlib.sha512(b"vcluster-trixie-image-test-munge-key").digest()
MUNGE_KEY_B64 = base64.b64encode(MUNGE_KEY_RAW).decode()
SRV = "/srv/vcluster"


def _build(*extra):
    env = {"SUITE": SUITE, "VCLUSTER_CACHE_DIR": CACHE_DIR}
    return run_script("env", *(f"{k}={v}" for k, v in env.items()),
                      REPO / "image" / "build.sh", "--alias", IMAGE_ALIAS, *extra, timeout=1800)


@pytest.fixture(scope="module")
def trixie_build(lxd_root):
    """The trixie image's files, built or taken from the cache (no LXD, no lock needed)."""
    _build("--no-import")


@pytest.fixture(scope="module")
def trixie_image(trixie_build, host_slurm_lock, lxd_daemon):
    """The image imported under its alias (cached: seconds)."""
    _build()
    return IMAGE_ALIAS


@pytest.fixture(scope="module")
def provider(trixie_image, lxd_daemon, lxd_network):  # the image fixture takes the lock first
    prov = LxdProvider("lxd-trixie-test", {"network": lxd_network["name"], "storage_pool": lxd_daemon})
    yield prov
    prov.close()


@pytest.fixture(scope="module")
def node(provider, trixie_image, lxd_addresses, lxd_network):
    """One trixie container, booted, with this checkout's salt/ and pillar/ in /srv/vcluster."""
    [spec] = SpecFactory(trixie_image, lxd_addresses, prefix="tx", memory_mb=512)(1)
    [inst] = provider.create([spec])
    try:
        wait_booted(spec.name)
        for tree in ("salt", "pillar"):
            subprocess.run(["lxc", "file", "push", "-r", "--create-dirs", str(REPO / tree), f"{spec.name}{SRV}/"],
                           check=True, timeout=120, capture_output=True)
        # no controller yet: the test bridge's gateway, where nothing listens
        site = {"slurm": {"controller": {"host": "ctl", "address": lxd_network["gateway"]}}}
        configure_minion(spec.name, spec.name, ["slurm-compute", "vcluster-virtual"], site,
                         grains_extra=node_grains(spec.name))
        yield spec
    finally:
        provider.delete([inst.id])


def node_grains(name):
    """Grain ``vcluster``: what a virtual node's first boot writes (vcluster/bootstrap.py grains_for),
    plus the instance fields the states read from vcluster_self or this grain
    (instance_id, instance_type: slurmd's --instance-id/--instance-type on 23.11+)."""
    return {"vcluster": {"node": name, "profile": "htc", "cpus": 1, "memory": 256,
                         "features": ["virtual", "htc"], "membership": "dynamic",
                         "instance_id": f"lxd-{name}", "instance_type": "1cpu-256mb"}}


def salt_call(name, *args, timeout=300, conf="conf"):
    """``salt-call --local`` in the container with the pushed tree; its JSON ``local`` value."""
    cmd = ["salt-call", "--local", "-c", f"{SRV}/{conf}", "--out=json", *args]
    proc = subprocess.run(["lxc", "exec", name, "--", *cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1, 2), f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-3000:]}"
    try:
        return json.loads(proc.stdout)["local"], output
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"no JSON from {' '.join(cmd)}:\n{output[-3000:]}") from exc


def by_id(state_return):
    assert isinstance(state_return, dict), f"state run failed: {state_return}"
    return {key.split("_|-")[1]: val for key, val in state_return.items()}


class TestTrixieImage:
    def test_is_debian_13(self, node):
        release = lxc_exec(node.name, "cat", "/etc/os-release")
        assert 'VERSION_CODENAME=trixie' in release
        assert 'VERSION_ID="13"' in release

    def test_slurmd_is_24_11(self, node):
        # Debian's build says "slurm-wlm 24.11.5"
        version = lxc_exec(node.name, "slurmd", "-V")
        assert re.fullmatch(r"slurm(-wlm)? 24\.11\.\d+", version), version

    def test_salt_is_the_bookworm_images_version_on_python_3_13(self, node):
        assert lxc_exec(node.name, "salt-minion", "--version") == f"salt-minion {SALT_VERSION} (Argon)"
        assert lxc_exec(node.name, "salt-call", "--version") == f"salt-call {SALT_VERSION} (Argon)"
        assert lxc_exec(node.name, "/opt/salt/bin/python", "-c",
                        "import sys; print(*sys.version_info[:2], sep='.')") == "3.13"

    def test_munge_chrony_and_nfs_client_installed(self, node):
        assert "munge-0." in lxc_exec(node.name, "munged", "--version")
        assert lxc_exec(node.name, "chronyd", "--version").startswith("chronyd (chrony) version 4.")
        for pkg in ("munge", "chrony", "nfs-common", "slurmd", "slurm-client"):
            assert lxc_exec(node.name, "dpkg-query", "-W", "-f", "${Status}", pkg) == "install ok installed", pkg

    def test_services_left_to_salt_as_in_the_bookworm_image(self, node):
        """munge/slurmd enabled but held back by their conditions, chrony off, no key, no options."""
        def systemctl(*args):
            return lxc_exec(node.name, "systemctl", *args, check=False)

        assert systemctl("is-enabled", "munge") == "enabled"
        assert systemctl("is-enabled", "slurmd") == "enabled"
        assert systemctl("is-enabled", "chrony") == "disabled"
        assert systemctl("is-active", "munge", "slurmd", "chrony").split() == ["inactive"] * 3
        assert lxc_exec(node.name, "sh", "-c",
                        "test ! -e /etc/munge/munge.key && test ! -e /etc/default/slurmd && echo absent") == "absent"


class TestNodeStatesOnTrixie:
    """This checkout's node states, run by the container's own Salt with Debian 13 grains."""

    def test_grains_are_debian_13_in_a_container(self, node):
        grains, _ = salt_call(node.name, "grains.item", "os", "osmajorrelease", "oscodename", "init", "virtual")
        assert (grains["os"], grains["osmajorrelease"], grains["oscodename"]) == ("Debian", 13, "trixie")
        assert grains["init"] == "systemd"
        assert grains["virtual"] in ("container", "LXC", "lxc")

    def test_top_assigns_the_node_states_and_they_render(self, node):
        top, _ = salt_call(node.name, "state.show_top")
        assert sorted(top["base"]) == sorted(NODE_STATES)
        rendered, output = salt_call(node.name, "state.show_sls", ",".join(NODE_STATES))
        assert isinstance(rendered, dict), f"render errors: {rendered}"
        assert {"munge-service-running", "slurm-compute-service-running",
                "slurm-compute-systemd-dropin-managed", "chrony-client-skipped", "nfs-client-disabled"} <= set(rendered)
        assert MUNGE_KEY_B64 not in output

    def test_dry_run_has_no_failure(self, node):
        result, output = salt_call(node.name, "state.highstate", "test=True")
        failed = {i: r["comment"] for i, r in by_id(result).items() if r["result"] is False}
        assert not failed, failed
        assert MUNGE_KEY_B64 not in output

    def test_munge_chrony_and_nfs_states_apply(self, node):
        result, output = salt_call(node.name, "state.apply", "munge,chrony.client,nfs.client")
        states = by_id(result)
        failed = {i: r["comment"] for i, r in states.items() if r["result"] is not True}
        assert not failed, failed
        assert MUNGE_KEY_B64 not in output
        assert lxc_exec(node.name, "systemctl", "is-active", "munge") == "active"
        assert lxc_exec(node.name, "sh", "-c", "munge -n | unmunge | sed -n 's/^STATUS: *//p'").startswith("Success")
        key = lxc_exec(node.name, "sh", "-c", "stat -c '%a %U' /etc/munge/munge.key && sha256sum < /etc/munge/munge.key")
        assert key.splitlines() == ["400 munge", f"{hashlib.sha256(MUNGE_KEY_RAW).hexdigest()}  -"]
        assert "chrony-client-skipped" in states
        assert chrony_untouched(node)

    def test_slurmd_starts_with_the_states_options(self, node, lxd_network):
        """The options file and drop-in for real; slurmd then runs configless and asks the conf server.

        Not the whole slurm.compute: Debian 13's slurmd.service is
        Type=notify, so its start (service.running) waits until slurmd has
        its configuration from a controller, and none runs here.
        """
        for state_id in ("slurm-compute-options-file-managed", "slurm-compute-systemd-dropin-managed"):
            result, output = salt_call(node.name, "state.sls_id", state_id, "slurm.compute")
            [ret] = by_id(result).values()
            assert ret["result"] is True, ret["comment"]
            if state_id.endswith("dropin-managed"):
                # the image ships the states' drop-in byte for byte: no daemon-reload on a first highstate
                assert ret["changes"] == {}, ret["changes"]
        gateway = lxd_network["gateway"]
        assert lxc_exec(node.name, "sed", "-n", "s/^SLURMD_OPTIONS=//p", "/etc/default/slurmd") == (
            f"\"-Z --conf-server {gateway} --conf 'CPUs=1 RealMemory=256 Feature=virtual,htc' -N {node.name} "
            f"--instance-id lxd-{node.name} --instance-type 1cpu-256mb\"")
        lxc_exec(node.name, "systemctl", "start", "--no-block", "slurmd")
        try:
            cmdline = eventually(
                lambda: lxc_exec(node.name, "sh", "-c", "tr '\\0' ' ' < /proc/$(pgrep -o -x slurmd)/cmdline",
                                 check=False),
                30, "a slurmd process")
            assert f"--conf-server {gateway}" in cmdline and f"-N {node.name}" in cmdline, cmdline
            eventually(lambda: "fetch" in lxc_exec(node.name, "journalctl", "-u", "slurmd", "--no-pager", check=False),
                       60, "slurmd to log its attempt to fetch the configuration")
        finally:
            lxc_exec(node.name, "systemctl", "stop", "slurmd", check=False)

    def test_states_read_slurm_24_11_here(self, node):
        """slurm.release (salt/slurm/map.jinja) from the node's own slurmd, as the states see it."""
        release = json.loads(salt_call(node.name, "slsutil.renderer", f"string={RELEASE_PROBE}",
                                       "default_renderer=jinja")[0])
        assert (release["series"], release["source"], release["error"]) == ("24.11", "/usr/sbin/slurmd -V", None)
        assert release["instance_fields"] and release["slurmd_notify"] and not release["cloud_reg_addrs"]

    def test_unreachable_controller_fails_the_start_in_bounded_time(self, node, lxd_network):
        """slurmd.service of 24.11 is Type=notify: `systemctl start` returns once slurmd has its
        configuration. The states bound that wait (slurm:slurmd_start_timeout, a drop-in), so
        slurm.compute against an address where nothing listens returns: the start fails and the
        next state says why, with the unit's last journal lines."""
        site = {"slurm": {"controller": {"host": "ctl", "address": lxd_network["gateway"]},
                          "slurmd_start_timeout": 4}}
        configure_minion(node.name, node.name, ["slurm-compute", "vcluster-virtual"], site,
                         grains_extra=node_grains(node.name))
        result, output = salt_call(node.name, "state.apply", "slurm.compute", timeout=240)
        states = by_id(result)
        assert states["slurm-compute-systemd-start-timeout-managed"]["result"] is True
        assert lxc_exec(node.name, "systemctl", "show", "-p", "TimeoutStartUSec", "slurmd") == "TimeoutStartUSec=4s"
        assert states["slurm-compute-service-running"]["result"] is False
        diagnosis = states["slurm-compute-service-diagnosed"]
        assert diagnosis["result"] is False
        stdout = diagnosis["changes"]["stdout"]
        assert stdout.startswith(f"slurmd did not get its configuration from {lxd_network['gateway']} within 4 s"), stdout
        # systemd's own words; slurmd's ("failed to load configs") follow its first attempt,
        # which ended 9 s after the start here ("Unable to contact slurm controller")
        assert "slurmd.service: start operation timed out" in stdout, stdout
        assert lxc_exec(node.name, "systemctl", "is-active", "slurmd", check=False) == "failed"
        # KillMode=process: systemd stops slurmd's main process only; its config-fetch child
        # ends by itself with its attempt, leaving no slurmd behind
        eventually(lambda: lxc_exec(node.name, "pgrep", "-x", "slurmd", check=False) == "", 30,
                   "the last slurmd process to end")
        others = {i: r["comment"] for i, r in states.items()
                  if r["result"] is not True and i not in ("slurm-compute-service-running",
                                                           "slurm-compute-service-diagnosed")}
        assert not others, others


#: Renders to slurm.release of salt/slurm/map.jinja, as JSON.
RELEASE_PROBE = ('{%- set tpldir = "slurm" %}{%- from "slurm/map.jinja" import slurm with context %}'
                 '{{ slurm.release | json }}')


def chrony_untouched(node):
    """chrony.client skips containers: chronyd stays off, its options are the package's."""
    return (lxc_exec(node.name, "systemctl", "is-active", "chrony", check=False) == "inactive"
            and "Managed by Salt" not in lxc_exec(node.name, "cat", "/etc/default/chrony", check=False))


# ------------------------------------------------------------ a 24.11 controller


@pytest.fixture(scope="module")
def slurmctld_deb(node):
    """Debian 13's slurmctld .deb of the node's Slurm version, fetched once into the image's .deb cache."""
    if not TRIXIE_PACKAGES.exists():
        pytest.skip(f"no Debian 13 package list at {TRIXIE_PACKAGES} to find slurmctld in: "
                    "build the chroot with tests/harness/trixie_chroot.sh")
    entry = packages_index()[0].get("slurmctld")
    version = lxc_exec(node.name, "dpkg-query", "-W", "-f", "${Version}", "slurmd")
    assert entry and entry["Version"] == version, (
        f"the package list at {TRIXIE_PACKAGES} has slurmctld {entry and entry['Version']}, the image slurmd "
        f"{version}: rebuild the image or the chroot's list")
    return fetch_debs([entry])[0]


def configure_minion(name, minion_id, roles, site, grains_extra=None, cluster_ids=None, policy_ids="L@nobody",
                     conf="conf", site_dir="site"):
    """A masterless minion config in ``SRV/<conf>`` and the site pillar in ``SRV/<site_dir>``."""
    push(name, f"{SRV}/{site_dir}/site.sls", yaml.safe_dump(site))
    push(name, f"{SRV}/{site_dir}/secrets.sls", yaml.safe_dump({"munge": {"key": MUNGE_KEY_B64}}), "0600")
    minion = {
        "id": minion_id,
        "file_client": "local",
        "root_dir": f"{SRV}/r",
        "file_roots": {"base": [f"{SRV}/salt"]},
        "pillar_roots": {"base": [f"{SRV}/pillar", f"{SRV}/{site_dir}"]},
        "nodegroups": {"vcluster_cluster": cluster_ids or f"L@{minion_id}", "vcluster_policy": policy_ids},
        "grains": {"roles": roles, **(grains_extra or {})},
        "enable_fqdns_grains": False,
    }
    # a config of its own: /etc/salt/minion would start the image's salt-minion
    push(name, f"{SRV}/{conf}/minion", yaml.safe_dump(minion))


@pytest.fixture(scope="module")
def controller(provider, trixie_image, lxd_addresses, slurmctld_deb, node):
    """A trixie container with slurmctld 24.11 from this checkout's controller states."""
    [spec] = SpecFactory(trixie_image, lxd_addresses, prefix="txc", memory_mb=512)(1)
    [inst] = provider.create([spec])
    try:
        wait_booted(spec.name)
        subprocess.run(["lxc", "file", "push", str(slurmctld_deb), f"{spec.name}/tmp/"], check=True, timeout=60)
        lxc_exec(spec.name, "env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", f"/tmp/{slurmctld_deb.name}")
        for tree in ("salt", "pillar"):
            subprocess.run(["lxc", "file", "push", "-r", "--create-dirs", str(REPO / tree), f"{spec.name}{SRV}/"],
                           check=True, timeout=120, capture_output=True)
        site = {"slurm": {"controller": {"host": spec.name, "address": spec.address}}}
        configure_minion(spec.name, spec.name, ["slurm-controller"], site,
                         cluster_ids=f"L@{spec.name},{node.name}", policy_ids=f"L@{spec.name}")
        yield spec
    finally:
        provider.delete([inst.id])


def run_in(name, *cmd, timeout=60):
    return lxc_exec(name, *cmd, timeout=timeout)


class TestController24_11:
    """slurmctld 24.11 from the controller states; the trixie node joins it by its highstate."""

    def test_controller_states_start_slurmctld(self, controller):
        result, output = salt_call(controller.name, "state.apply", "munge,slurm.controller", timeout=600)
        states = by_id(result)
        failed = {i: r["comment"] for i, r in states.items() if r["result"] is not True}
        assert not failed, failed
        assert MUNGE_KEY_B64 not in output
        assert run_in(controller.name, "systemctl", "is-active", "slurmctld") == "active"
        version = run_in(controller.name, "scontrol", "--version")
        assert re.fullmatch(r"slurm(-wlm)? 24\.11\.\d+", version), version
        assert "is UP" in run_in(controller.name, "scontrol", "ping")

    def test_controller_states_follow_its_slurm_24_11(self, controller):
        """slurm.release from the controller's slurmctld; cloud membership's slurm.conf then has no
        cloud_reg_addrs (24.11 logs "defunct" for it). Rendered with a cloud pillar of its own,
        in a second minion config, so the running controller keeps its configuration."""
        release = json.loads(salt_call(controller.name, "slsutil.renderer", f"string={RELEASE_PROBE}",
                                       "default_renderer=jinja")[0])
        assert (release["series"], release["source"], release["error"]) == ("24.11", "/usr/sbin/slurmctld -V", None)
        site = {"slurm": {"controller": {"host": controller.name, "address": controller.address},
                          "membership": "cloud"},
                "vcluster_cloud": {
                    "profiles": {"htc": {"nodes": "cn[1-4]", "cpus": 1, "memory": 256,
                                         "features": ["virtual", "htc"], "partition": "htc"}},
                    "power_save": {"suspend_time": 120, "suspend_timeout": 60, "resume_timeout": 300,
                                   "resume_rate": 10, "suspend_rate": 0, "exclude_nodes": None,
                                   "exclude_partitions": []}}}
        configure_minion(controller.name, controller.name, ["slurm-controller"], site, conf="conf-cloud",
                         site_dir="site-cloud", policy_ids=f"L@{controller.name}")
        salt_call(controller.name, "cp.get_template", "salt://slurm/files/slurm.conf.jinja", "/tmp/cloud.conf",
                  "tplroot=slurm", conf="conf-cloud")
        lines = run_in(controller.name, "cat", "/tmp/cloud.conf").splitlines()
        assert "NodeName=cn[1-4] CPUs=1 RealMemory=256 Feature=virtual,htc State=CLOUD" in lines, lines
        assert "SlurmctldParameters=enable_configless,idle_on_node_suspend" in lines, lines

    def test_node_highstate_registers_its_slurmd(self, controller, node):
        site = {"slurm": {"controller": {"host": controller.name, "address": controller.address}}}
        configure_minion(node.name, node.name, ["slurm-compute", "vcluster-virtual"], site,
                         grains_extra=node_grains(node.name))
        result, output = salt_call(node.name, "state.highstate", timeout=600)
        states = by_id(result)
        failed = {i: r["comment"] for i, r in states.items() if r["result"] is not True}
        assert not failed, failed
        # the diagnosis runs only when the start failed
        assert "onfail" in states["slurm-compute-service-diagnosed"]["comment"], states["slurm-compute-service-diagnosed"]
        assert lxc_exec(node.name, "systemctl", "is-active", "slurmd") == "active"
        # the start timeout is the default again (the test before set 4 s)
        assert lxc_exec(node.name, "systemctl", "show", "-p", "TimeoutStartUSec", "slurmd") == "TimeoutStartUSec=1min"
        line = eventually(
            lambda: run_in(controller.name, "sinfo", "-h", "-N", "-n", node.name, "-o", "%N %t %f %c %m"),
            60, f"{node.name} in sinfo")
        assert line.split() == [node.name, "idle", "virtual,htc", "1", "256"], line

    def test_node_registered_with_its_instance(self, controller, node):
        """slurmd --instance-id/--instance-type (24.11): the registration sets them, and a restart
        of slurmd keeps them (without the options a registration clears what scontrol set)."""
        def fields():
            words = dict(w.split("=", 1) for w in run_in(controller.name, "scontrol", "show", "-o", "node",
                                                         node.name).split() if "=" in w)
            return words.get("InstanceId"), words.get("InstanceType")

        assert fields() == (f"lxd-{node.name}", "1cpu-256mb")
        run_in(controller.name, "scontrol", "update", f"NodeName={node.name}", "InstanceId=overwritten")
        assert fields()[0] == "overwritten"
        lxc_exec(node.name, "systemctl", "restart", "slurmd")
        eventually(lambda: fields()[0] == f"lxd-{node.name}" or None, 60,
                   f"{node.name}'s registration to set InstanceId again")
        assert fields() == (f"lxd-{node.name}", "1cpu-256mb")

    def test_a_job_runs_on_the_node(self, controller, node):
        job = run_in(controller.name, "sbatch", "--parsable", "-p", "htc", "-w", node.name,
                     "-o", "/dev/null", "--wrap", "hostname")
        state = eventually(
            lambda: (lambda s: s if s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL") else None)(
                run_in(controller.name, "scontrol", "show", "-o", "job", job).split("JobState=")[1].split()[0]),
            120, f"job {job} to end")
        assert state == "COMPLETED", run_in(controller.name, "scontrol", "show", "job", job)
