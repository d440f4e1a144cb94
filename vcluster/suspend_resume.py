"""Suspend and resume virtual nodes with their Slurm jobs intact.

Suspend, per node (``ready -> suspending -> suspended``):

1. drain the node in Slurm (reason ``vcluster suspend``) so nothing new
   lands on it: a node whose jobs are suspended shows ``idle``;
2. ``scontrol suspend`` every running job on it (the job ids are kept in the
   registry's job map, so resume continues exactly those);
3. the provider's suspend in the requested mode (freeze, pause, save; docs/policy.md#suspend-modes).

Resume reverses it (``suspended -> resuming -> ready``): provider resume
(optionally on another host, where the provider can move a suspended
instance: :mod:`vcluster.migrate`), wait until the node's slurmd listens
(the controller's SYN probe, :mod:`vcluster.slurm.reach`), ``scontrol
resume`` the jobs, undrain (only a drain vcluster set), then wait for the
node's minion (a silent one is reported, the jobs do not wait for it).

Slurm must not declare a frozen node dead: the cluster runs with
``SlurmdTimeout=0`` and vcluster owns node liveness (:mod:`vcluster.liveness`),
which skips nodes in the states above.

Every request is validated completely before the first side effect, and a
node whose suspend fails half-way is put back as it was (jobs resumed,
instance resumed, drain lifted, ``ready``).
"""

import logging
import time

import hostlist

from vcluster import lifecycle, membership
from vcluster.arguments import flag, node_names, positive_int
from vcluster.errors import PolicyError, VclusterError, sentence
from vcluster.migrate import migrate
from vcluster.nodestates import ADMIN_REASON, WARM_REASON
from vcluster.providers.base import SUSPEND_NAMES
from vcluster.slurm.client import HOLD_REASON

log = logging.getLogger(__name__)

#: Slurm node reason vcluster sets while a node is suspended.
DRAIN_REASON = HOLD_REASON
#: every name ``mode=`` takes: freeze, pause, save, shelve and the old names (providers/base.py)
MODES = SUSPEND_NAMES


def _mode(ctx, mode):
    if mode is None or mode == "":
        return ctx.policy.suspend.mode
    if mode not in MODES:
        raise PolicyError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _node_jobs(ctx, names, states, all_jobs=None):
    """``{node: [job dict, ...]}`` for the jobs in ``states`` on ``names``; one Slurm call.

    ``all_jobs`` is a listing the caller already holds (saves the call).
    """
    out = {n: [] for n in names}
    if not names:
        return out
    for job in all_jobs if all_jobs is not None else ctx.slurm.jobs(nodes=list(names)):
        if job.get("state") not in states:
            continue
        for n in job.get("nodes", []):
            if n in out:
                out[n].append(job)
    return out


# -- suspend -------------------------------------------------------------------------


