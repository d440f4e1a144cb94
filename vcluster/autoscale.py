"""Autoscaling from pillar ``vcluster:autoscale``: bounds, idle retire, warm pool, per-job nodes.

``vcluster.autoscale`` (runner) runs :func:`run`; the master's
``vcluster_tasks`` engine (:mod:`vcluster.periodic`) calls it every
``SCHEDULE_TICK`` seconds with ``scheduled=True`` and it acts only
when ``vcluster:autoscale:enabled`` and ``interval`` seconds have passed
since the last run, so the interval is policy, not master config.

Per autoscale profile (``vcluster:autoscale:profiles:<name>``):

* dynamic / static profiles: pending jobs of the profile's partition that
  the idle nodes cannot take first thaw warm-pool nodes, then create nodes up
  to ``max_nodes``; fewer than ``min_nodes`` nodes are topped up; nodes idle
  for ``idle_time`` seconds are retired down to ``min_nodes``, or suspended
  (provider suspend, Slurm drain) while the warm pool is short of
  ``warm_pool``;
* cloud profiles: Slurm's power saving creates and removes nodes
  (:mod:`vcluster.powersave`); the warm pool keeps the nodes Slurm suspends
  as frozen instances instead of deleting them, and ``max_nodes`` caps what
  a resume may create.

Per-job nodes: a job submitted held with ``--comment=<job_flag>`` or
``--comment=<job_flag>:<profile>`` (``sbatch --hold --comment=vcluster-own
-N 2 job.sh``) gets as many new nodes of that profile (default: the first
profile with ``per_job: true``) as it asks for, a reservation on them for
the job's user, and is released into it; when the job has ended its nodes
are retired and the reservation deleted.

The decision (:func:`plan`) is a pure function of policy, registry, Slurm
and autoscale's small state (last run, when each node was first seen idle,
the per-job map), kept in the registry's SQLite file
(:mod:`vcluster.taskstate`, task ``autoscale``), so it is unit-tested
without Salt; :func:`run` carries the actions out with the engine's own
functions.
"""

import json
import logging
import os
import time

from vcluster import expand as _expand
from vcluster import retire as _retire
from vcluster import taskstate
from vcluster.arguments import flag
from vcluster.errors import VclusterError
from vcluster.nodestates import UNJOINED, WARM_REASON
from vcluster.slurm import jobctl, states

log = logging.getLogger(__name__)

#: Seconds between schedule ticks (the runner decides whether it is due).
SCHEDULE_TICK = taskstate.TICKS["autoscale"]
#: Autoscale's name in the registry's task tables.
TASK = "autoscale"
#: Pending reasons that more nodes would not cure.
NOT_FOR_NODES = ("Dependency", "JobHeldUser", "JobHeldAdmin", "BeginTime", "DependencyNeverSatisfied",
                 "PartitionDown", "PartitionInactive", "AssocGrpJobsLimit", "QOSMaxJobsPerUserLimit")


# -- the state (registry's task tables) ----------------------------------------------


def legacy_path(registry_path):
    """The side file older releases kept the state in: taken over once by :func:`load_state`, then deleted."""
    return os.fspath(registry_path) + ".autoscale.json"


def load_state(registry_path):
    """``{"last_run", "idle_since", "jobs"}`` from the registry file ``registry_path``."""
    with taskstate.TaskState(registry_path) as store:
        data = store.values(TASK)
        legacy = legacy_path(registry_path)
        if not taskstate.in_memory(store.path) and os.path.exists(legacy):
            data = _adopt(store, legacy, data)
    data.setdefault("last_run", None)
    data.setdefault("idle_since", {})
    data.setdefault("jobs", {})
    return data


