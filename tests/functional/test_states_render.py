"""Render and dry-run the state tree (salt/) with the repository's pillar.

Every case runs ``salt-call --local`` in a sandbox of its own: a minion
config under a short temporary directory (root_dir, cache, pki, logs there),
``file_roots`` = salt/, ``pillar_roots`` = pillar/ plus a temporary site
root holding ``site.sls`` and ``secrets.sls`` (what the stack script writes
to /etc/vcluster/pillar), and static grains that make the minion a
controller, a bare-metal compute node or a virtual node.

States only ever run with ``test=True`` against the host, which must not
change; the few real runs (munge key, slurm.conf) write into the sandbox
only. Nothing here needs the network.

What is checked:
- every SLS the top file assigns renders (``state.show_sls``) for the roles
  controller, bare-metal compute, virtual dynamic and virtual static node;
- a highstate with ``test=True`` has no failed state and changes no file;
- slurm.conf content: SlurmctldHost, bare-metal and static virtual NodeName
  lines, NodeSet by feature, partitions; configless SLURMD_OPTIONS;
- the munge key never appears in any output, and reaches listed ids only;
- containers take the chrony container branch;
- the rendered slurm.conf is accepted by the real slurmctld (when present).
"""

import base64
import copy
import hashlib
import json
import os
import pathlib
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from tests.harness.slurm import PrivateMunged

REPO = pathlib.Path(__file__).resolve().parents[2]
STATE_ROOT = REPO / "salt"
PILLAR_ROOT = REPO / "pillar"

# A recognisable fake munge key: 64 random-looking bytes, fixed for the run.
MUNGE_KEY_RAW = hashlib.sha512(b"vcluster-functional-test-munge-key").digest()
MUNGE_KEY_B64 = base64.b64encode(MUNGE_KEY_RAW).decode()

HOST = socket.gethostname()
CTL_ADDRESS = "10.77.0.1"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="test=True runs read root-only files (munge key)"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]


def _salt_call_bin():
    candidate = pathlib.Path(sys.executable).parent / "salt-call"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("salt-call")
    if not found:
        pytest.skip("salt-call not found")
    return found


def _merge(base, extra):
    """Recursive dict merge (extra wins), like Salt's pillar merge."""
    out = copy.deepcopy(base)
    for key, val in (extra or {}).items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _site(**extra):
    """The site pillar of the local stack, as the stack script writes it."""
    site = {
        "slurm": {
            "controller": {"host": HOST, "address": CTL_ADDRESS},
            "nodes": {HOST: {"address": CTL_ADDRESS, "cpus": 2, "memory": 1000}},
        },
    }
    return _merge(site, extra)


# Grains of each role. The host is Debian without systemd; virtual nodes are
# LXD containers running systemd.
BARE = {"virtual": "physical", "virtual_subtype": "", "init": "sysvinit"}
LXD = {"virtual": "container", "virtual_subtype": "LXC", "init": "systemd"}

ROLES = {
    "controller": {
        "id": HOST,
        "grains": {"roles": ["slurm-controller", "slurm-compute"], **BARE},
        "site": _site(),
        "sls": ["munge", "slurm.controller", "chrony.server", "nfs.server", "slurm.compute"],
    },
    "baremetal": {
        "id": "node01",
        "grains": {"roles": ["slurm-compute"], **BARE},
        "site": _site(slurm={"nodes": {"node01": {"address": "10.77.0.11", "cpus": 4, "memory": 4000}}}),
        "sls": ["munge", "slurm.compute", "chrony.client", "nfs.client"],
    },
    "virtual-dynamic": {
        "id": "vnode001",
        "grains": {
            "roles": ["slurm-compute", "vcluster-virtual"],
            "vcluster": {
                "node": "vnode001",
                "profile": "htc",
                "cpus": 1,
                "memory": 1024,
                "features": ["virtual", "htc"],
                "membership": "dynamic",
            },
            **LXD,
        },
        "site": _site(),
        "sls": ["munge", "slurm.compute", "chrony.client", "nfs.client"],
    },
    "virtual-static": {
        "id": "vnode002",
        "grains": {"roles": ["slurm-compute", "vcluster-virtual"], **LXD},
        # What the master's ext_pillar adds for a registry node.
        "site": _site(
            slurm={"membership": "static"},
            vcluster_self={
                "name": "vnode002",
                "profile": "htc",
                "cpus": 2,
                "memory": 2048,
                "features": ["virtual", "htc"],
                "membership": "static",
            },
            vcluster_nodes={
                "vnode002": {
                    "address": "10.77.0.102",
                    "cpus": 2,
                    "memory": 2048,
                    "features": ["virtual", "htc"],
                },
                "vnode003": {
                    "address": "10.77.0.103",
                    "cpus": 2,
                    "memory": 2048,
                    "features": ["virtual", "htc"],
                },
            },
        ),
        "sls": ["munge", "slurm.compute", "chrony.client", "nfs.client"],
    },
}