def suspend(ctx, nodes, mode=None, reason=None, all_jobs=None, test=False):
    """Suspend ``nodes`` (a hostlist) with their jobs; see the module docstring.

    Nodes already ``suspended`` are left as they are. Returns
    ``{"result", "comment", "nodes": {name: state}}``, plus ``freed_mib``
    (``{name: MiB}``) when the provider measured the host memory a suspend
    gave back (libvirt: what the QEMU process held, gone with a save; 0 for
    a pause) and ``available_delta_mib`` (``{name: MiB}``, the host's
    available memory after minus before, a second opinion); both are also in
    the node's ``suspended`` event. ``all_jobs`` is a
    fresh ``jobs`` listing the caller already holds (preemption), else
    Slurm is asked. ``test=True`` validates, reads the jobs and says what
    would be done; nothing changes.
    """
    names = node_names(nodes)
    mode = _mode(ctx, mode)
    test = flag(test, "test")
    reason = reason or ADMIN_REASON
    found = lifecycle.held(ctx, names, ("ready", "suspended"), "suspended")
    todo = [n for n in names if found[n].state == "ready"]
    for name in todo:
        if not found[name].instance_id:
            raise PolicyError(f"node {name} has no instance to suspend")
        modes = getattr(ctx.provider(found[name].provider), "suspend_modes", None)
        if modes is not None and mode not in modes:
            raise PolicyError(f"provider {found[name].provider} cannot suspend node {name} with mode {mode!r}: "
                              f"it takes {', '.join(modes)}")
    jobs = _node_jobs(ctx, todo, ("RUNNING", "SUSPENDED", "CONFIGURING", "COMPLETING"), all_jobs)
    if mode == "shelve" and (busy := [n for n in todo if jobs[n]]):
        raise PolicyError(f"mode shelve stops the guest, for nodes without jobs only: "
                          f"{hostlist.collect_hostlist(busy)} hold jobs")
    for name in todo:
        for job in jobs[name]:
            others = sorted(set(job.get("nodes", [])) - set(todo))
            if others:
                raise PolicyError(
                    f"job {job['id']} on {name} also runs on {hostlist.collect_hostlist(others)}; "
                    "suspend those nodes in the same request"
                )
    if test:
        plan = {}
        for name in names:
            if name not in todo:
                plan[name] = f"{name} is already suspended; it would be left as it is"
                continue
            running = [str(j["id"]) for j in jobs[name] if j.get("state") == "RUNNING"]
            held = f"suspend its running job(s) {', '.join(running)}" if running else "suspend no job (none runs)"
            plan[name] = (f"would drain {name}, {held} and {mode} its instance {found[name].instance_id} "
                          f"(provider {found[name].provider})")
        return _plan(names, plan, f"would suspend {len(todo)} of {len(names)} node(s)")
    suspended_jobs = set()
    measured = {key: {} for key in SUSPEND_REPORT}

    def one(name):
        done = _suspend_one(ctx, found[name], mode, reason, jobs[name], suspended_jobs)
        for key, value in _report(done).items():
            measured[key][name] = value

    ret = _per_node(ctx, names, todo, found, "suspended", one, f"suspended ({mode})", "suspending")
    # providers that measure it (libvirt): host memory given back, and the host's MemAvailable delta
    ret.update({key: by_node for key, by_node in measured.items() if by_node})
    return ret


#: what a provider's suspend may report (libvirt: ``freed_mib``, the memory
#: its QEMU process held, gone with a save, 0 for a pause; ``available_delta_mib``,
#: the hypervisor's available memory after minus before)
SUSPEND_REPORT = ("freed_mib", "available_delta_mib")


def _report(done):
    """The :data:`SUSPEND_REPORT` values a provider's suspend returned (None values left out)."""
    if not isinstance(done, dict):
        return {}
    return {key: done[key] for key in SUSPEND_REPORT if done.get(key) is not None}


def _plan(names, plan, head):
    """A ``test=True`` return: ``result`` None, one sentence per node."""
    return {"result": None, "test": True, "comment": head + ": " + "; ".join(plan[n] for n in names),
            "nodes": plan}


def _per_node(ctx, names, todo, found, done, action, label, doing):
    """Run ``action(name)`` for each of ``todo``; one node's failure is reported, the rest go on.

    One progress event before and one after each node.
    """
    result = {n: done for n in names if n not in todo}
    errors = []
    for i, name in enumerate(todo, 1):
        ctx.events.progress(f"{doing} {name} ({i} of {len(todo)})", node=name)
        try:
            action(name)
            result[name] = done
        except Exception as exc:  # noqa: BLE001 - reported per node
            log.warning("%s: %s failed: %s", name, label, exc)
            errors.append(f"{name}: {sentence(exc)}")
            result[name] = (ctx.registry.get(name) or found[name]).state
            ctx.events.progress(f"{name} failed: {sentence(exc)}", node=name, state=result[name])
        else:
            ctx.events.progress(f"{name} {label}", node=name, state=done)
    finished = [n for n, s in result.items() if s == done]
    comment = f"{len(finished)} of {len(names)} node(s) {label}"
    if errors:
        comment += "; " + "; ".join(errors)
    return {"result": not errors, "comment": comment, "nodes": result}