def _adopt(store, legacy, data):
    """Take the state of ``<registry>.autoscale.json`` over (unless the tables hold some already); delete the file."""
    try:
        with open(legacy, encoding="utf-8") as fh:
            old = json.load(fh)
    except (OSError, ValueError) as exc:
        log.warning("autoscale: %s is unreadable (%s): not taken over", legacy, exc)
        old = None
    if not data and isinstance(old, dict):
        data = {k: old[k] for k in ("last_run", "idle_since", "jobs") if k in old}
        store.put(TASK, **data)
        log.info("autoscale: state taken over from %s into the registry", legacy)
    try:
        os.unlink(legacy)
    except OSError as exc:
        log.warning("autoscale: cannot delete %s: %s", legacy, exc)
    return data


def save_state(registry_path, data):
    """Write ``data``'s ``last_run``, ``idle_since`` and ``jobs`` in one transaction."""
    with taskstate.TaskState(registry_path) as store:
        store.put(TASK, last_run=data.get("last_run"), idle_since=data.get("idle_since") or {},
                  jobs=data.get("jobs") or {})


def due(policy, state, now):
    """``(due, why)`` for a scheduled run."""
    scale = policy.autoscale
    if not scale.enabled:
        return False, "vcluster:autoscale:enabled is false: scheduled autoscaling is off"
    return taskstate.due(state.get("last_run"), scale.interval, now, SCHEDULE_TICK, "autoscale")


# -- the decision ----------------------------------------------------------------------


def _in_partition(job, partition):
    return partition in str(job.get("partition") or "").split(",")


def _idle(slurm_node):
    words = (slurm_node or {}).get("state") or []
    if isinstance(words, str):
        words = words.split("+")
    return bool(words) and words[0] == "IDLE" and not {"DRAIN", "POWERED_DOWN", "POWERING_UP"} & set(words)


def plan(policy, nodes, slurm_nodes, jobs, state, now):
    """What to do now: ``{profile: {"expand": n, "resume": [...], "retire": [...], "warm": [...]}}``.

    ``nodes``: registry nodes; ``slurm_nodes``: ``{name: node dict}``;
    ``jobs``: job dicts (id, state, partition, nodes, reason). ``state`` is
    updated in place (``idle_since``).
    """
    busy = set()
    for job in jobs:
        if job.get("state") in states.JOB_NOT_DONE:
            busy.update(job.get("nodes") or [])
    per_job_nodes = {n for names in state.get("jobs", {}).values() for n in names}
    idle_since = state.setdefault("idle_since", {})
    seen = set()
    out = {}
    counts = {}
    for n in nodes:
        counts[n.profile] = counts.get(n.profile, 0) + 1
    total = sum(counts.values())
    for name, scale in policy.autoscale.profiles.items():
        prof = policy.profiles[name]
        mine = [n for n in nodes if n.profile == name and n.name not in per_job_nodes]
        ceiling = scale.max_nodes or prof.max_nodes or policy.limits.max_nodes
        room = max(0, min(ceiling - counts.get(name, 0), policy.limits.max_nodes - total))
        act = {"expand": 0, "resume": [], "retire": [], "warm": []}
        warm = sorted(n.name for n in mine if n.state == "suspended" and (n.reason or "") == WARM_REASON)
        if prof.membership == "cloud":
            out[name] = act  # Slurm's power saving decides; the warm pool fills on suspend
            continue
        ready = [n for n in mine if n.state == "ready"]
        coming = [n for n in mine if n.state in (*UNJOINED, "resuming")]
        idle = []
        for n in ready:
            if n.name not in busy and _idle(slurm_nodes.get(n.name)):
                idle_since.setdefault(n.name, now)
                idle.append(n.name)
            seen.add(n.name)
        pending = 0
        if prof.partition:
            pending = sum(1 for j in jobs if j.get("state") == "PENDING" and _in_partition(j, prof.partition)
                          and str(j.get("reason") or "") not in NOT_FOR_NODES)
        need = max(0, pending - len(idle) - len(coming))
        act["resume"] = warm[:need]
        need -= len(act["resume"])
        below_min = max(0, scale.min_nodes - len(ready) - len(coming) - len(act["resume"]))
        act["expand"] = min(room, max(need, below_min), policy.limits.max_per_request)
        warm_short = max(0, scale.warm_pool - (len(warm) - len(act["resume"])))
        if pending == 0:
            # idle long enough: to the warm pool while it is short, else retired, down to min_nodes
            keep = max(0, scale.min_nodes)
            expired = sorted((idle_since[n], n) for n in idle if now - idle_since[n] >= scale.idle_time)
            removable = max(0, len(ready) - keep)
            for _, n in expired[:removable]:
                if warm_short > 0:
                    act["warm"].append(n)
                    warm_short -= 1
                else:
                    act["retire"].append(n)
        if warm_short > 0 and pending == 0 and not act["expand"]:
            # fill the warm pool with new nodes (suspended as soon as they joined)
            act["expand_warm"] = min(warm_short, max(0, room - act["expand"]), policy.limits.max_per_request)
        out[name] = act
    for gone in set(idle_since) - seen:
        idle_since.pop(gone, None)
    for name in list(idle_since):
        if name in busy:
            idle_since.pop(name, None)
    return out


