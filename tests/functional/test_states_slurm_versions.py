"""The state tree follows the Slurm release (slurm.release in salt/slurm/map.jinja).

Rendered with ``salt-call --local`` sandboxes (tests/functional/test_states_render.py)
on this host, whose Slurm is Debian 12's 22.05.8: the release is read from
the installed commands; 24.11 and the others are pinned with pillar
``slurm:version`` (the documented way to render for a release that is not
installed). The real 24.11 runs of these states are in
tests/integration/test_trixie_image.py.

- what is read, and from where: the installed commands, else the package,
  else a failure naming the pillar key; an unsupported release fails with
  one sentence and nothing is written;
- salt/slurm/releases.yaml is vcluster's RELEASES (tests/unit/test_state_releases.py);
- 22.05: the state data and the files the states write are the same as
  before the states followed the release (the tree at BASE), for every role
  and for cloud membership and site mode;
- 24.11: no ``cloud_reg_addrs``; a virtual node's slurmd gets
  ``--instance-id``/``--instance-type``; a configless slurmd's start is bounded.
"""

import copy
import json
import os
import pathlib
import subprocess

import pytest

from tests.functional.test_cloud_render import CLOUD
from tests.functional.test_cloud_render import _site as _cloud_site
from tests.functional.test_states_render import (  # noqa: F401
    HOST,
    REPO,
    ROLES,
    Sandbox,
    _by_id,
    _conf_lines,
    _merge,
    sandbox,
    tmp_root,
)

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="salt-call --local sandboxes need root")]

#: The state tree before it followed the Slurm release. A later change to
#: salt/ that is meant to change what 22.05 gets moves this to its commit.
BASE = "e93aa996dceccd1c9474660946374d232a9d8b19"

PROBE = ('{%- set tpldir = "slurm" %}{%- from "slurm/map.jinja" import slurm with context %}'
         '{{ slurm.release | json }}')

INSTANCE = {"instance_id": "vcluster-vnode001", "instance_type": "1cpu-1024mb"}


def _release(box):
    return json.loads(box.call("slsutil.renderer", f"string={PROBE}", "default_renderer=jinja"))


def _pin(version):
    return {"slurm": {"version": version}}


def _host_series():
    out = subprocess.run(["/usr/sbin/slurmctld", "-V"], capture_output=True, text=True, check=False).stdout
    return ".".join(out.split()[-1].split(".")[:2]) if out else None


# ---------------------------------------------------------------- what is read


def test_release_read_from_the_installed_slurmctld(sandbox):
    if _host_series() is None:
        pytest.skip("no /usr/sbin/slurmctld on this host")
    rel = _release(sandbox("controller"))
    assert rel["source"] == "/usr/sbin/slurmctld -V"
    assert rel["series"] == _host_series() and rel["version"].startswith(rel["series"] + ".")
    assert rel["error"] is None


def test_pillar_pins_the_release(sandbox):
    rel = _release(sandbox("controller", site=_pin("24.11")))
    assert (rel["series"], rel["version"], rel["source"]) == ("24.11", "24.11", "pillar slurm:version")
    assert rel["cloud_reg_addrs"] is False and rel["instance_fields"] is True and rel["slurmd_notify"] is True


def test_without_commands_the_package_tells(sandbox):
    """No command at the lookup paths (a host before pkg.installed): the package's version."""
    site = {"slurm": {"lookup": {"version_commands": [["/nonexistent/slurmctld", "-V"]]}}}
    rel = _release(sandbox("controller", site=site))
    if _host_series() is None:
        pytest.skip("no Slurm package on this host")
    assert rel["source"] == "package slurmctld", rel
    assert rel["series"] == _host_series() and rel["error"] is None


def test_nothing_found_fails_naming_the_pillar_key(sandbox):
    site = {"slurm": {"lookup": {"version_commands": [["/nonexistent/slurmd", "-V"]],
                                 "version_packages": ["vcluster-no-such-package"]}}}
    box = sandbox("baremetal", site=site)
    assert "set pillar slurm:version" in _release(box)["error"]
    comment = _fail_comment(box, "slurm.compute", "slurm-config-file-managed")
    assert comment.startswith("cannot tell this host's Slurm release: none of /nonexistent/slurmd is installed"), comment
    assert comment.endswith("set pillar slurm:version (docs/slurm-versions.md); slurm.conf not written"), comment


@pytest.mark.parametrize("role", ["controller", "virtual-dynamic"])
def test_unsupported_release_fails_in_one_sentence(sandbox, role):
    box = sandbox(role, site=_pin("21.08.8"))
    want = ("Slurm 21.08.8 (pillar slurm:version) is not supported: vcluster supports 22.05, 23.02, 23.11, "
            "24.05, 24.11, 25.05 and 25.11 (see docs/slurm-versions.md)")
    key = "slurm-config-file-managed" if role == "controller" else "slurm-compute-options-file-managed"
    comment = _fail_comment(box, "slurm.compute", key)
    assert comment.startswith(want + "; "), comment


