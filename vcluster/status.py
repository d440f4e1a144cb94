"""Status: every held node with its vcluster, provider and Slurm view (``salt-run vcluster.status``)."""

import logging

from vcluster import liveness
from vcluster.errors import VclusterError, sentence
from vcluster.nodestates import WATCHED_STATES
from vcluster.slurm import states

log = logging.getLogger(__name__)

#: Columns of :func:`status_rows`, in order.
STATUS_COLUMNS = ("node", "state", "slurm", "instance", "jobs", "address", "profile", "host", "reason")


def status(ctx):
    """Every held node with its vcluster, provider and Slurm view.

    ``result`` is False when Slurm or a provider could not be asked: the
    nodes' Slurm state (and jobs) or instance status then read ``unknown``
    (never ``absent``), ``unknown`` names the part and the comment says why.
    ``jobs`` lists only jobs alive in Slurm (:data:`vcluster.slurm.states.JOB_ON_NODES`).
    """
    nodes = ctx.registry.nodes()
    unknown, why = [], []
    slurm, jobs = None, None
    try:
        slurm = {s["name"]: s for s in ctx.slurm.nodes()}
        jobs = {}
        for job in ctx.slurm.jobs():
            if job.get("state") not in states.JOB_ON_NODES:
                continue  # ended: squeue keeps it MinJobAge seconds with the nodes it ran on
            for name in job.get("nodes", []):
                jobs.setdefault(name, []).append(job["id"])
    except VclusterError as exc:
        slurm, jobs = None, None
        unknown.append("slurm")
        why.append(f"Slurm could not be asked ({sentence(exc)}): Slurm state and jobs are unknown")
    instances = {}
    for prov in sorted({n.provider for n in nodes}):
        try:
            instances[prov] = {i.id: i for i in ctx.provider(prov).list(ctx.policy.cluster)}
        except Exception as exc:  # noqa: BLE001 - reported, the column reads unknown
            unknown.append(f"provider {prov}")
            why.append(f"provider {prov} could not be asked ({sentence(exc)}): "
                       f"the instance status of its nodes is unknown")
    out = {}
    for n in sorted(nodes, key=lambda n: n.name):
        if slurm is None:
            slurm_state = "unknown"
        else:
            s = slurm.get(n.name)
            slurm_state = "+".join(s["state"]) if s and isinstance(s.get("state"), list) else (
                (s or {}).get("state") or "absent")
        if n.provider not in instances:
            inst_state = "unknown"
        elif not n.instance_id:
            inst_state = "none"
        else:
            inst = instances[n.provider].get(n.instance_id)
            inst_state = getattr(inst.status, "value", inst.status) if inst is not None else "absent"
        out[n.name] = {
            "address": n.address,
            "profile": n.profile,
            "provider": n.provider,
            "instance": n.instance_id,
            "instance_state": inst_state,
            "host": n.host,
            "state": n.state,
            "slurm": slurm_state,
            "jobs": None if jobs is None else sorted(jobs.get(n.name, []), key=_job_key),
            "reason": n.reason,
        }
    comment = f"{len(out)} node(s)"
    if why:
        comment += "; " + "; ".join(why)
    return {"result": not unknown, "comment": comment, "nodes": out, "count": len(out),
            "unknown": unknown, "warnings": _minion_warnings(ctx, nodes, slurm or {})}


def _job_key(job_id):
    text = str(job_id)
    main, _, task = text.partition("_")
    return (int(main) if main.isdigit() else 0, int(task) if task.isdigit() else -1, text)


def status_rows(ret):
    """A :func:`status` return as table rows: a header, then one list of strings per node."""
    rows = [[c.upper() for c in STATUS_COLUMNS]]
    for name, n in sorted((ret.get("nodes") or {}).items()):
        jobs = n.get("jobs")
        inst = n.get("instance") or "-"
        if n.get("instance_state") not in (None, "none"):
            inst = f"{inst} ({n['instance_state']})"
        cells = {
            "node": name, "state": n.get("state"), "slurm": n.get("slurm"), "instance": inst,
            "jobs": "unknown" if jobs is None else (",".join(str(j) for j in jobs) or "-"),
            "address": n.get("address"), "profile": n.get("profile"), "host": n.get("host"),
            "reason": n.get("reason"),
        }
        rows.append([str(cells[c]) if cells[c] not in (None, "") else "-" for c in STATUS_COLUMNS])
    return rows


def _minion_warnings(ctx, nodes, slurm):
    """A warning naming the watched nodes whose minion is not connected (liveness keeps them up)."""
    watched = [n.name for n in nodes if n.state in WATCHED_STATES]
    watched += _try(lambda: liveness.watched_baremetal(ctx, slurm), default=[])
    silent = liveness.silent_minions(ctx, watched)
    if not silent:
        return []
    return [f"the minion of {', '.join(silent)} is not connected to the master: Salt cannot reach "
            f"{'it' if len(silent) == 1 else 'them'}; liveness keeps such a node up while its slurmd answers"]


def _try(func, default):
    try:
        return func()
    except VclusterError as exc:
        log.warning("%s", exc)
        return default