# -- carrying it out ----------------------------------------------------------------------


def run(ctx, scheduled=False, test=False):
    """One autoscaling pass; see the module docstring."""
    scheduled = flag(scheduled, "scheduled")
    test = flag(test, "test")
    now = time.time()
    state = load_state(ctx.policy.registry)
    if scheduled:
        ok, why = due(ctx.policy, state, now)
        if not ok:
            return {"result": True, "skipped": True, "comment": why}
    if not ctx.policy.autoscale.profiles:
        return {"result": True, "comment": "vcluster:autoscale:profiles is empty: nothing to scale", "actions": {}}
    slurm_nodes = {n["name"]: n for n in ctx.slurm.nodes()}
    jobs = ctx.slurm.jobs()
    actions = plan(ctx.policy, ctx.registry.nodes(), slurm_nodes, jobs, state, now)
    per_job = _per_job(ctx, state, jobs, test)
    if test:
        return {"result": None, "comment": "autoscale would act as listed (test=True)", "actions": actions,
                "per_job": per_job}
    done, errors = {}, []
    from vcluster import suspend_resume as _suspend

    for name, act in actions.items():
        steps = []
        try:
            if act["resume"]:
                ret = _suspend.resume(ctx, ",".join(act["resume"]))
                steps.append(ret["comment"])
            if act["expand"]:
                ret = _expand.expand(ctx, name, act["expand"])
                steps.append(ret["comment"])
            if act.get("expand_warm"):
                ret = _expand.expand(ctx, name, act["expand_warm"])
                fresh = [n for n, v in ret.get("nodes", {}).items() if v.get("state") == "ready"]
                act["warm"] = list(act["warm"]) + fresh
                steps.append(ret["comment"])
            if act["warm"]:
                ret = _suspend.suspend(ctx, ",".join(act["warm"]), reason=WARM_REASON)
                steps.append(ret["comment"])
                for n in act["warm"]:
                    state["idle_since"].pop(n, None)
            if act["retire"]:
                ret = _retire.retire(ctx, ",".join(act["retire"]), wait=60)
                steps.append(ret["comment"])
                for n in act["retire"]:
                    state["idle_since"].pop(n, None)
        except VclusterError as exc:
            errors.append(f"{name}: {exc}")
            steps.append(f"failed: {exc}")
        done[name] = steps
    job_steps = _serve_jobs(ctx, state, per_job, errors)
    state["last_run"] = now
    save_state(ctx.policy.registry, state)
    comment = "; ".join(f"{p}: {', '.join(s)}" for p, s in done.items() if s) or "nothing to do"
    if errors:
        comment += "; errors: " + "; ".join(errors)
    return {"result": not errors, "comment": comment, "actions": actions, "per_job": job_steps}


