"""Node liveness owned by vcluster: judged by slurmd, not by the Salt minion.

Why vcluster does it at all: Slurm 22.05 marks a node DOWN when its slurmd
misses pings for ``SlurmdTimeout`` seconds and requeues (or kills) its jobs;
a virtual node frozen on purpose cannot answer pings. The cluster therefore
runs with ``SlurmdTimeout=0``, and with that slurmctld no longer pings
answering nodes at all (``src/slurmctld/ping_nodes.c``, 22.05.8: the node
loop skips every node that is not UNKNOWN or already NOT_RESPONDING; and
``controller.c`` runs that loop every 100 s only), so Slurm's
``NOT_RESPONDING`` flag only ever comes from an RPC that happened to fail.
This check, run by the master's ``vcluster_tasks`` engine every
:data:`SCHEDULE_TICK` seconds (:mod:`vcluster.periodic`), takes the job over.

One round:

* watched nodes: registry nodes in ``ready`` or ``draining`` (never
  ``suspending``, ``suspended``, ``resuming`` or ``migrating``: those are
  frozen on purpose) and, with ``liveness:baremetal``, every Slurm node that
  is an accepted minion outside every vcluster pool (a pool name without a
  registry row is a node being created or removed, never bare metal);
* **one** controller call (``slurm.liveness_scan``) gives Slurm's state of
  every watched node and whether its slurmd listens, from the controller
  (a TCP SYN probe of all of them at once, :mod:`vcluster.slurm.reach`;
  slurmd never sees it); plus one ``list`` per provider: a virtual node
  whose instance is gone, stopped, in error, or frozen without vcluster
  having done it is dead at once;
* a node whose slurmd listens is alive, whatever its minion does. Only the
  few nodes the scan flags (slurmd refused, silent or unresolved) get a
  closer look: one Salt probe of their
  minions (``ps -o etimes= -C slurmd``: does slurmd run, and for how
  long; ``liveness:timeout`` seconds) and a second scan of just them (not
  of a node silent to both the scan and Salt: that host is gone). A
  flagged node whose slurmd still does not answer the controller is dead,
  unless its minion sees a slurmd started less than
  :data:`SLURMD_START_GRACE` seconds ago (restarting: ``starting`` in the
  return, judged again next round); the minion's answer says why;
* dead nodes are set DOWN in Slurm with a reason starting
  :data:`REASON_PREFIX` (Slurm then requeues or cancels their jobs, as it
  would with its own timeout) and ``vcluster/node/<name>/down`` is fired;
* a watched minion that is not connected to the master (Salt's own view of
  its connections, no job published) while its slurmd is fine is only
  reported: ``minion_silent`` in the return, the event
  ``vcluster/node/<name>/minion-silent`` when it goes silent (once per
  process), and a warning in ``vcluster.status``. A silent minion never
  sets a node DOWN;
* with ``liveness:resume``, a node that vcluster set DOWN and whose slurmd
  listens again is resumed and ``vcluster/node/<name>/up`` fired.

Salt calls per round: one controller call, one wheel call (accepted keys,
with ``liveness:baremetal``) and one list per provider, whatever the number
of nodes; plus, only when the scan flags nodes, one Salt probe of those
minions and one controller call. ``test=True`` does all the looking and
none of the changing: the return says which nodes would be set DOWN or
resumed.

The registry row is re-read right before a node is set DOWN: a node that
changed in any way after this round looked (suspended, retired, or joined
just now) is left to the next round, which judges it afresh.
"""

import logging
import time

from vcluster import lifecycle, taskstate
from vcluster.errors import PolicyError, VclusterError
from vcluster.nodestates import WATCHED_STATES
from vcluster.providers.base import Status
from vcluster.slurm import reach

log = logging.getLogger(__name__)

REASON_PREFIX = "vcluster liveness"
#: Seconds between two liveness rounds of the master's engine. A node whose
#: slurmd is gone is set DOWN within about SCHEDULE_TICK seconds; a node
#: that is gone altogether within SCHEDULE_TICK + PROBE_WAIT +
#: vcluster:liveness:timeout (plus Salt's gather_job_timeout, which Salt
#: spends on a minion that does not answer; as the former minion-only check).
SCHEDULE_TICK = taskstate.TICKS["liveness"]
DEAD_STATUSES = (Status.STOPPED, Status.ERROR, Status.DELETED)
DOWN_WORDS = ("DOWN", "FAIL")
#: Seconds the controller's SYN probe waits for silent slurmds (a listening
#: one answers in milliseconds); at most ``liveness:timeout``.
PROBE_WAIT = 2.0
#: Seconds a slurmd process may run without listening before it counts as
#: hung: a slurmd restarted by a highstate or an upgrade runs for about a
#: second before it listens (seen: a round fell into that second and set a
#: bare-metal node DOWN, which would have requeued its jobs).
SLURMD_START_GRACE = 60
#: Scan verdicts that flag a node for a closer look.
FLAGGING = (reach.REFUSED, reach.SILENT, reach.UNRESOLVED)

