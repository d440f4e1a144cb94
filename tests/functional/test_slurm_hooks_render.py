"""vcluster's hooks in slurm.conf: only while a feature needs them, never EpilogSlurmctld.

Rendered by the real state tree (``salt-call --local`` sandboxes of
test_states_render). With an EpilogSlurmctld, Slurm 22.05 starts the next
jobs only at its periodic passes (test_slurm_hooks_slurm.py shows it on a
real slurmctld); so job ends come from jobcomp/script, and no hook at all
is written for a cluster without preemption and cloud profiles.
"""

import copy
import os

import pytest

from tests.functional.test_cloud_render import CLOUD
from tests.functional.test_states_render import _conf_lines, sandbox, tmp_root  # noqa: F401

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="salt-call --local sandboxes need root")]

PREEMPTION = {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"]}
PROLOG = "/usr/local/libexec/vcluster/slurmctld-prolog"
JOBCOMP = "/usr/local/libexec/vcluster/slurmctld-jobcomp"
HOOK_KEYS = ("PrologSlurmctld", "EpilogSlurmctld", "JobCompType", "JobCompLoc")


def _site(preemption=None, cloud=None, config=None):
    site = {}
    if preemption is not None:
        site["vcluster"] = {"preemption": preemption}
    if cloud is not None:
        site["vcluster_cloud"] = cloud
    if config:
        site["slurm"] = {"config": config}
    return site


def _hooks(box, tmp_root, name):  # noqa: F811
    lines = _conf_lines(box.render_template("slurm/files/slurm.conf.jinja", tmp_root / f"{name}.conf"))
    return {ln.split("=", 1)[0]: ln.split("=", 1)[1] for ln in lines if ln.startswith(HOOK_KEYS)}


def _controller(box):
    sls = box.call("state.show_sls", "slurm.controller")
    assert isinstance(sls, dict), sls
    return sls


def _contents(sls, sid):
    return next(a["contents"] for a in sls[sid]["file"] if isinstance(a, dict) and "contents" in a)


@pytest.mark.parametrize("preemption", [None, {"enabled": False, "partitions": ["batch"]},
                                        {"enabled": True, "partitions": []}])
def test_no_hook_when_no_feature_needs_one(sandbox, tmp_root, preemption):  # noqa: F811
    box = sandbox("controller", site=_site(preemption=preemption))
    assert _hooks(box, tmp_root, "nohook") == {"JobCompType": "jobcomp/none"}
    sls = _controller(box)
    assert not any(sid.startswith("slurm-events-") and sid.endswith("-managed") for sid in sls), sorted(sls)
    assert "slurm-events-spool-file" not in sls
    assert _contents(sls, "slurm-controller-hooks-managed") == ""
    # scripts of an earlier configuration go, after slurmctld runs without them
    for kind in ("prolog", "jobcomp", "epilog"):
        absent = sls[f"slurm-controller-unused-{kind}-absent"]["file"]
        assert {"require": [{"service": "slurm-controller-service-running"},
                            {"cmd": "slurm-controller-answering"}]} in absent


def test_preemption_reports_start_by_prolog_and_end_by_jobcomp(sandbox, tmp_root):  # noqa: F811
    box = sandbox("controller", site=_site(preemption=PREEMPTION))
    hooks = _hooks(box, tmp_root, "preempt")
    assert hooks == {"PrologSlurmctld": PROLOG, "JobCompType": "jobcomp/script", "JobCompLoc": JOBCOMP}
    sls = _controller(box)
    assert {"slurm-events-prolog-managed", "slurm-events-jobcomp-managed", "slurm-events-spool-file"} <= set(sls)
    assert "slurm-controller-unused-epilog-absent" in sls
    assert "slurm-controller-unused-prolog-absent" not in sls
    assert _contents(sls, "slurm-controller-hooks-managed").splitlines() == [
        f"JobCompLoc={JOBCOMP}", "JobCompType=jobcomp/script", f"PrologSlurmctld={PROLOG}"]
    # 22.05 loads the prep and jobcomp plugins once: a hook change restarts slurmctld
    svc = sls["slurm-controller-service-running"]["service"]
    assert {"file": "slurm-controller-hooks-managed"} in next(a["watch"] for a in svc if isinstance(a, dict) and "watch" in a)
    requires = next(a["require"] for a in svc if isinstance(a, dict) and "require" in a)
    assert {"file": "slurm-events-prolog-managed"} in requires and {"file": "slurm-events-jobcomp-managed"} in requires


def test_cloud_profiles_alone_install_the_prolog_only(sandbox, tmp_root):  # noqa: F811
    site = _site(cloud=CLOUD)
    site["slurm"] = {"membership": "cloud"}
    box = sandbox("controller", site=site)
    hooks = _hooks(box, tmp_root, "cloud")
    assert hooks == {"PrologSlurmctld": PROLOG, "JobCompType": "jobcomp/none"}
    sls = _controller(box)
    assert "slurm-events-prolog-managed" in sls and "slurm-events-jobcomp-managed" not in sls
    assert "slurm-events-power-directory" in sls and "slurm-events-spool-file" not in sls


def test_epilog_slurmctld_is_never_written(sandbox, tmp_root):  # noqa: F811
    site = _site(preemption=PREEMPTION, cloud=copy.deepcopy(CLOUD))
    site["slurm"] = {"membership": "cloud"}
    box = sandbox("controller", site=site)
    assert "EpilogSlurmctld" not in _hooks(box, tmp_root, "both")


@pytest.mark.parametrize("config,word", [
    ({"JobCompType": "jobcomp/elasticsearch"}, "JobCompType is jobcomp/elasticsearch"),
    ({"JobCompType": "jobcomp/script", "JobCompLoc": "/site/jobcomp"}, "JobCompLoc is /site/jobcomp"),
    ({"PrologSlurmctld": "/site/prolog"}, "PrologSlurmctld is /site/prolog"),
])
def test_a_site_hook_in_the_way_fails_in_one_sentence(sandbox, config, word):  # noqa: F811
    box = sandbox("controller", site=_site(preemption=PREEMPTION, config=config))
    sls = box.call("state.show_sls", "slurm.config")
    args = sls["slurm-config-file-managed"]["test"]
    assert "fail_without_changes" in args
    comment = next(a["comment"] for a in args if isinstance(a, dict) and "comment" in a)
    assert word in comment and comment.endswith("slurm.conf not written"), comment


def test_a_site_hook_is_kept_when_vcluster_needs_none(sandbox, tmp_root):  # noqa: F811
    box = sandbox("controller", site=_site(config={"JobCompType": "jobcomp/filetxt", "JobCompLoc": "/var/log/jc"}))
    assert _hooks(box, tmp_root, "site") == {"JobCompType": "jobcomp/filetxt", "JobCompLoc": "/var/log/jc"}