# -- per-job nodes ---------------------------------------------------------------------------


def flagged_jobs(jobs, flag, per_job_profiles):
    """Held pending jobs whose comment is ``flag`` or ``flag:<profile>``: ``[{id, user, count, profile}]``.

    ``jobs`` are the job dicts of ``slurm.jobs`` (the controller's
    version-aware parser: ``state``, ``comment``, ``node_count``, ``user``,
    ``reason``). A job naming a profile without ``per_job: true`` is listed
    with ``error`` set (and left held).
    """
    out = []
    default = per_job_profiles[0] if per_job_profiles else None
    for job in jobs:
        comment = str(job.get("comment") or "").strip()
        if job.get("state") != "PENDING" or not (comment == flag or comment.startswith(flag + ":")):
            continue
        profile = comment.split(":", 1)[1] if ":" in comment else default
        item = {"id": str(job.get("id")), "user": job.get("user"), "count": max(1, int(job.get("node_count") or 1)),
                "profile": profile, "held": str(job.get("reason")) in ("JobHeldUser", "JobHeldAdmin")}
        if profile not in per_job_profiles:
            item["error"] = (f"job {item['id']} asks for per-job nodes of profile {profile!r}, "
                             f"which has no per_job: true in vcluster:autoscale:profiles")
        out.append(item)
    return out


def _per_job(ctx, state, jobs, test):  # noqa: ARG001 - same signature for run()
    """Flagged jobs still to serve, and served jobs that ended (from the one job listing of this run)."""
    scale = ctx.policy.autoscale
    profiles = sorted(n for n, p in scale.profiles.items() if p.per_job)
    live = {str(j["id"]) for j in jobs if j.get("state") in states.JOB_NOT_DONE}
    ended = sorted(j for j in state.get("jobs", {}) if j not in live)
    if not profiles:
        return {"serve": [], "ended": ended}
    serve = [j for j in flagged_jobs(jobs, scale.job_flag, profiles) if j["id"] not in state.get("jobs", {})]
    return {"serve": serve, "ended": ended}


def _serve_jobs(ctx, state, per_job, errors):
    steps = {}
    for job in per_job.get("serve", []):
        if job.get("error"):
            steps[job["id"]] = job["error"]
            continue
        if not job["held"]:
            steps[job["id"]] = "not held: submit per-job jobs with --hold"
            continue
        ret = _expand.expand(ctx, job["profile"], job["count"])
        names = sorted(n for n, v in ret.get("nodes", {}).items() if v.get("state") == "ready")
        if len(names) < job["count"]:
            if names:
                _retire.retire(ctx, ",".join(names), force=True, wait=30)
            errors.append(f"job {job['id']}: {ret['comment']}")
            steps[job["id"]] = f"failed: {ret['comment']}"
            continue
        try:
            # one controller call: a reservation vcjob<id> on the nodes, the job moved into it and released
            ctx.slurm.reserve_for_job(job["id"], names, job["user"])
        except VclusterError as exc:
            errors.append(f"job {job['id']}: {exc}")
        state.setdefault("jobs", {})[job["id"]] = names
        steps[job["id"]] = f"own nodes {','.join(names)}"
    for job_id in per_job.get("ended", []):
        names = state["jobs"].get(job_id) or []
        held = [n for n in names if ctx.registry.get(n) is not None]
        if held:
            ret = _retire.retire(ctx, ",".join(held), force=True, wait=60)
            if not ret["result"]:
                errors.append(f"job {job_id}: {ret['comment']}")
                steps[job_id] = ret["comment"]
                continue
        try:
            ctx.slurm.delete_reservation(jobctl.job_reservation(job_id))
        except VclusterError:
            pass
        state["jobs"].pop(job_id, None)
        steps[job_id] = f"ended; retired {','.join(names) or 'nothing'}"
    return steps