# ---------------------------------------------------------------- 22.05 unchanged


def _rendered(box, tmp, sls):
    """The state data of ``sls`` and the text of each file the states write from templates or contents."""
    data = box.call("state.show_sls", ",".join(sls))
    assert isinstance(data, dict), data
    files = {}
    if "slurm-config-file-managed" in data and any(
            "file" == k for k in data["slurm-config-file-managed"]):
        files["slurm.conf"] = box.render_template("slurm/files/slurm.conf.jinja", tmp / "slurm.conf")
    for state in data.values():
        state.pop("__sls__", None)
        state.pop("order", None)
        state.pop("__env__", None)
    # the sandbox's own paths (the minion's config_dir) differ between the two runs
    data = json.loads(json.dumps(data).replace(str(box.root), "<sandbox>"))
    return data, files


def _fail_comment(box, sls, state_id):
    """The comment of a ``test.fail_without_changes`` state as rendered (a dry run replaces it)."""
    rendered = box.call("state.show_sls", sls)
    assert isinstance(rendered, dict), rendered
    (args,) = [a for a in rendered[state_id]["test"] if "comment" in a]
    assert "fail_without_changes" in rendered[state_id]["test"], rendered[state_id]
    return args["comment"]


CASES = {
    "controller": ("controller", {}, {}),
    "baremetal": ("baremetal", {}, {}),
    "virtual-dynamic": ("virtual-dynamic", {"vcluster": INSTANCE}, {}),
    "virtual-static": ("virtual-static", {}, {"vcluster_self": INSTANCE}),
    "cloud-controller": ("controller", {}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_22_05_renders_as_before(sandbox, tmp_root, case):
    """The tree at BASE and this one render the same state data and files on 22.05.

    The instance fields are in the node's pillar/grains: 22.05 has none, so
    they must change nothing.
    """
    if _host_series() != "22.05":
        pytest.skip("the host's Slurm is not 22.05")
    role, grains, site = CASES[case]
    if site is None:
        site = _cloud_site(vcluster_cloud=CLOUD)
    base_root = tmp_root / f"base-{case}"
    base_root.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASE, "salt"], capture_output=True, check=False)
    if archive.returncode != 0:
        pytest.skip(f"no commit {BASE} in this checkout (shallow clone?)")
    subprocess.run(["tar", "-x", "-C", str(base_root)], input=archive.stdout, check=True)
    spec = ROLES[role]
    out = []
    for name, state_root in (("base", base_root / "salt"), ("now", REPO / "salt")):
        box = Sandbox(tmp_root / f"{case}-{name}", spec["id"], _merge(spec["grains"], grains),
                      _merge(spec["site"], site))
        conf = yaml_load(box.conf / "minion")
        conf["file_roots"] = {"base": [str(state_root)]}
        (box.conf / "minion").write_text(json.dumps(conf))
        out.append(_rendered(box, tmp_root / f"{case}-{name}", spec["sls"]))
    (base_data, base_files), (now_data, now_files) = out
    assert now_files == base_files
    assert set(now_data) == set(base_data)
    for state_id in base_data:
        assert now_data[state_id] == base_data[state_id], state_id


def yaml_load(path):
    import yaml  # noqa: PLC0415 - only here

    return yaml.safe_load(pathlib.Path(path).read_text())


# ---------------------------------------------------------------- 24.11


def _options(box):
    rendered = box.call("state.show_sls", "slurm.compute")
    (args,) = [a for a in rendered["slurm-compute-options-file-managed"]["file"] if "contents" in a]
    (line,) = [ln for ln in args["contents"].splitlines() if ln.startswith("SLURMD_OPTIONS=")]
    return line, rendered


def test_24_11_cloud_slurm_conf_has_no_cloud_reg_addrs(sandbox, tmp_root):
    site = _merge(_cloud_site(vcluster_cloud=CLOUD), _pin("24.11"))
    box = sandbox("controller", site=site)
    lines = _conf_lines(box.render_template("slurm/files/slurm.conf.jinja", tmp_root / "cloud-24.conf"))
    assert "SlurmctldParameters=enable_configless,idle_on_node_suspend" in lines, lines
    assert "NodeName=vnode[001-016] CPUs=1 RealMemory=1024 Feature=virtual,htc State=CLOUD" in lines
    # 23.02 still needs it
    box = sandbox("controller", site=_merge(_cloud_site(vcluster_cloud=CLOUD), _pin("23.02")))
    lines = _conf_lines(box.render_template("slurm/files/slurm.conf.jinja", tmp_root / "cloud-23.conf"))
    assert "SlurmctldParameters=enable_configless,cloud_reg_addrs,idle_on_node_suspend" in lines, lines