def _suspend_one(ctx, node, mode, reason, jobs, suspended_jobs):
    name = node.name
    lifecycle.move(ctx, name, "suspending", expect="ready", reason=reason, event={"mode": mode, "reason": reason})
    # a job on several nodes of this request is suspended once, for the first
    fresh = [j["id"] for j in jobs if j.get("state") == "RUNNING" and j["id"] not in suspended_jobs]
    shared = [j["id"] for j in jobs if j["id"] in suspended_jobs]
    held = None
    try:
        # one controller call: drain (keeping an admin's drain) and scontrol
        # suspend; it undoes itself when one of its steps fails
        held = ctx.slurm.hold_node(name, fresh, DRAIN_REASON)
        suspended_jobs.update(fresh)
        ctx.registry.map_jobs(name, [str(j) for j in fresh + shared])
        done = ctx.provider(node.provider).suspend(node.instance_id, mode=mode)
    except Exception:
        # put the node back as it was: jobs running, drain lifted, ready
        if held is not None:
            _quiet(ctx.slurm.release_node, name, fresh, DRAIN_REASON)
            suspended_jobs.difference_update(fresh)
        _quiet(ctx.registry.map_jobs, name, [])
        lifecycle.move(ctx, name, "ready", expect="suspending",
                       event={"reason": "suspend failed", "jobs_resumed": bool(held and fresh)})
        raise
    extra = _report(done)
    lifecycle.move(ctx, name, "suspended", expect="suspending", reason=reason,
                   event=dict(mode=mode, reason=reason, jobs=[str(j) for j in fresh + shared], **extra))
    return done


# -- resume -------------------------------------------------------------------------------


def resume(ctx, nodes, host=None, timeout=None, test=False):
    """Resume ``nodes`` (a hostlist); ``host`` moves them there first where the provider can.

    Nodes already ``ready`` are left as they are. A node whose provider
    resume or restart check fails goes back to ``suspended`` (its jobs stay
    suspended, nothing is lost) and the return says why; run resume again.
    Where the provider measures its resume (libvirt: ``seconds`` of the
    restore, ``clock_offset_before``/``_after`` of the guest clock and
    ``clock_step_s``, ``minion_reconnect``, and ``minion_restart`` when the
    runner had to) the return has it under ``resumed`` (``{name: {...}}``)
    with the seconds since the node's resume began at which the provider
    returned (``provider_returned``), its jobs ran again (``jobs_resumed``)
    and its minion answered (``minion_answered``); the node's ``ready``
    event carries it. ``test=True`` validates and says what would
    be done; nothing changes.
    """
    names = node_names(nodes)
    if host is not None and (not isinstance(host, str) or not host.strip()):
        raise PolicyError(f"host must be a hypervisor name, got {host!r}")
    timeout = ctx.policy.suspend.resume_timeout if timeout is None else positive_int(timeout, "timeout")
    test = flag(test, "test")
    found = lifecycle.held(ctx, names, ("suspended", "ready"), "resumed")
    todo = [n for n in names if found[n].state == "suspended"]
    warm = [n for n in todo if found[n].reason == WARM_REASON and membership.mode_of(ctx, found[n]) == "cloud"]
    if warm:
        # cloud membership: Slurm has these POWERED_DOWN, and a thaw behind
        # its back would leave them so; its power-up thaws them
        # (vcluster.powersave) and makes their slurmd register again
        listed = hostlist.collect_hostlist(warm)
        raise PolicyError(f"{listed} {'is' if len(warm) == 1 else 'are'} in the warm pool, which Slurm "
                          f"powers up when a job needs it: scontrol update nodename={listed} state=POWER_UP")
    if test:
        plan = {}
        for name in names:
            node = found[name]
            if name not in todo:
                plan[name] = f"{name} is already ready; it would be left as it is"
                continue
            mapped = ctx.registry.jobs_on(name)
            move = f"move it from {node.host} to {host}, then " if host and host != node.host else ""
            jobs = (f"resume its suspended job(s) {', '.join(mapped)}" if mapped else "resume no job (it holds none)")
            plan[name] = (f"would {move}resume the instance {node.instance_id} of {name}, wait up to {timeout} s "
                          f"for its minion and slurmd, {jobs} and lift vcluster's drain")
        return _plan(names, plan, f"would resume {len(todo)} of {len(names)} node(s)")

    reports = {}

    def one(name):
        if host and host != found[name].host:
            migrate(ctx, name, host=host)
        report = _resume_one(ctx, ctx.registry.get(name), timeout)
        if report:
            reports[name] = report

    ret = _per_node(ctx, names, todo, found, "ready", one, "ready", "resuming")
    if reports:
        ret["resumed"] = reports  # providers that measure it (libvirt): seconds, clock offsets, minion reconnect
    return ret