# Host files a dry run must leave alone.
WATCHED_FILES = [
    "/etc/munge/munge.key",
    "/etc/slurm/slurm.conf",
    "/etc/default/slurmd",
    "/etc/default/chrony",
    "/etc/chrony/chrony.conf",
    "/etc/exports",
    "/etc/fstab",
]


def _fingerprint(paths):
    out = {}
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out[path] = None
            continue
        with open(path, "rb") as fh:
            out[path] = (hashlib.sha256(fh.read()).hexdigest(), st.st_mode, st.st_uid, st.st_gid)
    return out


class Sandbox:
    """One masterless minion: config, site pillar root, salt-call runner."""

    def __init__(self, root, minion_id, grains, site, secrets=True, cluster_ids=None, policy_ids=None):
        self.root = pathlib.Path(root)
        self.conf = self.root / "conf"
        self.site_root = self.root / "site"
        self.conf.mkdir(parents=True)
        self.site_root.mkdir()
        cluster_ids = cluster_ids or f"L@{HOST},node01 or vnode*"
        config = {
            "id": minion_id,
            "file_client": "local",
            "root_dir": str(self.root / "r"),
            "file_roots": {"base": [str(STATE_ROOT)]},
            "pillar_roots": {"base": [str(PILLAR_ROOT), str(self.site_root)]},
            "nodegroups": {
                "vcluster_cluster": cluster_ids,
                "vcluster_policy": policy_ids or f"{HOST}_master",
            },
            "grains": grains,
            "enable_fqdns_grains": False,
            "log_level_logfile": "info",
        }
        if not os.path.isdir("/run/systemd/system"):
            # PID 1 is not systemd, but /usr/bin/systemctl exists: Salt 3008
            # then also loads systemd_service ("offline" mode) and service
            # states report "Running in OFFLINE mode. Nothing to do". The
            # host's minion config must disable it the same way.
            config["disable_modules"] = ["systemd_service"]
        (self.conf / "minion").write_text(yaml.safe_dump(config))
        (self.site_root / "site.sls").write_text(yaml.safe_dump(site))
        if secrets:
            (self.site_root / "secrets.sls").write_text(
                yaml.safe_dump({"munge": {"key": MUNGE_KEY_B64}})
            )
        self.last_output = ""

    def call(self, *args, check=True):
        cmd = [_salt_call_bin(), "--local", "-c", str(self.conf), "--out=json", *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False
        )
        self.last_output = proc.stdout + proc.stderr
        if check and proc.returncode not in (0, 1, 2):
            raise AssertionError(f"{cmd} exited {proc.returncode}:\n{self.last_output}")
        try:
            return json.loads(proc.stdout)["local"]
        except (ValueError, KeyError) as exc:
            raise AssertionError(f"no JSON from {cmd}:\n{self.last_output}") from exc

    def render_template(self, source, dest):
        """Render a formula template into the sandbox, return its text."""
        tplroot = source.split("/")[0]
        result = self.call("cp.get_template", f"salt://{source}", str(dest), f"tplroot={tplroot}")
        assert result, f"cp.get_template failed:\n{self.last_output}"
        return pathlib.Path(dest).read_text()