#: Nodes whose minion-silent event this process already fired.
_silent_fired = set()


def check(ctx, timeout=None, test=False):
    """One liveness round; returns what it saw and did (or, with ``test``, would do)."""
    conf = ctx.policy.liveness
    timeout = _timeout(conf.timeout if timeout in (None, "") else timeout)
    test = _flag(test)
    report_only = test or not conf.enabled
    wait = min(PROBE_WAIT, timeout)
    looked_at = time.time()
    registry_nodes = {n.name: n for n in ctx.registry.nodes()}
    candidates = {n for n, node in registry_nodes.items() if node.state in WATCHED_STATES}
    if conf.baremetal:
        pooled = _pool_names(ctx.policy)
        candidates |= {k for k in ctx.keys.accepted() if k not in registry_nodes and k not in pooled}
    report = {"watched": 0, "down": {}, "up": [], "already_down": [], "skipped": [], "flagged": [], "starting": [],
              "minion_silent": [], "calls": {"controller": 0, "salt_probe": 0, "provider_list": 0}}
    if test:
        report["test"] = True
    if not candidates:
        return _finish(report)

    # the one cluster-wide look: Slurm's states and a SYN probe of every slurmd
    scan = ctx.slurm.liveness_scan(sorted(candidates), wait)
    report["calls"]["controller"] += 1
    slurm_nodes = {s["name"]: s for s in scan["nodes"]}
    verdicts = scan.get("slurmd") or {}
    watched = {n for n in candidates if n in slurm_nodes}  # not in Slurm: not ours to judge
    report["watched"] = len(watched)

    dead = _provider_dead(ctx, watched, registry_nodes, report)
    flagged = sorted(n for n in watched - set(dead) if _flagged(slurm_nodes[n], verdicts.get(n)))
    report["flagged"] = flagged
    if flagged:
        dead.update(_closer_look(ctx, flagged, verdicts, timeout, wait, report))

    for name, why in sorted(dead.items()):
        if name in registry_nodes and _changed(ctx, registry_nodes[name], looked_at):
            report["skipped"].append(name)  # suspended, retired or rejoined while we looked
            continue
        if _is_down(slurm_nodes[name]):
            report["already_down"].append(name)
            continue
        reason = f"{REASON_PREFIX}: {why}"
        if report_only:
            report["down"][name] = reason + (" (test: nothing changed)" if test else
                                             " (report only: liveness disabled)")
            continue
        try:
            ctx.slurm.update_node(name, "DOWN", reason=reason)
        except VclusterError as exc:
            log.warning("liveness: could not set %s DOWN: %s", name, exc)
            continue
        report["down"][name] = reason
        log.warning("liveness: %s set DOWN: %s", name, why)
        lifecycle.announce(ctx, name, "down", reason=reason)

    if conf.resume:
        for name in sorted(watched - set(dead)):
            s = slurm_nodes[name]
            if not (_is_down(s) and str(s.get("reason", "")).startswith(REASON_PREFIX)):
                continue
            if verdicts.get(name) != reach.LISTENING:
                continue
            if report_only:
                report["up"].append(name)
                continue
            try:
                ctx.slurm.update_node(name, "RESUME")
            except VclusterError as exc:
                log.warning("liveness: could not resume %s: %s", name, exc)
                continue
            report["up"].append(name)
            lifecycle.announce(ctx, name, "up")

    # silent minions matter only where slurmd answers (a dead node is reported as dead)
    _minions(ctx, {n for n in watched - set(dead) if verdicts.get(n) == reach.LISTENING}, report, fire=not test)
    return _finish(report)


def silent_minions(ctx, names):
    """Those of ``names`` whose minion holds no connection to the master (no job published)."""
    names = set(names)
    if not names:
        return []
    present = getattr(ctx.salt, "present", None)
    if present is None:
        return []
    try:
        return sorted(names - set(present(sorted(names))))
    except Exception as exc:  # noqa: BLE001 - a warning source only, never a verdict
        log.info("liveness: could not read minion presence: %s", exc)
        return []


def watched_baremetal(ctx, slurm_names):
    """Bare-metal nodes liveness watches among ``slurm_names`` (empty without ``liveness:baremetal``)."""
    if not ctx.policy.liveness.baremetal:
        return []
    registry_names = {n.name for n in ctx.registry.nodes()}
    pooled = _pool_names(ctx.policy)
    keys = ctx.keys.accepted()
    return sorted(n for n in slurm_names if n in keys and n not in registry_names and n not in pooled)


# -- helpers ------------------------------------------------------------------------


