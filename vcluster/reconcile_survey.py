"""Reconcile's survey: the four views of the virtual nodes, read once, and every disagreement.

Views are read in the order provider, keys, Slurm, registry: everything
vcluster creates is entered in the registry first, so an object seen
before the registry was read and missing from it is really an orphan, not a
node being born. A provider, key store or Slurm that cannot be read is
reported and its checks are skipped. Nothing here changes anything; the
repairs are :mod:`vcluster.reconcile_repair`, the run :mod:`vcluster.reconcile`.
"""

import time

import hostlist

from vcluster import preempt
from vcluster.errors import sentence
from vcluster.nodestates import SETTLED

#: Report sections, in the order repairs run.
KINDS = (
    "orphan_instance",
    "duplicate_instance",
    "node_without_instance",
    "orphan_key",
    "orphan_slurm_node",
    "stuck",
    "preemption_over",
)
#: Slurm words of a cloud-mode node in Slurm's power-saving hands: powered off
#: (no instance expected), or powering up (Slurm waits ResumeTimeout, then runs
#: ResumeFailProgram and requeues its jobs itself).
POWER_MANAGED = frozenset({"POWERED_DOWN", "POWERING_DOWN", "POWER_DOWN", "POWERING_UP", "POWER_UP"})


class Survey:
    """The four views, read once, in a safe order."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.started = time.time()
        self.errors = []
        self.instances = {}  # provider name -> [Instance]; missing key: listing failed
        policy = ctx.policy
        for prov_name in sorted(policy.providers):
            try:
                self.instances[prov_name] = list(ctx.provider(prov_name).list(policy.cluster))
            except Exception as exc:  # noqa: BLE001 - reported, its checks skipped
                self.errors.append(f"provider {prov_name}: {sentence(exc)}")
        try:
            self.keys = ctx.keys.all()  # name -> accepted / pending / rejected / denied
        except Exception as exc:  # noqa: BLE001
            self.keys = None
            self.errors.append(f"minion keys: {sentence(exc)}")
        try:
            self.slurm = list(ctx.slurm.nodes())
        except Exception as exc:  # noqa: BLE001
            self.slurm = None
            self.errors.append(f"slurm: {sentence(exc)}")
        # the registry last: see the module doc
        self.held = {n.name: n for n in ctx.registry.nodes()}
        self.pool_names = set()
        for pool in policy.pools.values():
            self.pool_names.update(pool.names)


def _owns(node, inst):
    """Whether registry ``node`` accounts for provider instance ``inst``."""
    if node.instance_id is not None:
        return node.instance_id == inst.id
    # created, but the crash came before the id was written: the request tag says whose it is
    tag = inst.tags.get("registry_id")
    return tag is None or tag == node.request_id


def survey(ctx, grace=None, now=None):
    """Every disagreement, by kind; nothing is changed. Returns ``(findings, survey)``."""
    s = Survey(ctx)
    now = s.started if now is None else now
    override = grace  # given: one limit for every state, join states included
    grace = ctx.policy.reconcile.grace if grace is None else grace
    found = {kind: [] for kind in KINDS}

    owned = {}  # node name -> [(provider, Instance)] it owns
    for prov_name, insts in s.instances.items():
        for inst in insts:
            name = inst.tags.get("node") or inst.name
            node = s.held.get(name)
            if node is not None and node.provider == prov_name and _owns(node, inst):
                owned.setdefault(name, []).append((prov_name, inst))
            else:
                found["orphan_instance"].append({
                    "provider": prov_name, "instance": inst.id, "node": name,
                    "why": "no active registry node" if node is None else
                    f"registry node {name} has instance {node.instance_id or 'none'}",
                })
    for name, claims in sorted(owned.items()):
        if len(claims) > 1:
            node = s.held[name]
            keep = node.instance_id if node.instance_id in {i.id for _, i in claims} else None
            found["duplicate_instance"].append({
                "node": name, "state": node.state, "keep": keep,
                "instances": sorted(i.id for _, i in claims),
                "providers": sorted({p for p, _ in claims}),
            })

    listed = {p: {i.id for i in insts} for p, insts in s.instances.items()}
    for node in s.held.values():
        if not node.instance_id or node.provider not in listed:
            continue
        # an id written after the listing started may belong to an instance it could not see
        if node.instance_id not in listed[node.provider] and node.updated < s.started:
            found["node_without_instance"].append({
                "node": node.name, "state": node.state, "instance": node.instance_id,
                "provider": node.provider,
            })

    if s.keys is not None:
        for key in sorted(set(s.keys) & s.pool_names):
            if key not in s.held:
                found["orphan_key"].append({"node": key, "key_state": s.keys[key]})

    if s.slurm is not None:
        for snode in s.slurm:
            name = snode.get("name")
            words = set(snode.get("state") or [])
            if not snode.get("dynamic") and words & POWER_MANAGED:
                continue  # cloud mode: powered off, or powering up under Slurm's own deadline
            if name in s.pool_names and name not in s.held:
                found["orphan_slurm_node"].append({
                    "node": name, "state": "+".join(snode.get("state") or []) or "unknown",
                    "dynamic": bool(snode.get("dynamic")),
                })

    gone = {f["node"] for f in found["node_without_instance"]}
    for node in s.held.values():
        if node.name in gone or node.state in SETTLED:
            continue
        age = now - node.updated
        limit = grace
        if node.state == "allocated" and override is None:
            # an expand may still be inside its (retried) provider create
            limit = max(grace, getattr(getattr(ctx.policy, "faults", None), "create_deadline", 0))
        if node.state in ("booting", "joining") and override is None:
            prof = ctx.policy.profiles.get(node.profile)
            limit = prof.join_timeout if prof is not None else grace
        if age > limit:
            found["stuck"].append({
                "node": node.name, "state": node.state, "age": round(age, 1), "limit": limit,
                "instance": node.instance_id,
                "owned": sorted(i.id for _, i in owned.get(node.name, [])),
            })

    if s.slurm is not None:
        try:
            ended = preempt.over(ctx, [n for n in s.held.values() if n.name not in gone])
        except Exception as exc:  # noqa: BLE001 - reported, the check skipped
            ended = {}
            s.errors.append(f"slurm jobs: {sentence(exc)}")
        for job_id, item in ended.items():
            found["preemption_over"].append({
                "job": job_id, "node": hostlist.collect_hostlist(item["nodes"]), "nodes": item["nodes"],
                "job_state": item["job_state"],
            })
    return found, s