@pytest.fixture(scope="module")
def tmp_root():
    # Short path: Salt creates sockets under root_dir in some code paths.
    path = tempfile.mkdtemp(prefix="vcs", dir="/tmp")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sandbox(tmp_root):
    counter = iter(range(1000))

    def make(role, *, grains=None, site=None, secrets=True, minion_id=None):
        spec = ROLES[role]
        return Sandbox(
            tmp_root / f"{role}-{next(counter)}",
            minion_id or spec["id"],
            _merge(spec["grains"], grains),
            _merge(spec["site"], site),
            secrets=secrets,
        )

    return make


def _by_id(state_return):
    """{state id: result dict} from a state.* return."""
    assert isinstance(state_return, dict), f"state run failed: {state_return}"
    return {key.split("_|-")[1]: val for key, val in state_return.items()}


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("role", sorted(ROLES))
def test_top_assigns_and_every_sls_renders(sandbox, role):
    box = sandbox(role)
    top = box.call("state.show_top")
    assert sorted(top["base"]) == sorted(ROLES[role]["sls"])

    rendered = box.call("state.show_sls", ",".join(ROLES[role]["sls"]))
    assert isinstance(rendered, dict), f"render errors: {rendered}"
    ids = set(rendered)
    assert {"munge-service-running", "slurm-compute-service-running"} <= ids
    if role == "controller":
        assert {"slurm-controller-service-running", "slurm-controller-reconfigured"} <= ids
        assert "chrony-server-service-running" in ids
        assert not any(i.startswith("chrony-client") for i in ids)
    # The key is taken from pillar at run time, never rendered into the SLS.
    assert MUNGE_KEY_B64 not in json.dumps(rendered)
    assert rendered["munge-key-file-managed"]["file"][1] == {"contents_pillar": "munge:key"}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_highstate_dry_run_changes_nothing(sandbox, role):
    box = sandbox(role)
    before = _fingerprint(WATCHED_FILES)
    result = _by_id(box.call("state.highstate", "test=True"))
    after = _fingerprint(WATCHED_FILES)
    assert before == after

    failed = {i: r["comment"] for i, r in result.items() if r["result"] is False}
    assert not failed, failed
    assert MUNGE_KEY_B64 not in box.last_output
    for state_id in ("munge-service-running", "slurm-compute-service-running"):
        assert "OFFLINE" not in result[state_id]["comment"]


def test_slurmd_options_per_node_kind(sandbox):
    def options(role):
        rendered = sandbox(role).call("state.show_sls", "slurm.compute")
        (args,) = [a for a in rendered["slurm-compute-options-file-managed"]["file"] if "contents" in a]
        (line,) = [ln for ln in args["contents"].splitlines() if ln.startswith("SLURMD_OPTIONS=")]
        return line, rendered

    line, rendered = options("virtual-dynamic")
    assert line == (
        f"SLURMD_OPTIONS=\"-Z --conf-server {CTL_ADDRESS} "
        "--conf 'CPUs=1 RealMemory=1024 Feature=virtual,htc' -N vnode001\""
    )
    # configless: no slurm.conf, and Debian's unit condition on it is lifted
    assert "slurm-config-file-managed" not in rendered
    assert "slurm-compute-systemd-dropin-managed" in rendered

    # the node image ships the same drop-in, so a first highstate changes
    # nothing there and needs no daemon-reload (image/customize.sh)
    (dropin,) = [a for a in rendered["slurm-compute-systemd-dropin-managed"]["file"] if "contents" in a]
    (path,) = [a["name"] for a in rendered["slurm-compute-systemd-dropin-managed"]["file"] if "name" in a]
    shipped = REPO / "image" / "files" / path.lstrip("/")
    assert dropin["contents"] == shipped.read_text()
    assert "ConditionPathExists=/etc/default/slurmd" in dropin["contents"].splitlines()

    line, rendered = options("virtual-static")
    assert line == 'SLURMD_OPTIONS="-N vnode002"'
    assert "slurm-config-file-managed" in rendered
    watch = rendered["slurm-compute-service-running"]["service"]
    assert {"watch": ["slurm-compute-options-file-managed", "slurm-config-file-managed"]} in watch

    line, rendered = options("baremetal")
    assert line == 'SLURMD_OPTIONS=""'
    assert "slurm-config-file-managed" in rendered
    assert "slurm-compute-systemd-dropin-managed" not in rendered