def _timeout(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"timeout must be a positive number of seconds, got {value!r}") from None
    if not number > 0:
        raise PolicyError(f"timeout must be a positive number of seconds, got {value!r}")
    return number


def _flag(value):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if value is None or str(value).lower() in ("false", "0", "no", ""):
        return False
    raise PolicyError(f"test must be true or false, got {value!r}")


def _is_down(slurm_node):
    return any(w in (slurm_node.get("state") or []) for w in DOWN_WORDS)


def _flagged(slurm_node, verdict):
    """Whether the scan asks for a closer look at a node (never one already DOWN).

    Slurm's NOT_RESPONDING alone does not: with ``SlurmdTimeout=0`` it only
    records some earlier RPC that failed, and slurmctld clears it itself.
    """
    return verdict in FLAGGING and not _is_down(slurm_node)


def _provider_dead(ctx, watched, registry_nodes, report):
    """``{name: why}`` for virtual nodes whose provider reports the instance dead; one list per provider."""
    dead = {}
    by_provider = {}
    for name in watched:
        node = registry_nodes.get(name)
        if node is not None and node.instance_id:
            by_provider.setdefault(node.provider, []).append(node)
    for prov_name, nodes in sorted(by_provider.items()):
        try:
            report["calls"]["provider_list"] += 1
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
    return dead


def _closer_look(ctx, flagged, verdicts, timeout, wait, report):
    """``{name: why}`` for the flagged nodes whose slurmd still does not answer the controller."""
    minions = ctx.salt.probe(list(flagged), timeout) if flagged else {}
    report["calls"]["salt_probe"] += 1
    # silent to the controller and to Salt for liveness:timeout seconds: a
    # host gone; the others are scanned once more (a refused one answers at
    # once: a slurmd restart caught by the first scan is seen back)
    gone = {n for n in flagged if verdicts.get(n) == reach.SILENT and n not in minions}
    again = dict.fromkeys(gone, reach.SILENT)
    if set(flagged) - gone:
        again.update(ctx.slurm.liveness_scan(sorted(set(flagged) - gone), wait).get("slurmd") or {})
        report["calls"]["controller"] += 1
    dead = {}
    for name in flagged:
        now = again.get(name)
        if now in (reach.LISTENING, "skipped", None):
            continue  # answers again (a slurmd restart, a lost packet), or no longer ours to judge
        slurmd = f"its slurmd does not answer the controller ({now})"
        answered, age = name in minions, minions.get(name)
        if answered and age is None:
            dead[name] = "its slurmd is not running"
        elif now == reach.UNRESOLVED:
            # no IPv4 address for the controller to probe (an IPv6-only
            # node, say): the scan cannot judge, and a silent minion alone
            # is no reason; only a minion that sees no slurmd is
            log.warning("liveness: cannot probe %s's slurmd (its address has no IPv4 address)", name)
        elif answered and age < SLURMD_START_GRACE:
            # restarted just now (a highstate, a package upgrade): slurmd
            # runs but does not listen yet; the next round judges it
            report["starting"].append(name)
            log.info("liveness: %s's slurmd started %d s ago and does not listen yet; judged next round",
                     name, age)
        elif answered:
            dead[name] = f"{slurmd}, though its minion sees slurmd running (for {age} s)"
        else:
            dead[name] = f"{slurmd} and its minion did not answer within {timeout:g} s"
    return dead


def _minions(ctx, alive, report, fire):
    """Report (and announce once) watched nodes that are alive but whose minion is not connected."""
    silent = silent_minions(ctx, alive)
    report["minion_silent"] = silent
    for name in silent:
        if fire and name not in _silent_fired:
            _silent_fired.add(name)
            log.warning("liveness: %s's minion is not connected to the master; its slurmd answers, "
                        "so the node stays up", name)
            lifecycle.announce(ctx, name, "minion-silent", reason="minion not connected to the master; slurmd answers")
    if fire:
        _silent_fired.intersection_update(silent)


def _finish(report):
    test = report.get("test")
    comment = (f"{report['watched']} node(s) watched, {len(report['down'])} "
               f"{'would be' if test else ''} set DOWN, {len(report['up'])} {'would come' if test else 'came'} back up")
    if report["minion_silent"]:
        comment += f", {len(report['minion_silent'])} with a silent minion (not a reason to set DOWN)"
    return {"result": True, "comment": " ".join(comment.split()), **report}


def _pool_names(pol):
    """Every node name some vcluster pool may hand out."""
    return {name for pool in pol.pools.values() for name in pool.names}


def _changed(ctx, seen, looked_at):
    """Whether the registry row of ``seen`` is gone, not watched, or newer than this round."""
    node = ctx.registry.get(seen.name)
    return (node is None or node.id != seen.id or node.state not in WATCHED_STATES
            or node.updated > looked_at)