#: what a provider's resume may report (libvirt: the restore's seconds, the
#: guest clock offset before and after it was stepped, the step's seconds)
RESUME_REPORT = ("seconds", "clock_offset_before", "clock_offset_after", "clock_step_s")
#: seconds a resumed node's minion has, once the jobs run, to answer after
#: its provider reset its connections (it re-authenticated in about 4 s
#: under TCG) before the provider is asked to restart it, where it can
MINION_RECONNECT_GRACE = 15.0


def _resume_one(ctx, node, timeout):
    """Provider resume, the node's slurmd checked from the controller, its jobs resumed, then its minion.

    The jobs wait for Slurm's side only: the node's slurmd listening
    (the controller's SYN probe) and Slurm's ``scontrol resume``. Its
    minion, which vcluster needs to manage the node but no job needs, is
    waited for after that: a provider that can reset its connections to
    the master (libvirt: they came back looking open while the master's
    side ended or backed off) does so first, and restarts it if it is
    still silent ``MINION_RECONNECT_GRACE`` seconds later. A minion still silent at the
    deadline leaves the node ``ready`` and is reported (``minion_answered``
    None, the ``vcluster/node/<name>/minion-silent`` event), as liveness does.
    """
    name = node.name
    lifecycle.move(ctx, name, "resuming", expect="suspended")
    started = time.monotonic()
    deadline = started + float(timeout)
    provider = ctx.provider(node.provider)
    try:
        inst = provider.resume(node.instance_id)
        if inst is not None and getattr(inst, "host", None) and inst.host != node.host:
            ctx.registry.update(name, host=inst.host)
        report = {k: inst[k] for k in RESUME_REPORT if k in inst} if isinstance(inst, dict) else {}
        provider_done = round(time.monotonic() - started, 2)
        # one controller call: once slurmd listens, scontrol resume the
        # mapped jobs still suspended, then lift the drain if it is vcluster's
        minion_seen = _release_when_listening(ctx, name, deadline)
    except Exception as exc:
        lifecycle.move(ctx, name, "suspended", expect="resuming", reason=f"resume failed: {sentence(exc)}",
                       event={"reason": "resume failed"})
        raise
    ctx.registry.map_jobs(name, [])
    jobs_resumed = round(time.monotonic() - started, 2)
    answered = minion_seen or _minion_back(ctx, provider, node, report, deadline)
    if not answered:
        log.warning("%s resumed and its jobs with it, but its minion did not answer within the resume timeout",
                    name)
        lifecycle.announce(ctx, name, "minion-silent", reason="its minion did not answer after the resume")
    if report:  # providers that measure their resume (libvirt): when the jobs ran again, when the minion did
        report["provider_returned"] = provider_done
        report["jobs_resumed"] = jobs_resumed
        report["minion_answered"] = round(time.monotonic() - started, 2) if answered else None
    lifecycle.move(ctx, name, "ready", expect="resuming", event={"resumed": True, **report})
    return report


def _minion_back(ctx, provider, node, report, deadline):
    """True once the resumed node's minion is back: reset first and restarted once if silent, where the provider can.

    After the reset the minion reopens its connections and announces it
    with its start event (Salt fires ``salt/minion/<id>/start`` on a
    reconnection too): that event is waited for, not a probe, which a
    minion still reconnecting would miss and wait out.
    """
    if getattr(provider, "reconnect_minion", None) is None:
        return _wait_minion(ctx, node.name, deadline)
    with ctx.events.watch(f"salt/minion/{node.name}/start") as reconnected:
        reset = report["minion_reconnect"] = reset_minion(provider, node)
        grace = min(deadline, time.monotonic() + MINION_RECONNECT_GRACE)
        if reset.get("ok") and reset.get("connections") and reconnected(max(0.0, grace - time.monotonic())):
            return True
    # nothing was reset (no minion connection) or no start event within the grace: ask the minion itself
    if _wait_minion(ctx, node.name, grace):
        return True
    restart = getattr(provider, "restart_minion", None)
    if not (reset.get("ok") and restart) or time.monotonic() >= deadline:
        return _wait_minion(ctx, node.name, deadline)
    log.warning("%s: its minion did not come back within %.0f s of the reset of its connections; restarting it",
                node.name, MINION_RECONNECT_GRACE)
    report["minion_restart"] = restart(node.instance_id)
    return _wait_minion(ctx, node.name, deadline)