def test_dynamic_node_without_sizes_fails_clearly(sandbox):
    box = sandbox("virtual-dynamic", grains={"vcluster": {"cpus": None, "memory": None}})
    result = _by_id(box.call("state.sls", "slurm.compute", "test=True"))
    assert result["slurm-compute-options-file-managed"]["result"] is False
    # (test mode replaces the comment of test.fail_without_changes)
    rendered = box.call("state.show_sls", "slurm.compute")
    comment = rendered["slurm-compute-options-file-managed"]["test"][0]["comment"]
    assert "vcluster_self:cpus" in comment and "vcluster_self:memory" in comment


# -------------------------------------------------------------- slurm.conf


def _conf_lines(text):
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_slurm_conf_dynamic_membership(sandbox, tmp_root):
    box = sandbox("controller")
    text = box.render_template("slurm/files/slurm.conf.jinja", tmp_root / "dyn.conf")
    lines = _conf_lines(text)
    assert f"SlurmctldHost={HOST}({CTL_ADDRESS})" in lines
    for expected in (
        "AuthType=auth/munge",
        "SlurmctldParameters=enable_configless",
        "MaxNodeCount=128",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "TreeWidth=65533",
        "ReturnToService=2",
        "StateSaveLocation=/var/lib/slurm/slurmctld",
    ):
        assert expected in lines, expected
    assert (
        f"NodeName={HOST} NodeAddr={CTL_ADDRESS} CPUs=2 RealMemory=1000 "
        "Feature=baremetal State=UNKNOWN"
    ) in lines
    assert "NodeSet=ns_batch Feature=baremetal" in lines
    assert "NodeSet=ns_htc Feature=htc" in lines
    assert "PartitionName=batch Nodes=ns_batch Default=YES MaxTime=INFINITE State=UP" in lines
    assert "PartitionName=htc Nodes=ns_htc Default=NO MaxTime=INFINITE State=UP" in lines
    # dynamic nodes register themselves: no virtual NodeName lines
    assert [ln for ln in lines if ln.startswith("NodeName=")] == [
        ln for ln in lines if ln.startswith(f"NodeName={HOST} ")
    ]


@pytest.mark.parametrize("membership,state", [("static", "UNKNOWN"), ("cloud", "CLOUD")])
def test_slurm_conf_static_and_cloud_membership(sandbox, tmp_root, membership, state):
    site = copy.deepcopy(ROLES["virtual-static"]["site"])
    site["slurm"]["membership"] = membership
    box = sandbox("controller", site=site)
    text = box.render_template("slurm/files/slurm.conf.jinja", tmp_root / f"{membership}.conf")
    lines = _conf_lines(text)
    for name, last in (("vnode002", "102"), ("vnode003", "103")):
        assert (
            f"NodeName={name} NodeAddr=10.77.0.{last} CPUs=2 RealMemory=2048 "
            f"Feature=virtual,htc State={state}"
        ) in lines
    assert "NodeSet=ns_htc Feature=htc" in lines


