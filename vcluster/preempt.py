"""Preemption: a job on a hypervisor host suspends the virtual nodes on that host.

The trigger comes from Slurm, never from polling: slurmctld runs
``PrologSlurmctld`` at job start and the ``jobcomp/script`` program at job end
(as SlurmUser, without any
credential), a tiny script installed by ``salt/slurm/events.sls`` that appends
one line per job of a preempting partition to a spool file::

    vcluster-slurm-event v1 start job=42 partition=batch nodes=host[01-02]

The controller minion's ``vcluster_slurm_events`` engine (inotify) sends
each new line as the event ``vcluster/slurm/job``; the reactor hands it to
``vcluster.on_slurm_event``, which calls :func:`on_event`.

The line is only a trigger: the job, its partition and its nodes are read
back from Slurm through the controller minion before anything is suspended,
and events from any minion but the controller are ignored, so a forged line
or event can at worst cause a check.

Policy (pillar ``vcluster:preemption``): ``partitions`` whose jobs preempt,
``preemptible`` partitions (a virtual node is preemptible when its profile's
partition is listed), ``mode`` (freeze | pause | save | suspend), ``migrate`` (when the host
is still busy at job end, move the node to a free host and resume it there,
where the provider can), ``hypervisors`` (Slurm node name -> provider host
name; a Slurm node not listed is a host of the same name, as with LXD on the
controller itself).
"""

import logging
import re

import hostlist

from vcluster import suspend_resume
from vcluster.errors import PolicyError, VclusterError
from vcluster.nodestates import PREEMPTED_PREFIX

log = logging.getLogger(__name__)

LINE = re.compile(r"^vcluster-slurm-event v1 (start|end)((?: [a-z_]+=\S*)*)\s*$")
#: States in which a preempting job still holds its hosts. COMPLETING does
#: not: the end event is written as the job completes.
HOLDING = ("RUNNING", "CONFIGURING", "SUSPENDED")


def parse_line(line):
    """``(kind, {key: value})`` of an event line; :class:`PolicyError` when it is not one."""
    if not isinstance(line, str):
        raise PolicyError(f"line must be a vcluster Slurm event line, got {line!r}")
    match = LINE.match(line.strip())
    if not match:
        raise PolicyError(f"line must be a vcluster Slurm event line, got {line[:120]!r}")
    fields = dict(item.split("=", 1) for item in match.group(2).split())
    job = fields.get("job", "")
    if not job.isdigit():
        raise PolicyError(f"job must be a Slurm job id, got {job!r}")
    return match.group(1), fields


def host_of(policy, slurm_node):
    """The provider host behind a Slurm node name."""
    return policy.preemption.hypervisors.get(slurm_node, slurm_node)


def _preemptible(ctx, node):
    prof = ctx.policy.profiles.get(node.profile)
    return prof is not None and prof.partition in ctx.policy.preemption.preemptible


def slurm_nodes_of(policy, hosts):
    """The Slurm node names of the provider ``hosts`` (reverse of :func:`host_of`)."""
    mapped = policy.preemption.hypervisors
    out = set()
    for host in hosts:
        names = {n for n, h in mapped.items() if h == host}
        out.update(names or {host})
    return sorted(out)


def _busy_hosts(ctx, exclude_job, jobs=None, hosts=None):
    """Hosts carrying a live job of a preempting partition (other than ``exclude_job``).

    ``jobs``: a ``jobs`` listing the caller already holds; else Slurm is
    asked for the jobs on ``hosts`` (their Slurm nodes) only, or for all
    jobs when ``hosts`` is None.
    """
    pre = ctx.policy.preemption
    if jobs is None:
        if hosts is not None and not hosts:
            return set()
        nodes = slurm_nodes_of(ctx.policy, hosts) if hosts is not None else None
        jobs = ctx.slurm.jobs(nodes=nodes) if nodes else ctx.slurm.jobs()
    busy = set()
    for job in jobs:
        if str(job.get("id")) == str(exclude_job) or job.get("state") not in ("RUNNING", "CONFIGURING"):
            continue
        if job.get("partition") in pre.partitions:
            busy.update(host_of(ctx.policy, n) for n in job.get("nodes", []))
    return busy


def on_event(ctx, minion_id, line):
    """Handle one Slurm job event line sent by ``minion_id``'s events engine."""
    if minion_id != ctx.policy.controller:
        log.warning("slurm event from %r ignored: only the controller %s may send them", minion_id, ctx.policy.controller)
        return {"result": True, "ignored": True, "comment": f"events from {minion_id!r} are not trusted"}
    kind, fields = parse_line(line)
    pre = ctx.policy.preemption
    if not pre.enabled:
        return {"result": True, "ignored": True, "comment": "preemption is disabled"}
    if kind == "start":
        return job_started(ctx, fields["job"])
    try:
        nodes = hostlist.expand_hostlist(fields.get("nodes", "")) if fields.get("nodes") else []
    except hostlist.BadHostlist:
        raise PolicyError(f"nodes must be a Slurm hostlist, got {fields.get('nodes')!r}") from None
    return job_ended(ctx, fields["job"], nodes)