def test_24_11_site_mode_does_not_ask_for_cloud_reg_addrs(sandbox, tmp_root):
    site_conf = tmp_root / "site-24.conf"
    site_conf.write_text(
        f"SlurmctldHost={HOST}\nSlurmctldParameters=enable_configless,idle_on_node_suspend\n"
        "CommunicationParameters=NoAddrCache\nPrivateData=cloud\nSlurmdTimeout=0\nMaxNodeCount=64\n"
        "TreeWidth=65533\nInclude vcluster.conf\n")
    site = _merge(_cloud_site(vcluster_cloud=CLOUD),
                  {"slurm": {"manage": "include", "version": "24.11",
                             "lookup": {"config_file": str(site_conf), "config_dir": str(tmp_root)}}})
    rendered = sandbox("controller", site=site).call("state.show_sls", "slurm.config")
    assert "file" in rendered["slurm-config-file-managed"], rendered["slurm-config-file-managed"]
    # 22.05 asks for it
    site["slurm"]["version"] = "22.05"
    comment = _fail_comment(sandbox("controller", site=site), "slurm.config", "slurm-config-file-managed")
    assert "SlurmctldParameters with cloud_reg_addrs (cloud nodes)" in comment, comment


def test_24_11_virtual_node_slurmd_gets_its_instance(sandbox):
    box = sandbox("virtual-dynamic", grains={"vcluster": INSTANCE}, site=_pin("24.11"))
    line, rendered = _options(box)
    assert line == (
        "SLURMD_OPTIONS=\"-Z --conf-server 10.77.0.1 --conf 'CPUs=1 RealMemory=1024 Feature=virtual,htc' "
        "-N vnode001 --instance-id vcluster-vnode001 --instance-type 1cpu-1024mb\"")
    # pillar vcluster_self wins per field; static nodes get them too
    box = sandbox("virtual-static", site=_merge(_pin("24.11"), {"vcluster_self": INSTANCE}))
    line, _ = _options(box)
    assert line == 'SLURMD_OPTIONS="-N vnode002 --instance-id vcluster-vnode001 --instance-type 1cpu-1024mb"'
    # none known: no flags
    line, _ = _options(sandbox("virtual-dynamic", site=_pin("24.11")))
    assert "--instance" not in line
    # bare metal never
    line, _ = _options(sandbox("baremetal", grains={"vcluster": {}}, site=_pin("24.11")))
    assert line == 'SLURMD_OPTIONS=""'


def test_invalid_instance_id_writes_nothing(sandbox):
    box = sandbox("virtual-dynamic", grains={"vcluster": {"instance_id": "a b'c"}}, site=_pin("24.11"))
    comment = _fail_comment(box, "slurm.compute", "slurm-compute-options-file-managed")
    assert comment.startswith("virtual node vnode001: invalid instance_id a b'c (expected"), comment


def test_24_11_configless_start_is_bounded(sandbox):
    box = sandbox("virtual-dynamic", site=_merge(_pin("24.11"), {"slurm": {"slurmd_start_timeout": 7}}))
    _, rendered = _options(box)
    dropin = rendered["slurm-compute-systemd-start-timeout-managed"]["file"]
    (contents,) = [a["contents"] for a in dropin if "contents" in a]
    assert "[Service]\nTimeoutStartSec=7\n" in contents
    assert {"file": "slurm-compute-systemd-start-timeout-managed"} in [
        r for a in rendered["slurm-compute-systemd-reloaded"]["cmd"] if "onchanges" in a for r in a["onchanges"]]
    (onfail,) = [a["onfail"] for a in rendered["slurm-compute-service-diagnosed"]["cmd"] if "onfail" in a]
    assert onfail == [{"service": "slurm-compute-service-running"}]
    # a dry run has nothing to report from it
    result = _by_id(box.call("state.highstate", "test=True"))
    assert not {i: r["comment"] for i, r in result.items() if r["result"] is False}
    # bare metal reads its slurm.conf and is not held back: no drop-in
    rendered = sandbox("baremetal", grains={"init": "systemd"}, site=_pin("24.11")).call(
        "state.show_sls", "slurm.compute")
    assert "slurm-compute-systemd-start-timeout-managed" not in rendered
    assert "slurm-compute-service-diagnosed" not in rendered


def test_22_05_pinned_gets_nothing_new(sandbox):
    box = sandbox("virtual-dynamic", grains={"vcluster": INSTANCE}, site=_pin("22.05"))
    line, rendered = _options(box)
    assert "--instance" not in line
    assert "slurm-compute-systemd-start-timeout-managed" not in rendered
    assert "slurm-compute-service-diagnosed" not in rendered


def test_releases_differ_only_where_the_table_says(sandbox, tmp_root):
    """Every supported release renders; the node options differ exactly by instance_fields."""
    table = copy.deepcopy(yaml_load(REPO / "salt/slurm/releases.yaml")["releases"])
    for series, row in table.items():
        line, _ = _options(sandbox("virtual-dynamic", grains={"vcluster": INSTANCE}, site=_pin(series)))
        assert ("--instance-id vcluster-vnode001" in line) is row["instance_fields"], series
