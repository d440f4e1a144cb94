"""Site mode (slurm:manage include): a site's own slurm.conf, vcluster's part in the file it Includes.

Rendered by the real state tree (``salt-call --local`` sandboxes of
test_states_render) against a site slurm.conf the test writes, with
``slurm:lookup:config_file`` pointing at it. The chaining PrologSlurmctld and
jobcomp/script program are rendered by the states and run for real as shell
scripts with the environment slurmctld gives them, in front of site hooks
that exit 0 and 1.
"""

import copy
import json
import os
import pathlib
import subprocess

import pytest

from tests.functional.test_cloud_render import CLOUD
from tests.functional.test_states_render import HOST, _conf_lines, sandbox, tmp_root  # noqa: F401

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="salt-call --local sandboxes need root")]

PREEMPTION = {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"]}
VCLUSTER_PROLOG = "/usr/local/libexec/vcluster/slurmctld-prolog"
VCLUSTER_JOBCOMP = "/usr/local/libexec/vcluster/slurmctld-jobcomp"

#: What a site's slurm.conf for a dynamic cluster must hold for vcluster.
REQUIRED = [
    "SlurmctldParameters=enable_configless",
    "SlurmdTimeout=0",
    "MaxNodeCount=128",
    "TreeWidth=65533",
]
CLOUD_REQUIRED = [
    "SlurmctldParameters=enable_configless,cloud_reg_addrs,idle_on_node_suspend",
    "CommunicationParameters=NoAddrCache",
    "PrivateData=cloud",
    "SlurmdTimeout=0",
]


def _site_conf(directory, lines, include="vcluster.conf", after=()):
    """Write a site's slurm.conf: its own settings, the Include, then ``after``."""
    directory.mkdir(parents=True, exist_ok=True)
    body = [
        "# the site's own slurm.conf",
        "ClusterName=site",
        f"SlurmctldHost={HOST}",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "ProctrackType=proctrack/cgroup",
        "TaskPlugin=task/cgroup,task/affinity",
        "StateSaveLocation=/srv/slurm/state",
        *lines,
        "NodeName=site[01-04] CPUs=8 Feature=baremetal",
        "PartitionName=site Nodes=site[01-04] Default=YES",
    ]
    if include:
        body.append(f"Include {include}")
    body.extend(after)
    path = directory / "slurm.conf"
    path.write_text("\n".join(body) + "\n")
    return path


def _pillar(directory, membership="dynamic", **extra):
    site = {"slurm": {"manage": "include", "membership": membership,
                      "lookup": {"config_dir": str(directory), "config_file": str(directory / "slurm.conf")},
                      "nodes": {}}}
    for key, val in extra.items():
        if key == "slurm":
            site["slurm"].update(val)
        else:
            site[key] = val
    return site


def _state(sls, sid):
    """(function, {arg: value}) of one state of a show_sls result."""
    body = sls[sid]
    fun = next(k for k in body if not k.startswith("__"))
    args = {}
    for item in body[fun]:
        if isinstance(item, dict):
            args.update(item)
        elif isinstance(item, str):
            fun = f"{fun}.{item}"
    return fun, args


def _render_include(box, dest):
    result = box.call("cp.get_template", "salt://slurm/files/slurm.conf.jinja", str(dest), "tplroot=slurm",
                      "site_mode=True")
    assert result, box.last_output
    return pathlib.Path(dest).read_text()


@pytest.mark.parametrize("membership", ["dynamic", "static", "cloud"])
def test_include_file_holds_only_vcluster_part(sandbox, tmp_root, membership):  # noqa: F811
    d = tmp_root / f"site-{membership}"
    extra = {}
    if membership == "static":
        extra["vcluster_nodes"] = {"vnode002": {"address": "10.77.0.102", "cpus": 2, "memory": 2048,
                                                "features": ["virtual", "htc"]}}
    lines = REQUIRED if membership != "cloud" else CLOUD_REQUIRED
    if membership == "cloud":
        extra["vcluster_cloud"] = CLOUD
    site_conf = _site_conf(d, lines)
    before = site_conf.read_bytes()
    box = sandbox("controller", site=_pillar(d, membership, **extra))

    sls = box.call("state.show_sls", "slurm.config")
    fun, args = _state(sls, "slurm-config-file-managed")
    assert fun == "file.managed", sls
    assert args["name"] == str(d / "vcluster.conf")
    assert args["context"]["site_mode"] is True

    text = _render_include(box, tmp_root / f"include-{membership}.conf")
    got = _conf_lines(text)
    keys = {ln.split("=", 1)[0] for ln in got}
    # none of the site's settings, no controller line
    assert not keys & {"SlurmctldHost", "ClusterName", "AccountingStorageType", "ProctrackType", "TaskPlugin",
                       "SlurmdTimeout", "MaxNodeCount", "TreeWidth", "SlurmctldParameters",
                       "CommunicationParameters", "PrivateData", "StateSaveLocation", "JobCompType"}, got
    assert "NodeSet=ns_batch Feature=baremetal" in got
    assert "NodeSet=ns_htc Feature=htc" in got
    assert any(ln.startswith("PartitionName=batch Nodes=ns_batch ") for ln in got), got
    # the sandbox's site pillar declares the host as a bare-metal node of vcluster's
    node_lines = [ln for ln in got if ln.startswith("NodeName=") and not ln.startswith(f"NodeName={HOST} ")]
    if membership == "dynamic":
        assert node_lines == []
        assert keys <= {"NodeSet", "PartitionName", "NodeName"}, got
    elif membership == "static":
        assert node_lines == ["NodeName=vnode002 NodeAddr=10.77.0.102 CPUs=2 RealMemory=2048 "
                              "Feature=virtual,htc State=UNKNOWN"]
        assert keys <= {"NodeSet", "PartitionName", "NodeName"}, got
    else:
        assert "NodeName=vnode[001-016] CPUs=1 RealMemory=1024 Feature=virtual,htc State=CLOUD" in node_lines
        for want in ("ResumeProgram=/usr/local/libexec/vcluster/slurm-resume", "SuspendTime=120",
                     "SuspendExcParts=batch", "PrologSlurmctld=" + VCLUSTER_PROLOG):
            assert want in got, want
        assert any(ln.startswith("PartitionName=cloud Nodes=burst[1-4] ") for ln in got), got
    # the site's file is only read
    assert site_conf.read_bytes() == before
    # the controller's own paths come from the site's file
    ctl = box.call("state.show_sls", "slurm.controller")
    assert _state(ctl, "slurm-controller-node-set-managed")[1]["name"] == "/srv/slurm/state/vcluster-declared-nodes"


@pytest.mark.parametrize("drop,word", [
    ("SlurmdTimeout=0", "SlurmdTimeout=0"),
    ("TreeWidth=65533", "TreeWidth=65533"),
    ("MaxNodeCount=128", "MaxNodeCount"),
    ("SlurmctldParameters=enable_configless", "enable_configless"),
])
def test_missing_required_setting_fails_in_one_sentence(sandbox, tmp_root, drop, word):  # noqa: F811
    d = tmp_root / f"missing-{word.split('=')[0]}"
    _site_conf(d, [ln for ln in REQUIRED if ln != drop])
    box = sandbox("controller", site=_pillar(d))
    fun, args = _state(box.call("state.show_sls", "slurm.config"), "slurm-config-file-managed")
    assert fun == "test.fail_without_changes"
    comment = args["comment"]
    assert word in comment and "lacks what vcluster needs" in comment, comment
    assert comment.count(". ") == 0 and "\n" not in comment, comment
    # the other required settings are present, so only this one is named
    for other in ("SlurmdTimeout", "TreeWidth", "MaxNodeCount", "enable_configless"):
        if other not in word:
            assert other not in comment, comment


def test_cloud_needs_its_words_in_the_sites_own_file(sandbox, tmp_root):  # noqa: F811
    d = tmp_root / "cloud-missing"
    _site_conf(d, ["SlurmctldParameters=enable_configless", "SlurmdTimeout=0"])
    box = sandbox("controller", site=_pillar(d, "cloud", vcluster_cloud=CLOUD))
    fun, args = _state(box.call("state.show_sls", "slurm.config"), "slurm-config-file-managed")
    assert fun == "test.fail_without_changes"
    for word in ("cloud_reg_addrs", "idle_on_node_suspend", "NoAddrCache", "PrivateData=cloud"):
        assert word in args["comment"], args["comment"]


@pytest.mark.parametrize("case", ["no-include", "absolute-include", "key-after-include", "cloud-key-in-site",
                                  "no-site-file", "bad-manage"])
def test_site_file_that_cannot_be_used_fails_in_one_sentence(sandbox, tmp_root, case):  # noqa: F811
    d = tmp_root / f"bad-{case}"
    extra, expect = {}, None
    if case == "no-include":
        _site_conf(d, REQUIRED, include=None)
        expect = "has no `Include vcluster.conf` line"
    elif case == "absolute-include":
        _site_conf(d, REQUIRED, include=str(d / "vcluster.conf"))
        expect = "without the directory"
    elif case == "key-after-include":
        _site_conf(d, REQUIRED, after=["PrologSlurmctld=/etc/slurm/site-prolog"])
        extra["vcluster"] = {"preemption": PREEMPTION}
        expect = "after its Include vcluster.conf"
    elif case == "cloud-key-in-site":
        _site_conf(d, CLOUD_REQUIRED + ["SuspendTime=600"])
        extra["vcluster_cloud"] = CLOUD
        expect = "sets SuspendTime on line"
    elif case == "no-site-file":
        d.mkdir(parents=True, exist_ok=True)
        expect = "is missing (the site's own formula writes it)"
    else:
        _site_conf(d, REQUIRED)
        extra["slurm"] = {"manage": "partly"}
        expect = "pillar slurm:manage is partly, expected full or include"
    membership = "cloud" if case == "cloud-key-in-site" else "dynamic"
    box = sandbox("controller", site=_pillar(d, membership, **extra))
    fun, args = _state(box.call("state.show_sls", "slurm.config"), "slurm-config-file-managed")
    assert fun == "test.fail_without_changes"
    assert expect in args["comment"], args["comment"]
    assert "\n" not in args["comment"]


def test_full_mode_is_still_the_default(sandbox, tmp_root):  # noqa: F811
    box = sandbox("controller")
    fun, args = _state(box.call("state.show_sls", "slurm.config"), "slurm-config-file-managed")
    assert fun == "file.managed"
    assert args["name"] == "/etc/slurm/slurm.conf"
    assert "site_mode" not in args["context"]


def test_other_jobcomp_plugin_with_preemption_fails(sandbox, tmp_root):  # noqa: F811
    d = tmp_root / "jobcomp-es"
    _site_conf(d, REQUIRED + ["JobCompType=jobcomp/elasticsearch"])
    box = sandbox("controller", site=_pillar(d, vcluster={"preemption": PREEMPTION}))
    fun, args = _state(box.call("state.show_sls", "slurm.config"), "slurm-config-file-managed")
    assert fun == "test.fail_without_changes"
    assert "JobCompType=jobcomp/elasticsearch" in args["comment"], args["comment"]


# -- the chaining hooks, run for real ---------------------------------------


@pytest.fixture(scope="module")
def chained(sandbox, tmp_root):  # noqa: F811
    """vcluster's PrologSlurmctld and jobcomp program rendered in site mode, chaining to the site's."""
    d = tmp_root / "chain"
    site_prolog, site_jobcomp = d / "site-prolog", d / "site-jobcomp"
    _site_conf(d, REQUIRED + [f"PrologSlurmctld={site_prolog}", "JobCompType=jobcomp/script",
                              f"JobCompLoc={site_jobcomp}"])
    box = sandbox("controller", site=_pillar(d, vcluster={"preemption": PREEMPTION}))
    text = _conf_lines(_render_include(box, d / "vcluster.conf"))
    assert f"PrologSlurmctld={VCLUSTER_PROLOG}" in text
    assert "JobCompType=jobcomp/script" in text and f"JobCompLoc={VCLUSTER_JOBCOMP}" in text
    sls = box.call("state.show_sls", "slurm.controller")
    out = {"dir": d, "spool": d / "events", "site_prolog": site_prolog, "site_jobcomp": site_jobcomp}
    for sid, kind in (("slurm-events-prolog-managed", "prolog"), ("slurm-events-jobcomp-managed", "jobcomp")):
        ctx = _state(sls, sid)[1]["context"]
        assert ctx["chain"] == str(site_prolog if kind == "prolog" else site_jobcomp), ctx
        dest = d / f"vcluster-{kind}"
        kwargs = [f"{k}={json.dumps(v)}" for k, v in ctx.items()]
        assert box.call("cp.get_template", "salt://slurm/files/slurmctld-event.sh.jinja", str(dest),
                        "tplroot=slurm", *kwargs), box.last_output
        dest.write_text(dest.read_text().replace(ctx["spool"], str(out["spool"])))
        dest.chmod(0o755)
        out[kind] = dest
    return out


def _site_hook(path, status, log):
    """A site hook that records what it saw and exits ``status``."""
    path.write_text(f"#!/bin/sh\necho \"$(basename $0) job=${{SLURM_JOB_ID:-$JOBID}} args=$*\" >> {log}\n"
                    f"exit {status}\n")
    path.chmod(0o755)


def _run(script, env):
    full = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([str(script)], env=full, capture_output=True, text=True, timeout=60, check=False)


def _spool(chained):
    spool = chained["spool"]
    return spool.read_text().splitlines() if spool.exists() else []


@pytest.mark.parametrize("status", [0, 1])
def test_chained_prolog_keeps_the_site_prologs_exit_status(chained, status):
    log = chained["dir"] / f"site-log-{status}"
    _site_hook(chained["site_prolog"], status, log)
    job = str(700 + status)
    before = _spool(chained)
    # the environment slurmctld gives PrologSlurmctld (22.05, prep/script)
    env = {"SLURM_JOB_ID": job, "SLURM_JOB_PARTITION": "batch", "SLURM_JOB_NODELIST": "node01",
           "SLURM_JOB_USER": "alice", "SLURM_JOB_UID": "1000", "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld"}
    proc = _run(chained["prolog"], env)
    assert proc.returncode == status, proc
    assert log.read_text() == f"site-prolog job={job} args=\n"  # the site's prolog ran, with the job's environment
    new = _spool(chained)[len(before):]
    if status == 0:
        assert new == [f"vcluster-slurm-event v1 start job={job} partition=batch nodes=node01"]
    else:
        # the job does not start: vcluster reports nothing, Slurm requeues or fails it
        assert new == []


@pytest.mark.parametrize("status", [0, 1])
def test_chained_jobcomp_runs_the_sites_and_always_reports_the_end(chained, status):
    log = chained["dir"] / f"site-jobcomp-log-{status}"
    _site_hook(chained["site_jobcomp"], status, log)
    job = str(800 + status)
    before = _spool(chained)
    # the environment jobcomp/script gives its program
    env = {"JOBID": job, "PARTITION": "batch", "NODES": "node01", "JOBSTATE": "COMPLETED", "UID": "1000"}
    proc = _run(chained["jobcomp"], env)
    assert proc.returncode == status, proc
    assert log.read_text() == f"site-jobcomp job={job} args=\n"
    assert _spool(chained)[len(before):] == [f"vcluster-slurm-event v1 end job={job} partition=batch nodes=node01"]


def test_no_chain_when_vcluster_needs_no_hook(sandbox, tmp_root):  # noqa: F811
    """Without preemption or cloud profiles the include file names no hook: the site's runs alone."""
    d = tmp_root / "nohook"
    _site_conf(d, REQUIRED + [f"PrologSlurmctld={d}/site-prolog"])
    box = sandbox("controller", site=_pillar(d))
    got = _conf_lines(_render_include(box, d / "vcluster.conf"))
    assert not [ln for ln in got if ln.startswith(("PrologSlurmctld", "JobComp", "EpilogSlurmctld"))], got
    sls = box.call("state.show_sls", "slurm.controller")
    assert "slurm-events-prolog-managed" not in sls
    assert _state(sls, "slurm-config-file-managed")[0] == "file.managed"


def test_pillar_names_the_site_prolog_when_the_file_does_not(sandbox, tmp_root):  # noqa: F811
    d = tmp_root / "pillar-chain"
    _site_conf(d, REQUIRED)
    box = sandbox("controller", site=_pillar(d, slurm={"site": {"prolog": "/opt/site/prolog"}},
                                             vcluster={"preemption": copy.deepcopy(PREEMPTION)}))
    ctx = _state(box.call("state.show_sls", "slurm.controller"), "slurm-events-prolog-managed")[1]["context"]
    assert ctx["chain"] == "/opt/site/prolog"


@pytest.mark.parametrize("role", ["controller", "baremetal"])
def test_site_mode_dry_run_writes_only_the_include_file(sandbox, tmp_root, role):  # noqa: F811
    """Every SLS of the role renders in site mode; test=True reports the include file and changes nothing."""
    d = tmp_root / f"dry-{role}"
    site_conf = _site_conf(d, REQUIRED + [f"PrologSlurmctld={d}/site-prolog"])
    before = site_conf.read_bytes()
    box = sandbox(role, site=_pillar(d, vcluster={"preemption": PREEMPTION}))
    result = box.call("state.sls", "slurm.controller,slurm.compute" if role == "controller" else "slurm.compute",
                      "test=True")
    assert isinstance(result, dict), result
    by_id = {key.split("_|-")[1]: val for key, val in result.items()}
    # the events engine is minion configuration the sandbox lacks; everything else must pass
    failed = {i: r["comment"] for i, r in by_id.items() if r["result"] is False and i != "slurm-events-engine-configured"}
    assert not failed, failed
    conf = by_id["slurm-config-file-managed"]
    assert conf["name"] == str(d / "vcluster.conf") and conf["result"] is None, conf
    assert site_conf.read_bytes() == before
    assert not (d / "vcluster.conf").exists()
