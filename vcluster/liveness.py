"""Node liveness owned by vcluster, so that frozen nodes are not "dead".

Why: Slurm 22.05 marks a node DOWN when its slurmd misses pings for
``SlurmdTimeout`` seconds and requeues (or kills) its jobs; a virtual node
frozen on purpose cannot answer pings. The cluster therefore runs with
``SlurmdTimeout=0`` (slurmctld never declares a node dead by itself) and this
check, run by the master's ``vcluster_tasks`` engine every
:data:`SCHEDULE_TICK` seconds (:mod:`vcluster.periodic`), takes that job over:

* watched nodes: registry nodes in ``ready`` or ``draining`` (never
  ``suspending``, ``suspended``, ``resuming`` or ``migrating``: those are
  frozen on purpose) and, with ``liveness:baremetal``, every Slurm node that
  is an accepted minion outside every vcluster pool (a pool name without a
  registry row is a node being created or removed, never bare metal);
* a virtual node whose instance the provider reports missing, stopped or in
  error is dead at once;
* any watched node whose minion does not answer within ``liveness:timeout``
  seconds, or whose slurmd process is gone, is dead;
* dead nodes are set DOWN in Slurm with a reason starting
  :data:`REASON_PREFIX` (Slurm then requeues or cancels their jobs, as it
  would with its own timeout) and ``vcluster/node/<name>/down`` is fired;
* with ``liveness:resume``, a node that vcluster set DOWN and that answers
  again (slurmd running) is resumed and ``vcluster/node/<name>/up`` fired.

The registry row is re-read right before a node is set DOWN: a node that
changed in any way after this round looked (suspended, retired, or joined
just now, so that it missed a probe published before its minion started)
is left to the next round, which judges it afresh.
"""

import logging
import time

from vcluster.errors import VclusterError
from vcluster.providers.base import Status
from vcluster.suspend import probe, slurm_call

log = logging.getLogger(__name__)

REASON_PREFIX = "vcluster liveness"
#: Seconds between two liveness rounds of the master's engine. A dead node
#: is set DOWN within SCHEDULE_TICK + vcluster:liveness:timeout seconds.
SCHEDULE_TICK = 10
#: Registry states whose nodes are expected to answer.
WATCHED_STATES = ("ready", "draining")
DEAD_STATUSES = (Status.STOPPED, Status.ERROR, Status.DELETED)
DOWN_WORDS = ("DOWN", "FAIL")


def check(ctx, timeout=None):
    """One liveness round; returns what it saw and did."""
    conf = ctx.policy.liveness
    timeout = float(timeout or conf.timeout)
    looked_at = time.time()
    registry_nodes = {n.name: n for n in ctx.registry.nodes()}
    watched = {n for n, node in registry_nodes.items() if node.state in WATCHED_STATES}
    slurm_nodes = {s["name"]: s for s in slurm_call(ctx, "nodes")}
    if conf.baremetal:
        keys = ctx.keys.accepted()
        pooled = _pool_names(ctx.policy)
        watched |= {n for n in slurm_nodes if n not in registry_nodes and n not in pooled and n in keys}
    watched = {n for n in watched if n in slurm_nodes}  # not yet (or no longer) in Slurm: not ours to judge

    dead = {}
    # the providers' view first: one list call per provider, no waiting
    by_provider = {}
    for name in watched:
        node = registry_nodes.get(name)
        if node is not None and node.instance_id:
            by_provider.setdefault(node.provider, []).append(node)
    for prov_name, nodes in by_provider.items():
        try:
            instances = {i.id: i for i in ctx.provider(prov_name).list(ctx.policy.cluster)}
        except VclusterError as exc:
            log.warning("liveness: provider %s did not list its instances: %s", prov_name, exc)
            continue
        for node in nodes:
            inst = instances.get(node.instance_id)
            if inst is None:
                dead[node.name] = f"its instance {node.instance_id} is gone"
            elif inst.status in DEAD_STATUSES:
                dead[node.name] = f"its instance is {inst.status.value}"
            elif inst.status in (Status.SUSPENDED, Status.PAUSED):
                dead[node.name] = f"its instance is {inst.status.value} but vcluster did not suspend it"

    answers = probe(ctx, sorted(watched - set(dead)), timeout)
    for name in sorted(watched - set(dead)):
        if name not in answers:
            dead[name] = f"its minion did not answer within {timeout:g} s"
        elif answers[name] is False:
            dead[name] = "its slurmd is not running"

    report = {"watched": len(watched), "down": {}, "up": [], "already_down": [], "skipped": []}
    for name, why in sorted(dead.items()):
        if name in registry_nodes and _changed(ctx, registry_nodes[name], looked_at):
            report["skipped"].append(name)  # suspended, retired or rejoined while we looked
            continue
        words = slurm_nodes[name].get("state") or []
        if any(w in words for w in DOWN_WORDS):
            report["already_down"].append(name)
            continue
        reason = f"{REASON_PREFIX}: {why}"
        if not conf.enabled:
            report["down"][name] = reason + " (report only: liveness disabled)"
            continue
        try:
            slurm_call(ctx, "update_node", name, "DOWN", reason=reason)
        except VclusterError as exc:
            log.warning("liveness: could not set %s DOWN: %s", name, exc)
            continue
        report["down"][name] = reason
        log.warning("liveness: %s set DOWN: %s", name, why)
        ctx.node_event(name, "down", reason=reason)

    if conf.enabled and conf.resume:
        for name in sorted(watched - set(dead)):
            s = slurm_nodes[name]
            if any(w in (s.get("state") or []) for w in DOWN_WORDS) and str(s.get("reason", "")).startswith(REASON_PREFIX):
                try:
                    slurm_call(ctx, "update_node", name, "RESUME")
                except VclusterError as exc:
                    log.warning("liveness: could not resume %s: %s", name, exc)
                    continue
                report["up"].append(name)
                ctx.node_event(name, "up")
    comment = f"{report['watched']} node(s) watched, {len(report['down'])} set DOWN, {len(report['up'])} back up"
    return {"result": True, "comment": comment, **report}


def _pool_names(pol):
    """Every node name some vcluster pool may hand out."""
    return {name for pool in pol.pools.values() for name in pool.names}


def _changed(ctx, seen, looked_at):
    """Whether the registry row of ``seen`` is gone, not watched, or newer than this round."""
    node = ctx.registry.get(seen.name)
    return (node is None or node.id != seen.id or node.state not in WATCHED_STATES
            or node.updated > looked_at)
