"""Slurm's throughput with vcluster's hooks against the same cluster without them.

One stack for the module with every feature that installs a hook: preemption
(jobs of ``batch`` preempt; the preemptible profile ``vic`` is never
expanded, so the events go all the way to the runner, which finds no victim
and suspends nothing) and power saving (a cloud profile ``burst`` on
partition ``cloud``). Two ``htc`` virtual nodes (LXD, 1 CPU each) are
expanded once.

``test_hooks_are_installed_and_events_arrive`` checks the configuration the
states wrote and that a ``batch`` job's start and end reach the master.
``test_throughput_sample`` (run by bench/throughput.py) measures arrays of
``sleep 1`` tasks on ``batch`` (the host, bare metal) and on ``htc`` (the
virtual nodes), with the hooks as the states wrote them and with the hook
lines taken out of slurm.conf (slurmctld restarted each time: 22.05 loads
the prep and jobcomp plugins at start only), modes taking turns.
"""

import json
import os
import pathlib
import subprocess
import time

import pytest
import salt.utils.event

from tests.integration.stack import ClusterStack, sbatch, slurm, wait_jobs

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.own_stack]

HOOK_KEYS = ("PrologSlurmctld", "EpilogSlurmctld", "JobCompType", "JobCompLoc")
SLURM_CONF = pathlib.Path("/etc/slurm/slurm.conf")


@pytest.fixture(scope="module")
def tstack(host_slurm_lock, salt_factories, lxd_network, lxd_image, tmp_path_factory):
    base = lxd_network["gateway"].rsplit(".", 1)[0]
    extra = {
        "vcluster": {
            "pools": {
                "local": {"names": "tnode[01-08]", "addresses": f"{base}.100-{base}.107"},
                "spare": {"names": "tnode[09-16]", "addresses": f"{base}.108-{base}.115",
                          "gateway": lxd_network["gateway"]},
            },
            "profiles": {
                "vic": {"provider": "lxd", "pool": "local", "image": "vcluster-node", "partition": "vic",
                        "features": ["virtual", "vic"]},
                "burst": {"provider": "lxd", "pool": "spare", "image": "vcluster-node", "partition": "cloud",
                          "membership": "cloud", "features": ["virtual", "burst"], "join_timeout": 120},
            },
            "power_save": {"suspend_time": 3600, "resume_timeout": 300,
                           "exclude_partitions": ["batch", "htc"]},
            "preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["vic"]},
            "liveness": {"enabled": False},
            "reconcile": {"interval": 0},
        },
    }
    cluster = ClusterStack(salt_factories, lxd_network, tmp_path_factory.mktemp("tstack"), site_extra=extra)
    cluster.start()
    try:
        cluster.highstate_controller()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def vnodes(tstack):
    ret = tstack.run("vcluster.expand", "count=2", "profile=htc")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    return sorted(ret.data["nodes"])


def hook_lines(text):
    return {ln.split("=", 1)[0]: ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith(HOOK_KEYS)}


def restart_slurmctld(expect_idle):
    subprocess.run(["service", "slurmctld", "restart"], capture_output=True, check=True, timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "UP" in slurm("scontrol", "ping", check=False):
            states = dict(line.split() for line in slurm("sinfo", "-h", "-N", "-o", "%N %t", check=False).splitlines()
                          if len(line.split()) == 2)
            if all(states.get(n) == "idle" for n in expect_idle):
                return
        time.sleep(0.5)
    raise AssertionError(f"slurmctld restarted, but {expect_idle} not idle within 120 s")


def run_array(partition, count):
    """Seconds from submitting ``count`` tasks of ``sleep 1`` to the last one ended; all must be COMPLETED."""
    args = ["-p", partition, f"--array=1-{count}", "--mem=50"]
    started = time.monotonic()
    job = sbatch(*args, script="sleep 1")
    deadline = started + 1800
    while time.monotonic() < deadline:
        live = slurm("squeue", "-h", "-j", job, "-o", "%T", check=False).split()
        if not live:
            break
        time.sleep(0.2)
    seconds = time.monotonic() - started
    data = json.loads(slurm("squeue", "--json", "--states=all"))
    states = [j.get("job_state") for j in data.get("jobs", []) if str(j.get("array_job_id")) == job]
    assert len(states) == count and set(states) == {"COMPLETED"}, (job, states)  # no task lost
    return seconds


def test_hooks_are_installed_and_events_arrive(tstack):
    hooks = hook_lines(SLURM_CONF.read_text())
    assert hooks == {"PrologSlurmctld": "/usr/local/libexec/vcluster/slurmctld-prolog",
                     "JobCompType": "jobcomp/script",
                     "JobCompLoc": "/usr/local/libexec/vcluster/slurmctld-jobcomp"}, hooks
    opts = tstack.master.config
    seen = set()
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        job = sbatch("-p", "batch", script="sleep 1")
        assert wait_jobs([job], timeout=120) == {job: "COMPLETED"}
        deadline = time.monotonic() + 60
        while seen != {"start", "end"} and time.monotonic() < deadline:
            event = bus.get_event(wait=1, tag="vcluster/slurm/job", full=True)
            payload = ((event or {}).get("data") or {}).get("data")  # event.send's data, as the reactor reads it
            raw = payload.get("raw", "") if isinstance(payload, dict) else ""
            if f" job={job} " in raw:
                seen.add(raw.split()[2])
    assert seen == {"start", "end"}, seen


@pytest.mark.skipif(not os.environ.get("VCLUSTER_BENCH_OUT"), reason="run by bench/throughput.py")
def test_throughput_sample(tstack, vnodes):
    count = int(os.environ.get("VCLUSTER_BENCH_TASKS", "40"))
    repeat = int(os.environ.get("VCLUSTER_BENCH_REPEAT", "2"))
    host = tstack.hostname
    with_hooks = SLURM_CONF.read_text()
    assert hook_lines(with_hooks), "the states wrote no hook: nothing to compare"
    without = "\n".join(ln for ln in with_hooks.splitlines() if not ln.startswith(HOOK_KEYS)) + "\n"
    samples = {mode: {"baremetal": [], "virtual": []} for mode in ("hooks", "none")}
    try:
        for rep in range(repeat):
            for mode in (("hooks", "none") if rep % 2 == 0 else ("none", "hooks")):
                SLURM_CONF.write_text(with_hooks if mode == "hooks" else without)
                restart_slurmctld([host, *vnodes])
                samples[mode]["baremetal"].append(round(run_array("batch", count), 2))
                samples[mode]["virtual"].append(round(run_array("htc", count), 2))
    finally:
        SLURM_CONF.write_text(with_hooks)
        restart_slurmctld([host, *vnodes])
    out = {"tasks": count, "task": "sleep 1", "seconds": samples,
           "slots": {"baremetal": os.cpu_count(), "virtual": len(vnodes)}}
    pathlib.Path(os.environ["VCLUSTER_BENCH_OUT"]).write_text(json.dumps(out))