def reset_minion(provider, node):
    """Have ``provider`` reset a resumed node's minion connections to the master; its report, never raises.

    ``None`` when the provider has nothing to reset (its resume keeps the
    minion's connections); else ``{"ok", "seconds", "connections",
    "error"}`` (libvirt: ``LibvirtProvider.reconnect_minion``).
    """
    reconnect = getattr(provider, "reconnect_minion", None)
    if reconnect is None:
        return None
    try:
        return reconnect(node.instance_id)
    except Exception as exc:  # noqa: BLE001 - the node runs again: whatever its minion does, that stands
        log.warning("%s: its minion's connections could not be reset: %s", node.name, exc)
        return {"ok": False, "error": sentence(exc)}


#: seconds the first probe of a resumed node waits for its minion, doubled
#: after each miss up to the last: a minion still reconnecting misses the
#: publish altogether (a restored VM's restarted minion), so short waits find
#: it sooner, while a slow minion (TCG guest) still gets a long one
PROBE_WAITS = (3.0, 10.0)
#: seconds one controller call waits for a resumed node's slurmd before the runner looks at its deadline again
RELEASE_CALL_WAIT = 30.0


def _release_when_listening(ctx, name, deadline):
    """The node's jobs resumed and vcluster's drain lifted once its slurmd listens; or raise at ``deadline``.

    One controller call (``slurm.release_when_listening``: the SYN probe
    every 0.2 s, then ``release_node``) per :data:`RELEASE_CALL_WAIT`
    seconds. True when the node's minion was asked instead: a node Slurm
    does not probe (``skipped``, e.g. powered down, or one it does not
    know) or a controller that cannot probe (or release) falls back to
    asking the minion whether slurmd runs, then releases the node.
    """
    jobs = sorted(ctx.registry.jobs_on(name))
    last = "its slurmd did not answer the controller"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise VclusterError(f"{name} was resumed by its provider but {last} within the resume timeout")
        asked = time.monotonic()
        try:
            got = ctx.slurm.release_when_listening(name, jobs, DRAIN_REASON, wait=min(left, RELEASE_CALL_WAIT))
        except VclusterError as exc:
            log.warning("%s: the controller could not probe and release it (%s); asking its minion", name, exc)
            got = {"slurmd": "skipped", "released": None}
        if got.get("released") is not None:
            return False
        verdict = got.get("slurmd")
        if verdict in ("skipped", None):
            _wait_alive(ctx, name, deadline)
            ctx.slurm.release_node(name, jobs, DRAIN_REASON)
            return True
        last = f"its slurmd did not answer the controller ({verdict})"
        # a call that came back early is not repeated more than once a second
        time.sleep(min(max(0.0, 1.0 - (time.monotonic() - asked)), max(0.0, deadline - time.monotonic())))


def _wait_minion(ctx, name, deadline):
    """True once the node's minion answers a probe, False at ``deadline`` (never raises)."""
    try:
        _wait_alive(ctx, name, deadline, need_slurmd=False)
        return True
    except VclusterError:
        return False


def _wait_alive(ctx, name, deadline, need_slurmd=True):
    """Until the node's minion answers (and sees its slurmd run), or raise at ``deadline``."""
    last = "its minion did not answer"
    wait = PROBE_WAITS[0]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise VclusterError(f"{name} was resumed by its provider but {last} within the resume timeout")
        asked = time.monotonic()
        answers = ctx.salt.probe([name], min(left, wait))
        if name in answers:
            if answers[name] is not None or not need_slurmd:
                return
            last = "its slurmd is not running"
        else:
            wait = min(wait * 2, PROBE_WAITS[1])
        # poll at most once a second (a probe of an absent minion may return at once)
        time.sleep(min(max(0.0, 1.0 - (time.monotonic() - asked)), max(0.0, deadline - time.monotonic())))


def _quiet(func, *args):
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001 - rollback goes on
        log.warning("rollback step %s%r failed: %s", getattr(func, "__name__", func), args[1:], exc)