def test_controller_restarts_when_the_declared_node_set_changes(sandbox):
    """slurm.conf changes are reconfigured; node-set changes restart slurmctld.

    Slurm 22.05 cannot add or remove NodeName lines on reconfigure, so the
    declared node set (bare metal, plus static virtual nodes from the
    registry) is a file the service watches; a static node shows up in it.
    """
    dynamic = sandbox("controller").call("state.show_sls", "slurm.controller")
    svc = dynamic["slurm-controller-service-running"]["service"]
    assert {"watch": [{"file": "slurm-controller-node-set-managed"}, {"file": "slurm-controller-hooks-managed"},
                      {"file": "slurm-controller-accounting-managed"}]} in svc
    assert dynamic["slurm-controller-reconfigured"]["cmd"][0]["name"].endswith("scontrol reconfigure")
    node_set = dynamic["slurm-controller-node-set-managed"]["file"]
    bare = next(a["contents"] for a in node_set if isinstance(a, dict) and "contents" in a)
    assert "vnode900" not in bare

    static = sandbox("controller", site={
        "slurm": {"membership": "static"},
        "vcluster_nodes": {"vnode900": {"address": "10.77.0.250", "cpus": 1, "memory": 512,
                                        "features": ["virtual"]}},
    }).call("state.show_sls", "slurm.controller")
    node_set = static["slurm-controller-node-set-managed"]["file"]
    contents = next(a["contents"] for a in node_set if isinstance(a, dict) and "contents" in a)
    assert "vnode900" in contents.split()


def test_missing_site_pillar_fails_clearly(sandbox):
    box = sandbox("controller", site={"slurm": {"controller": {"host": None, "address": None}}})
    rendered = box.call("state.show_sls", "slurm.config")
    assert "test" in rendered["slurm-config-file-managed"]
    assert "slurm:controller:host" in rendered["slurm-config-file-managed"]["test"][0]["comment"]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not os.path.exists("/usr/sbin/slurmctld"), reason="slurmctld not installed")
