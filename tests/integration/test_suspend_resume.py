"""Suspend, resume, liveness and preemption end to end: real master, reactor, Slurm, LXD.

One stack for the module, with scenario policy (``site_extra``): a short
liveness timeout and preemption of ``htc`` virtual nodes by ``batch`` jobs
on the host (the bare-metal Slurm node, which is also the LXD server).

Proof that a job was neither requeued nor restarted: it ends ``COMPLETED``
with one record in ``sacct -D`` (the stack's slurmdbd keeps every job; a
requeue, whatever its cause, starts a second record),
and its counter file, one line per second of running time, holds 1..N with
no gap and no repeat.
"""

import json
import os
import pathlib
import socket
import subprocess
import time

import pytest

from tests.integration.stack import (
    ClusterStack,
    assert_not_requeued,
    job_states,
    node_info,
    sbatch,
    slurm,
    wait_jobs,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.own_stack]

LIVENESS_TIMEOUT = 5  # seconds (pillar vcluster:liveness:timeout)
SCHEDULE = 10  # vcluster.liveness.SCHEDULE_TICK
HOST = socket.gethostname()  # Slurm's bare-metal node, the LXD server and the controller


@pytest.fixture(scope="module")
def vstack(host_slurm_lock, salt_factories, lxd_network, lxd_image, tmp_path_factory):
    extra = {
        "vcluster": {
            "liveness": {"timeout": LIVENESS_TIMEOUT},
            "preemption": {"enabled": True, "partitions": ["batch"], "preemptible": ["htc"], "mode": "suspend"},
            # reconcile only when a test asks for it
            "reconcile": {"interval": 0},
        }
    }
    cluster = ClusterStack(salt_factories, lxd_network, tmp_path_factory.mktemp("sstack"), site_extra=extra)
    cluster.start()
    try:
        cluster.highstate_controller()
        yield cluster
    finally:
        for name in lxd_names():
            subprocess.run(["lxc", "delete", "--force", name], capture_output=True, check=False)
        cluster.stop()


def lxd_names(prefix="tnode"):
    out = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True, text=True, check=True)
    return sorted(n for n in out.stdout.split() if n.startswith(prefix))


def lxd_status(name):
    out = subprocess.run(["lxc", "list", name, "--format", "json"], capture_output=True, text=True, check=True)
    data = [d for d in json.loads(out.stdout) if d["name"] == name]
    return data[0]["status"] if data else None


def show_job(job_id):
    out = slurm("scontrol", "show", "-o", "job", str(job_id))
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def counter_script(seconds, path="/tmp/counter.$SLURM_JOB_ID"):
    return f"for i in $(seq 1 {seconds}); do echo $i >> {path}; sleep 1; done"


def counter_lines(node, job_id):
    out = subprocess.run(["lxc", "exec", node, "--", "cat", f"/tmp/counter.{job_id}"],
                         capture_output=True, text=True, check=True)
    return [int(x) for x in out.stdout.split()]


def counter_lines_so_far(node, job_id):
    """The counter's lines written so far (none while the file does not exist yet)."""
    out = subprocess.run(["lxc", "exec", node, "--", "cat", f"/tmp/counter.{job_id}"],
                         capture_output=True, text=True, check=False)
    return out.stdout.split() if out.returncode == 0 else []


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def nodes(vstack):
    ret = vstack.run("vcluster.expand", "count=2", "profile=htc")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    return sorted(ret.data["nodes"])


def test_slurm_runs_without_its_own_liveness(vstack):
    out = slurm("scontrol", "show", "config")
    assert any(line.split() == ["SlurmdTimeout", "=", "0", "sec"] for line in out.splitlines()), \
        [line for line in out.splitlines() if "SlurmdTimeout" in line]


