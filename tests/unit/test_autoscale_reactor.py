"""reactor/slurm_power.sls and slurm_job.sls render to one runner call carrying the sender's authenticated id."""

import copy
import pathlib

import salt.config
import salt.utils.templates
import yaml

from vcluster.masterconf import REACTORS

REACTORS_DIR = pathlib.Path(__file__).resolve().parents[2] / "reactor"
REACTOR = REACTORS_DIR / "slurm_power.sls"


def render(tag, data, reactor=REACTOR):
    opts = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
    out = salt.utils.templates.JINJA(str(reactor), to_str=True, tag=tag, data=data, opts=opts, saltenv="base",
                                     sls="", grains={}, pillar={})
    assert out["result"], out
    return yaml.safe_load(out["data"])


def test_registered_for_power_events():
    assert REACTORS["vcluster/slurm/power/*"] == "slurm_power.sls"


def test_resume_event_becomes_one_runner_call():
    data = {"id": "ctl", "tag": "vcluster/slurm/power/resume", "cmd": "_minion_event",
            "data": {"nodes": "cn[01-02]", "resume_file": {"jobs": [{"job_id": 4, "nodes": "cn[01-02]"}]}}}
    rendered = render("vcluster/slurm/power/resume", data)
    (sid, body), = rendered.items()
    args = {k: v for item in body["runner.vcluster.on_slurm_power"][0]["args"] for k, v in item.items()}
    assert args == {"action": "resume", "nodes": "cn[01-02]", "sender": "ctl",
                    "resume_file": {"jobs": [{"job_id": 4, "nodes": "cn[01-02]"}]}}


def test_hostile_payload_stays_data():
    data = {"id": "evil", "data": {"nodes": "x\"\n  - evil: 1", "resume_file": None}}
    rendered = render("vcluster/slurm/power/suspend", data)
    args = {k: v for item in rendered["vcluster-slurm-power"]["runner.vcluster.on_slurm_power"][0]["args"]
            for k, v in item.items()}
    assert args["nodes"] == "x\"\n  - evil: 1" and args["sender"] == "evil" and args["resume_file"] is None
    assert set(args) == {"action", "nodes", "sender", "resume_file"}
    # no payload at all
    rendered = render("vcluster/slurm/power/resume_fail", {"id": "ctl"})
    args = {k: v for item in rendered["vcluster-slurm-power"]["runner.vcluster.on_slurm_power"][0]["args"]
            for k, v in item.items()}
    assert args == {"action": "resume_fail", "nodes": "", "sender": "ctl", "resume_file": None}


def test_job_event_of_the_engine_becomes_one_runner_call():
    assert REACTORS["vcluster/slurm/job"] == "slurm_job.sls"
    line = "vcluster-slurm-event v1 start job=42 partition=batch nodes=host1"
    data = {"id": "ctl", "tag": "vcluster/slurm/job", "cmd": "_minion_event", "data": {"raw": line}}
    rendered = render("vcluster/slurm/job", data, REACTORS_DIR / "slurm_job.sls")
    args = {k: v for item in rendered["vcluster-slurm-job"]["runner.vcluster.on_slurm_event"][0]["args"]
            for k, v in item.items()}
    assert args == {"minion_id": "ctl", "line": line}
    hostile = {"id": "evil", "data": {"raw": "x\"\n  - evil: 1"}}
    rendered = render("vcluster/slurm/job", hostile, REACTORS_DIR / "slurm_job.sls")
    args = {k: v for item in rendered["vcluster-slurm-job"]["runner.vcluster.on_slurm_event"][0]["args"]
            for k, v in item.items()}
    assert args == {"minion_id": "evil", "line": "x\"\n  - evil: 1"}