def test_rendered_slurm_conf_starts_slurmctld(sandbox, tmp_root, request):
    """The real slurmctld 22.05 accepts the rendered file (empty NodeSets too).

    Sandboxed: loopback only, own ports, state and logs under the sandbox,
    and a munged of its own (slurmctld needs munge to finish starting; the
    host's munged may be stopped by then, and is never touched).
    """
    work = tmp_root / "slurmctld"
    (work / "state").mkdir(parents=True)
    munged = PrivateMunged(str(tmp_root / "munge")).start()
    request.addfinalizer(munged.stop)
    site = {
        "slurm": {
            "controller": {"host": HOST, "address": "127.0.0.1"},
            "nodes": {HOST: {"address": "127.0.0.1", "cpus": 1, "memory": 100}},
            "config": {
                "SlurmUser": "root",
                "AuthInfo": f"socket={munged.socket}",
                "SlurmctldPort": _free_port(),
                "SlurmdPort": _free_port(),
                "StateSaveLocation": str(work / "state"),
                "SlurmdSpoolDir": str(work / "spool"),
                "SlurmctldPidFile": str(work / "slurmctld.pid"),
                "SlurmdPidFile": str(work / "slurmd.pid"),
                "SlurmctldLogFile": str(work / "slurmctld.log"),
                "SlurmdLogFile": str(work / "slurmd.log"),
            },
        }
    }
    box = sandbox("controller", site=site)
    conf = work / "slurm.conf"
    box.render_template("slurm/files/slurm.conf.jinja", conf)

    proc = subprocess.Popen(
        ["/usr/sbin/slurmctld", "-D", "-v", "-f", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    seen = []
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not sel.select(timeout=deadline - time.monotonic()):
                break
            line = proc.stdout.readline()
            if not line:  # exited
                break
            seen.append(line.rstrip())
            if "Running as primary controller" in line:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = "\n".join(seen)
    assert "Running as primary controller" in output, output
    assert "fatal" not in output.lower(), output


# ------------------------------------------------------------------- munge


def test_munge_key_written_but_never_shown(sandbox, tmp_root):
    """Real run into the sandbox: the key lands decoded, 0400, and the
    return (changes, comments) holds checksums only."""
    if subprocess.run(["dpkg-query", "-W", "munge"], capture_output=True, check=False).returncode:
        pytest.skip("munge package not installed (the run must not install it)")
    key_file = tmp_root / "munge.key"
    box = sandbox(
        "baremetal",
        site={"munge": {"lookup": {"key_file": str(key_file), "user": "root", "group": "root"}}},
    )
    result = _by_id(box.call("state.sls_id", "munge-key-file-managed", "munge"))
    assert result["munge-key-file-managed"]["result"] is True, box.last_output
    assert key_file.read_bytes() == MUNGE_KEY_RAW
    assert oct(key_file.stat().st_mode & 0o777) == "0o400"
    changes = result["munge-key-file-managed"]["changes"]
    assert changes["new"] == hashlib.sha256(MUNGE_KEY_RAW).hexdigest()
    for secret in (MUNGE_KEY_B64, MUNGE_KEY_RAW.hex()):
        assert secret not in box.last_output
    # second run: nothing to do
    again = _by_id(box.call("state.sls_id", "munge-key-file-managed", "munge"))
    assert again["munge-key-file-managed"]["changes"] == {}


def test_munge_key_reaches_listed_ids_only(sandbox):
    # A minion that claims the compute role through its grains but whose id
    # is not in nodegroup vcluster_cluster gets Slurm settings, not the key.
    rogue = sandbox("baremetal", minion_id="rogue01")
    pillar = rogue.call("pillar.items", "unmask=True")
    assert "key" not in pillar.get("munge", {})
    assert pillar["slurm"]["controller"]["address"] == CTL_ADDRESS
    result = _by_id(rogue.call("state.sls", "munge", "test=True"))
    assert result["munge-key-file-managed"]["result"] is False

    member = sandbox("baremetal")
    assert member.call("pillar.items", "unmask=True")["munge"]["key"] == MUNGE_KEY_B64

    # The master's own minion gets the policy and the site, not the key.
    master = sandbox("baremetal", minion_id=f"{HOST}_master", grains={"roles": []})
    pillar = master.call("pillar.items", "unmask=True")
    assert "vcluster" in pillar
    assert pillar["slurm"]["controller"]["host"] == HOST
    assert "key" not in pillar.get("munge", {})

    # Without the site's secrets file nothing breaks in pillar; the state
    # names what is missing.
    nokey = sandbox("baremetal", secrets=False)
    rendered = nokey.call("state.show_sls", "munge")
    assert "munge:key is missing" in rendered["munge-key-file-managed"]["test"][0]["comment"]


# ------------------------------------------------------------------ chrony


def test_chrony_container_branches(sandbox, tmp_root):
    # virtual node in an LXD container: the client does nothing
    rendered = sandbox("virtual-dynamic").call("state.show_sls", "chrony.client")
    assert list(rendered) == ["chrony-client-skipped"]

    # bare-metal client follows the controller
    box = sandbox("baremetal")
    rendered = box.call("state.show_sls", "chrony.client")
    assert "chrony-client-service-running" in rendered

    # controller in a container: chronyd -x, plus the systemd drop-in that
    # lifts ConditionCapability=CAP_SYS_TIME when systemd runs
    ctl = sandbox("controller", grains={"virtual": "container", "virtual_subtype": "LXC", "init": "systemd"})
    rendered = ctl.call("state.show_sls", "chrony.server")
    opts = [a for a in rendered["chrony-server-options-file-managed"]["file"] if "contents" in a]
    assert 'DAEMON_OPTS="-x"' in opts[0]["contents"]
    assert "chrony-server-systemd-dropin-managed" in rendered
    ctx = [a for a in rendered["chrony-server-config-file-managed"]["file"] if "context" in a]
    assert ctx[0]["context"]["mode"] == "noclock"

    # controller on bare metal: Debian's options, clock disciplined
    rendered = sandbox("controller").call("state.show_sls", "chrony.server")
    opts = [a for a in rendered["chrony-server-options-file-managed"]["file"] if "contents" in a]
    assert 'DAEMON_OPTS="-F 1"' in opts[0]["contents"]
    assert "chrony-server-systemd-dropin-managed" not in rendered


def test_chrony_config_files(sandbox, tmp_root):
    # The template reads role/mode from its context; render it as file.managed does.
    box = sandbox("controller")
    dest = tmp_root / "chrony-server.conf"
    box.call(
        "cp.get_template",
        "salt://chrony/files/chrony.conf.jinja",
        str(dest),
        "tplroot=chrony",
        "role=server",
        "mode=noclock",
    )
    lines = _conf_lines(dest.read_text())
    assert "allow 10.77.0.0/24" in lines
    assert "local stratum 10" in lines
    assert "makestep 1 3" not in lines

    box = sandbox("baremetal")
    dest = tmp_root / "chrony-client.conf"
    box.call(
        "cp.get_template",
        "salt://chrony/files/chrony.conf.jinja",
        str(dest),
        "tplroot=chrony",
        "role=client",
        "mode=normal",
    )
    lines = _conf_lines(dest.read_text())
    assert f"server {CTL_ADDRESS} iburst" in lines
    assert "makestep 1 3" in lines
    assert not any(ln.startswith("allow") for ln in lines)


# --------------------------------------------------------------------- nfs


def test_nfs_disabled_on_local_stack(sandbox):
    rendered = sandbox("baremetal").call("state.show_sls", "nfs.client")
    assert list(rendered) == ["nfs-client-disabled"]


def test_nfs_enabled_renders_and_dry_runs(sandbox, tmp_root):
    enabled = {"nfs": {"enabled": True}}
    server = sandbox("controller", site=enabled)
    rendered = server.call("state.show_sls", "nfs.server")
    assert "nfs-server-export-/srv/vcluster/shared-directory" in rendered
    assert "nfs-server-exports-reloaded" in rendered
    exports = server.render_template("nfs/files/exports.jinja", tmp_root / "exports")
    assert (
        "/srv/vcluster/shared 10.77.0.0/24(rw,sync,no_subtree_check,no_root_squash)"
        in _conf_lines(exports)
    )

    client = sandbox("baremetal", site=enabled)
    rendered = client.call("state.show_sls", "nfs.client")
    mount = rendered["nfs-client-mount-/shared-mounted"]["mount"]
    assert {"device": f"{CTL_ADDRESS}:/srv/vcluster/shared"} in mount
    assert {"fstype": "nfs"} in mount

    # No NFS in this kernel: dry runs only, and they must not touch the host.
    before = _fingerprint(WATCHED_FILES)
    for box, sls in ((server, "nfs.server"), (client, "nfs.client")):
        result = _by_id(box.call("state.sls", sls, "test=True"))
        failed = {i: r["comment"] for i, r in result.items() if r["result"] is False}
        assert not failed, failed
    assert _fingerprint(WATCHED_FILES) == before


def test_preemption_needs_the_events_engine_on_the_controller(sandbox):
    site = {"vcluster": {"preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"]}}}
    box = sandbox("controller", site=site)

    def check():
        sls = box.call("state.show_sls", "slurm.events")
        args = sls["slurm-events-engine-configured"]["test"]
        fun = next(a for a in args if isinstance(a, str))
        return fun, " ".join(a.get("comment", "") for a in args if isinstance(a, dict))

    fun, comment = check()
    assert fun == "fail_without_changes"
    assert "does not run the vcluster_slurm_events engine on /var/spool/vcluster-slurm/events" in comment
    (box.conf / "minion.d").mkdir(exist_ok=True)
    (box.conf / "minion.d" / "engines.conf").write_text(
        "engines:\n  - vcluster_slurm_events:\n      spool: /var/spool/vcluster-slurm/events\n")
    fun, comment = check()
    assert fun == "succeed_without_changes" and "engine sends /var/spool/vcluster-slurm/events" in comment
    # the engine named without options follows its default spool, the state's default too
    (box.conf / "minion.d" / "engines.conf").write_text("engines:\n  - vcluster_slurm_events:\n")
    fun, comment = check()
    assert fun == "succeed_without_changes" and "engine sends /var/spool/vcluster-slurm/events" in comment