def test_bad_input_is_refused_with_one_sentence(vstack, nodes):
    for args, words in [
        (("nodes=tnode[01-",), "nodes must be a Slurm hostlist"),
        (("nodes=nosuch9",), "'nosuch9' is not in the registry"),
        ((f"nodes={nodes[0]}", "mode=hibernate"), "mode must be one of freeze, pause, save, shelve, suspend"),
    ]:
        ret = vstack.run("vcluster.suspend", *args)
        assert ret.returncode != 0 and ret.data["result"] is False
        assert words in ret.data["comment"], ret.data
    ret = vstack.run("vcluster.migrate", f"node={nodes[0]}", "host=elsewhere")
    assert ret.returncode != 0 and "CRIU" in ret.data["comment"], ret.data
    assert vstack.run("vcluster.status").data["nodes"][nodes[0]]["state"] == "ready"


def test_job_survives_long_suspension_and_nothing_lands_on_the_node(vstack, nodes):
    node = nodes[0]
    # the counter runs a few seconds before the freeze and the rest after the resume
    seconds = 15
    job = sbatch("-p", "htc", "-w", node, script=counter_script(seconds))
    wait_jobs([job], states=("RUNNING",), timeout=60)
    wait_until(lambda: len(counter_lines_so_far(node, job)) >= 2, 30, f"job {job} counting before the freeze")

    ret = vstack.run("vcluster.suspend", f"nodes={node}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    suspended_at = time.monotonic()
    assert lxd_status(node) == "Frozen"
    assert wait_jobs([job], states=("SUSPENDED",), timeout=30) == {job: "SUSPENDED"}
    info = node_info(node)
    assert "DRAIN" in info["State"] and "DOWN" not in info["State"], info["State"]
    assert vstack.run("vcluster.status").data["nodes"][node]["state"] == "suspended"

    # (b) nothing new lands on the frozen node; other work still runs elsewhere
    pinned = sbatch("-p", "htc", "-w", node, script="hostname")
    elsewhere = sbatch("-p", "htc", script="hostname")
    wait_jobs([elsewhere], timeout=90)
    assert show_job(elsewhere)["NodeList"] == nodes[1]
    # liveness runs (scheduled, and once by hand) and leaves the frozen node alone
    ret = vstack.run("vcluster.liveness")
    assert ret.data["result"] is True and node not in ret.data["down"], ret.data

    # longer than 3x the liveness timeout plus schedule: Slurm and vcluster both keep the node.
    # This length is the point: it is also longer than the 30 s (plus a 10 s
    # interval) after which Salt's ZMTP heartbeats would drop the frozen
    # minion (vcluster.masterconf turns them off; resume after a long freeze)
    while time.monotonic() - suspended_at < 3 * (LIVENESS_TIMEOUT + SCHEDULE):
        assert job_states([pinned]) == {pinned: "PENDING"}
        info = node_info(node)
        assert "DOWN" not in info["State"] and "NOT_RESPONDING" not in info["State"], info
        time.sleep(2)

    ret = vstack.run("vcluster.resume", f"nodes={node}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    assert lxd_status(node) == "Running"
    final = wait_jobs([job, pinned], timeout=120)
    assert final == {job: "COMPLETED", pinned: "COMPLETED"}
    assert_not_requeued([job])
    assert counter_lines(node, job) == list(range(1, seconds + 1))
    info = node_info(node)
    assert "DRAIN" not in info["State"], info
    assert vstack.run("vcluster.status").data["nodes"][node]["state"] == "ready"


def test_node_killed_behind_vclusters_back_is_set_down(vstack, nodes):
    node = nodes[1]
    subprocess.run(["lxc", "stop", "--force", node], check=True)
    killed = time.monotonic()
    info = wait_until(lambda: (i := node_info(node)) and "DOWN" in i["State"] and i, SCHEDULE + LIVENESS_TIMEOUT + 30,
                      f"{node} DOWN")
    assert info["Reason"].startswith("vcluster"), info
    print(f"{node} DOWN {time.monotonic() - killed:.1f} s after lxc stop --force")
    ret = vstack.run("vcluster.retire", f"nodes={node}", "wait=30")
    assert ret.data["result"] is True, ret.data
    assert node_info(node) is None


def test_preemption_freezes_and_resumes_colocated_node(vstack, nodes):
    node = nodes[0]
    seconds = 15
    low = sbatch("-p", "htc", "-w", node, script=counter_script(seconds))
    wait_jobs([low], states=("RUNNING",), timeout=60)
    wait_until(lambda: len(counter_lines_so_far(node, low)) >= 2, 30, f"job {low} counting before the preemption")
    high = sbatch("-p", "batch", "-w", HOST, script="sleep 12")
    wait_jobs([high], states=("RUNNING",), timeout=60)
    started = time.monotonic()
    wait_until(lambda: lxd_status(node) == "Frozen", 30, f"{node} frozen by preemption")
    print(f"frozen {time.monotonic() - started:.1f} s after the high-priority job was seen running")
    assert wait_jobs([low], states=("SUSPENDED",), timeout=30) == {low: "SUSPENDED"}
    status = vstack.run("vcluster.status").data["nodes"][node]
    assert status["state"] == "suspended" and status["reason"] == f"preempted by job {high}", status

    wait_jobs([high], timeout=60)
    ended = time.monotonic()
    wait_until(lambda: vstack.run("vcluster.status").data["nodes"][node]["state"] == "ready", 60,
               f"{node} resumed after job {high}")
    print(f"resumed {time.monotonic() - ended:.1f} s after the high-priority job was seen completed")
    assert lxd_status(node) == "Running"
    assert wait_jobs([low], timeout=120) == {low: "COMPLETED"}
    assert_not_requeued([low])
    assert counter_lines(node, low) == list(range(1, seconds + 1))

    ret = vstack.run("vcluster.retire", f"nodes={node}")
    assert ret.data["result"] is True, ret.data
    assert lxd_names() == []


def test_reconcile_resumes_victims_when_the_preemptors_end_was_missed(vstack):
    """The controller's minion is down when the preempting job ends: no end event; reconcile resumes."""
    ret = vstack.run("vcluster.expand", "count=1", "profile=htc")
    assert ret.returncode == 0 and ret.data["result"] is True, ret.stdout
    [node] = ret.data["nodes"]
    seconds = 15
    low = sbatch("-p", "htc", "-w", node, script=counter_script(seconds))
    wait_jobs([low], states=("RUNNING",), timeout=60)
    high = sbatch("-p", "batch", "-w", HOST, script="sleep 300")
    wait_jobs([high], states=("RUNNING",), timeout=60)
    wait_until(lambda: vstack.run("vcluster.status").data["nodes"][node]["state"] == "suspended", 60,
               f"{node} suspended by job {high}")
    jobs_before = {low, high}

    vstack.minion.terminate()
    try:
        slurm("scancel", str(high))  # its EpilogSlurmctld line is written, nobody sends it
        wait_jobs([high], states=("CANCELLED",), timeout=60)
    finally:
        vstack.minion.start(start_timeout=120)
    wait_until(lambda: vstack.master.salt_cli(timeout=10).run("test.ping", minion_tgt=vstack.controller_id).data
               is True, 60, "the controller's minion answering again")
    status = vstack.run("vcluster.status").data["nodes"][node]
    assert status["state"] == "suspended" and status["reason"] == f"preempted by job {high}", status
    assert lxd_status(node) == "Frozen"

    report = vstack.run("vcluster.reconcile").data
    assert [(f["job"], f["nodes"]) for f in report["report"]["preemption_over"]] == [(str(high), [node])], report
    fixed = vstack.run("vcluster.reconcile", "apply=True").data
    assert [r["kind"] for r in fixed["repairs"]] == ["preemption_over"], fixed
    assert fixed["result"] is True, fixed
    assert lxd_status(node) == "Running"
    assert vstack.run("vcluster.status").data["nodes"][node]["state"] == "ready"
    assert wait_jobs([low], timeout=120) == {low: "COMPLETED"}
    assert_not_requeued([low])
    assert counter_lines(node, low) == list(range(1, seconds + 1))
    assert set(job_states(sorted(jobs_before))) == jobs_before  # neither job lost

    ret = vstack.run("vcluster.retire", f"nodes={node}")
    assert ret.data["result"] is True, ret.data


@pytest.mark.skipif(not os.environ.get("VCLUSTER_BENCH_OUT"), reason="run by bench/preempt.py")
def test_preemption_latency_sample(vstack, nodes):
    """bench/preempt.py: high RUNNING -> VM Frozen, high ended -> VM Running, polled every 0.1 s."""
    node = nodes[0]
    freezes, resumes = [], []
    for _ in range(int(os.environ.get("VCLUSTER_BENCH_REPEAT", "3"))):
        low = sbatch("-p", "htc", "-w", node, script=counter_script(60))
        wait_jobs([low], states=("RUNNING",), timeout=60)
        high = sbatch("-p", "batch", "-w", HOST, script="sleep 5")
        t_run = t_frozen = t_end = t_thawed = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = time.monotonic()
            state = slurm("squeue", "-h", "-j", high, "-o", "%T", check=False).strip()
            frozen = lxd_status(node) == "Frozen"
            if t_run is None and state in ("RUNNING", "COMPLETING", ""):
                t_run = now
            if t_run is not None and t_frozen is None and frozen:
                t_frozen = now
            if t_run is not None and t_end is None and state in ("COMPLETING", "COMPLETED", ""):
                t_end = now
            if t_end is not None and t_frozen is not None and not frozen:
                t_thawed = now
                break
            time.sleep(0.1)
        freezes.append(round(t_frozen - t_run, 3) if t_frozen and t_run else None)
        resumes.append(round(t_thawed - t_end, 3) if t_thawed and t_end else None)
        wait_until(lambda: vstack.run("vcluster.status").data["nodes"][node]["state"] == "ready", 60, "ready")
        slurm("scancel", low)
        wait_until(lambda low=low: job_states([low]).get(low) not in ("RUNNING", "COMPLETING", "SUSPENDED"), 60, "low gone")
    pathlib.Path(os.environ["VCLUSTER_BENCH_OUT"]).write_text(json.dumps({"freeze": freezes, "resume": resumes}))
    assert all(v is not None for v in freezes + resumes), (freezes, resumes)


@pytest.mark.skipif(not os.environ.get("VCLUSTER_BENCH_OUT"), reason="run by bench/resume_after.py")
def test_resume_time_after_freeze_sample(vstack, nodes):
    """bench/resume_after.py: ``vcluster.resume`` wall time after a freeze of each length asked for.

    A counter job runs on the node through every freeze (never requeued,
    no line lost); the lengths come from ``VCLUSTER_BENCH_FREEZES`` (seconds,
    comma-separated), shortest first.
    """
    node = nodes[0]
    lengths = [int(x) for x in os.environ.get("VCLUSTER_BENCH_FREEZES", "5,60").split(",")]
    seconds = sum(lengths) + 20 * len(lengths) + 30
    job = sbatch("-p", "htc", "-w", node, script=counter_script(seconds))
    wait_jobs([job], states=("RUNNING",), timeout=60)
    samples = []
    for length in lengths:
        ret = vstack.run("vcluster.suspend", f"nodes={node}")
        assert ret.data["result"] is True, ret.stdout
        frozen_at = time.monotonic()
        time.sleep(max(0.0, length - (time.monotonic() - frozen_at)))  # the freeze being measured
        start = time.monotonic()
        ret = vstack.run("vcluster.resume", f"nodes={node}")
        resumed = time.monotonic() - start
        assert ret.data["result"] is True, ret.stdout
        wait_until(lambda: job_states([job]).get(job) == "RUNNING", 60, f"job {job} running again")
        samples.append({"frozen_seconds": round(start - frozen_at, 1), "resume_seconds": round(resumed, 3),
                        "job_running_seconds": round(time.monotonic() - start, 3)})
        print(f"frozen {start - frozen_at:.0f} s: vcluster.resume took {resumed:.2f} s")
    assert wait_jobs([job], timeout=seconds + 60) == {job: "COMPLETED"}
    assert_not_requeued([job])
    assert counter_lines(node, job) == list(range(1, seconds + 1))
    pathlib.Path(os.environ["VCLUSTER_BENCH_OUT"]).write_text(json.dumps(samples))