def job_started(ctx, job_id):
    """Suspend the preemptible virtual nodes on the hosts of job ``job_id``."""
    pre = ctx.policy.preemption
    # the job itself, checked against Slurm (not the event), then the jobs
    # on the victims only, which suspend needs: never a listing of all jobs
    job = ctx.slurm.job(job_id)
    if not job or job.get("state") not in ("RUNNING", "CONFIGURING"):
        return {"result": True, "ignored": True, "comment": f"job {job_id} is not running"}
    if job.get("partition") not in pre.partitions:
        return {"result": True, "ignored": True,
                "comment": f"job {job_id} runs in {job.get('partition')}, which does not preempt"}
    hosts = {host_of(ctx.policy, n) for n in job.get("nodes", [])}
    victims = [n.name for n in ctx.registry.nodes(states="ready")
               if n.host in hosts and _preemptible(ctx, n) and n.name not in job.get("nodes", [])]
    if not victims:
        return {"result": True, "comment": f"job {job_id}: no preemptible virtual node on {', '.join(sorted(hosts))}",
                "nodes": {}}
    victim_jobs = ctx.slurm.jobs(nodes=victims)
    ret = suspend_resume.suspend(ctx, victims, mode=pre.mode, reason=f"{PREEMPTED_PREFIX}{job_id}",
                           all_jobs=victim_jobs)
    ret["comment"] = f"job {job_id} preempts: " + ret["comment"]
    return ret


def job_ended(ctx, job_id, nodes=()):
    """Resume the nodes job ``job_id`` preempted, or move them to a free host when ``migrate``."""
    pre = ctx.policy.preemption
    job = None
    if not nodes:  # a line without nodes: Slurm says where the job ran
        job = ctx.slurm.job(job_id)
        nodes = (job or {}).get("nodes") or []
    hosts = {host_of(ctx.policy, n) for n in nodes}
    reason = f"{PREEMPTED_PREFIX}{job_id}"
    mine = [n for n in ctx.registry.nodes(states="suspended")
            if (n.reason or "").startswith(PREEMPTED_PREFIX) and (n.host in hosts or n.reason == reason)]
    if not mine:
        return {"result": True, "comment": f"job {job_id}: no node to resume", "nodes": {}}
    # one Slurm listing, of the jobs on the hosts concerned, says both
    # whether the job still holds them (a stale or forged line) and which
    # of them another preempting job keeps busy
    concerned = slurm_nodes_of(ctx.policy, hosts | {n.host for n in mine if n.host})
    listing = ctx.slurm.jobs(nodes=concerned) if concerned else []
    listed = next((j for j in listing if str(j.get("id")) == str(job_id)), job)
    if listed and listed.get("state") in HOLDING:
        return {"result": True, "ignored": True, "comment": f"job {job_id} is still {listed['state']}"}
    busy = _busy_hosts(ctx, job_id, jobs=listing)
    result, errors, kept = {}, [], []
    for node in mine:
        target = None
        if node.host in busy:
            target = _free_host(ctx, node, busy) if pre.migrate else None
            if target is None:
                kept.append(node.name)
                result[node.name] = "suspended"
                continue
        ret = suspend_resume.resume(ctx, node.name, host=target)
        result.update(ret["nodes"])
        if not ret["result"]:
            errors.append(ret["comment"])
    comment = f"job {job_id} ended: {sum(1 for s in result.values() if s == 'ready')} node(s) resumed"
    if kept:
        comment += f"; {hostlist.collect_hostlist(kept)} stay suspended (their host runs another preempting job)"
    if errors:
        comment += "; " + "; ".join(errors)
    return {"result": not errors, "comment": comment, "nodes": result}


def over(ctx, nodes):
    """Preemptions whose job no longer holds its hosts, among registry ``nodes``.

    Returns ``{job_id: {"nodes": [names], "job_state": state}}``, the
    state ``gone`` when no job of that id is on the victims' hosts.
    Their victims stay suspended when the job's end event was lost (the
    controller's minion was down when it ended); reconcile finds them here.
    A victim whose host runs another preempting job is left out: that
    job's end resumes it. One Slurm job listing, of the victims' hosts
    only, and only when a node was suspended by a preemption.
    """
    by_job = {}
    for node in nodes:
        reason = node.reason or ""
        if node.state == "suspended" and reason.startswith(PREEMPTED_PREFIX):
            by_job.setdefault(reason[len(PREEMPTED_PREFIX):].strip(), []).append(node)
    if not by_job:
        return {}
    # the jobs on the victims' hosts: a preempting job still holding one is
    # there; one not there holds none of them (ended, gone or requeued)
    hosts = {n.host for victims in by_job.values() for n in victims if n.host}
    nodes = slurm_nodes_of(ctx.policy, hosts)
    listing = ctx.slurm.jobs(nodes=nodes) if nodes else []
    jobs = {str(j.get("id")): j for j in listing}
    busy = _busy_hosts(ctx, None, listing)
    out = {}
    for job_id, victims in sorted(by_job.items()):
        job = jobs.get(job_id)
        if job is not None and job.get("state") in HOLDING:
            continue
        names = sorted(n.name for n in victims if n.host not in busy)
        if names:
            out[job_id] = {"nodes": names, "job_state": job.get("state") if job else "gone"}
    return out


def _free_host(ctx, node, busy):
    """A host of the node's provider without preempting jobs and with room for it, or None."""
    prof = ctx.policy.profiles.get(node.profile)
    try:
        hosts = ctx.provider(node.provider).hosts()
    except (NotImplementedError, VclusterError) as exc:
        log.info("no host list from provider %s: %s", node.provider, exc)
        return None
    for host in sorted(hosts, key=lambda h: (-h.cpus_free, h.name)):
        if host.name in busy or host.name == node.host or host.state != "up":
            continue
        if prof is None or (host.cpus_free >= prof.cpus and host.memory_free_mb >= prof.memory):
            return host.name
    return None
