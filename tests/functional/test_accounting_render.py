"""Slurm accounting (slurm:accounting, salt/slurm/accounting.sls) rendered by the real state tree.

``salt-call --local`` sandboxes of test_states_render: the site root holds
``accounting.sls`` (the database password) as scripts/stack.sh writes it,
given by nodegroup ``vcluster_policy`` to the controller only. Checked: the
controller's states run slurmdbd before slurmctld and register the cluster;
slurm.conf names slurmdbd on the controller; the password is never in the
rendered SLS or a state's output, and slurmdbd.conf lands 0600 (a real run
into the sandbox); a virtual node's pillar has no password; site mode
(slurm:manage include) and the default configure no slurmdbd.
"""

import json
import os
import stat

import pytest
import yaml

from tests.functional.test_site_slurm_render import _pillar, _render_include, _site_conf
from tests.functional.test_states_render import (  # noqa: F401 - fixture
    HOST,
    ROLES,
    Sandbox,
    _by_id,
    _conf_lines,
    _merge,
    tmp_root,
)

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="salt-call --local sandboxes need root")]

PASSWORD = "Fx7kQ2vLr9TzW4mNc8YpB3hJ6dGs1AeU"  # a recognisable fake, 32 letters and digits


def _box(tmp_root, name, role="controller", site=None, password=PASSWORD):
    spec = ROLES[role]
    box = Sandbox(tmp_root / name, spec["id"], spec["grains"], _merge(spec["site"], site),
                  policy_ids=f"L@{HOST}_master,{HOST}")
    if password is not None:
        (box.site_root / "accounting.sls").write_text(
            yaml.safe_dump({"slurm": {"accounting": {"storage_pass": password}}}))
    return box


ON = {"slurm": {"accounting": {"enabled": True}}}


def test_controller_runs_slurmdbd_first_and_registers_the_cluster(tmp_root):
    box = _box(tmp_root, "acct-on", site=ON)
    sls = box.call("state.show_sls", "slurm.controller")
    assert isinstance(sls, dict), sls
    assert {"slurm-accounting-config-managed", "slurm-accounting-service-running",
            "slurm-accounting-cluster-registered"} <= set(sls)
    assert PASSWORD not in json.dumps(sls)
    ctl = sls["slurm-controller-service-running"]["service"]
    requires = next(a["require"] for a in ctl if isinstance(a, dict) and "require" in a)
    assert {"cmd": "slurm-accounting-cluster-registered"} in requires
    watch = next(a["watch"] for a in ctl if isinstance(a, dict) and "watch" in a)
    assert {"file": "slurm-controller-accounting-managed"} in watch
    reg = sls["slurm-accounting-cluster-registered"]["cmd"]
    name = next(a["name"] for a in reg if isinstance(a, dict) and "name" in a)
    unless = next(a["unless"] for a in reg if isinstance(a, dict) and "unless" in a)
    assert "add cluster vcluster" in name and "grep -qx vcluster" in unless
    dbd = sls["slurm-accounting-config-managed"]["file"]
    args = {k: v for a in dbd if isinstance(a, dict) for k, v in a.items()}
    assert args["mode"] == "0600" and args["user"] == "slurm" and args["show_changes"] is False

    lines = _conf_lines(box.render_template("slurm/files/slurm.conf.jinja", tmp_root / "acct-on.conf"))
    assert "AccountingStorageType=accounting_storage/slurmdbd" in lines
    assert f"AccountingStorageHost={HOST}" in lines


def test_slurmdbd_conf_written_0600_and_never_shown(tmp_root):
    """Real run into the sandbox: the file holds the password, no output does."""
    conf = tmp_root / "slurmdbd.conf"
    box = _box(tmp_root, "acct-run", site=_merge(ON, {"slurm": {"lookup": {
        "dbd_config_file": str(conf), "user": "root", "group": "root"}}}))
    for args in (("test=True",), ()):
        result = _by_id(box.call("state.sls_id", "slurm-accounting-config-managed", "slurm.accounting", *args))
        assert result["slurm-accounting-config-managed"]["result"] in (True, None), box.last_output
        assert PASSWORD not in box.last_output
    text = conf.read_text()
    assert f"StoragePass={PASSWORD}" in text.splitlines()
    assert f"DbdHost={HOST}" in text.splitlines() and "StorageHost=localhost" in text.splitlines()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    # a local edit is reported in test mode and overwritten, still without showing the file
    conf.write_text(text + "# edited\n")
    for args in (("test=True",), ()):
        result = _by_id(box.call("state.sls_id", "slurm-accounting-config-managed", "slurm.accounting", *args))
        assert result["slurm-accounting-config-managed"]["changes"], box.last_output
        assert PASSWORD not in box.last_output
    assert "# edited" not in conf.read_text()


def test_missing_password_fails_with_one_sentence(tmp_root):
    box = _box(tmp_root, "acct-nopass", site=ON, password=None)
    sls = box.call("state.show_sls", "slurm.controller")
    comment = sls["slurm-accounting-config-managed"]["test"][0]["comment"]
    assert "slurm:accounting:storage_pass is missing" in comment


def test_virtual_node_gets_no_password(tmp_root):
    box = _box(tmp_root, "acct-virtual", role="virtual-dynamic", site=ON)
    pillar = box.call("pillar.items", "unmask=True")  # Salt 3008 masks pillar output by default
    assert PASSWORD not in json.dumps(pillar)
    assert pillar["slurm"]["accounting"]["enabled"] is True  # same slurm.conf everywhere
    assert "munge" in pillar  # the secrets it should have are there
    controller = _box(tmp_root, "acct-ctl-pillar", site=ON).call("pillar.items", "unmask=True")
    assert controller["slurm"]["accounting"]["storage_pass"] == PASSWORD


def test_default_and_site_mode_configure_no_slurmdbd(tmp_root):
    default = _box(tmp_root, "acct-default", password=None)
    sls = default.call("state.show_sls", "slurm.controller")
    assert not [i for i in sls if i.startswith("slurm-accounting")]
    lines = _conf_lines(default.render_template("slurm/files/slurm.conf.jinja", tmp_root / "acct-default.conf"))
    assert "AccountingStorageType=accounting_storage/none" in lines

    # a site with its own accounting keeps it: enabled is ignored in include mode
    site_dir = tmp_root / "acct-site-etc"
    _site_conf(site_dir, ["SlurmctldParameters=enable_configless", "SlurmdTimeout=0", "MaxNodeCount=128",
                          "TreeWidth=65533"])
    box = _box(tmp_root, "acct-site", site=_merge(_pillar(site_dir), ON))
    sls = box.call("state.show_sls", "slurm.controller")
    assert isinstance(sls, dict), sls
    assert not [i for i in sls if i.startswith("slurm-accounting")]
    text = _render_include(box, tmp_root / "acct-site-vcluster.conf")
    assert not [ln for ln in _conf_lines(text) if ln.startswith("Accounting")]
