"""Slurm controller operations, for the minion of the slurmctld host.

A thin adapter over :class:`vcluster.slurm.client.Slurm`: every function
returns plain dicts/lists and raises ``CommandExecutionError`` with the Slurm
command's own message when it fails.

Configuration (minion config, grains or pillar, read with ``config.get``):

.. code-block:: yaml

    slurm:
      conf: /etc/slurm/slurm.conf   # optional: a non-default SLURM_CONF

Every function also takes ``conf=`` to override it for one call.
"""

import contextlib
import logging

import salt.utils.path
from salt.exceptions import CommandExecutionError

from vcluster.errors import SlurmError
from vcluster.slurm import client as _client
from vcluster.slurm import states as _states

log = logging.getLogger(__name__)

__virtualname__ = "slurm"


def __virtual__():
    if salt.utils.path.which("scontrol") is None:
        return (False, "the slurm module needs Slurm's scontrol on PATH")
    return __virtualname__


def _slurm(conf=None):
    """A client whose Slurm release is read once per ``__context__`` (``scontrol --version``).

    An unsupported release raises SlurmError (one sentence) here, at the
    first call, before any other command runs.
    """
    if conf is None:
        conf = __salt__["config.get"]("slurm:conf", None) or None
    known = __context__.setdefault("vcluster.slurm.release", {})
    client = _client.Slurm(conf=conf, release=known.get(conf or ""))
    known[conf or ""] = client.release
    return client


@contextlib.contextmanager
def _errors():
    try:
        yield
    except SlurmError as exc:
        raise CommandExecutionError(str(exc)) from exc


def version(conf=None):
    """
    The Slurm release of the controller's commands and what vcluster chooses for it.

    Returns ``{"version": "24.11.5", "series": "24.11", ...}`` with the row of
    ``vcluster.slurm.versions.RELEASES`` (data_parser, output shapes and the
    behaviour columns, see docs/slurm-versions.md). An unsupported release
    fails with one sentence naming it and the supported ones.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.version
    """
    with _errors():
        client = _slurm(conf)
        return {"version": client.version(), **client.release.to_dict()}


def nodes(names=None, conf=None):
    """
    List Slurm nodes (FUTURE ones included) as dicts.

    names
        Optional hostlist (``vn[1-4],gpu1``) to restrict the listing.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.nodes
        salt ctl slurm.nodes names='vn[1-4]'
    """
    with _errors():
        return [n.to_dict() for n in _slurm(conf).nodes(names)]


def liveness_scan(nodes, wait=2, conf=None):  # pylint: disable=redefined-outer-name
    """
    Slurm's view of ``nodes`` and whether their slurmd listens, in one call.

    For vcluster's liveness check (master side): one ``scontrol show node``
    and a TCP SYN probe (no connection reaches slurmd, nothing in its log)
    of every named node at once from this host, the controller.

    nodes
        Hostlist (or comma-separated names) to look at; names Slurm does not
        know are left out.

    wait
        Seconds to wait for the silent ones (default 2).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.liveness_scan nodes='vn[1-4],gpu1'
    """
    wait = _seconds(wait, 60)
    with _errors():
        scan = _slurm(conf).liveness_scan(nodes, wait)
    return {"nodes": [n.to_dict() for n in scan["nodes"]], "slurmd": scan["slurmd"]}


def node(name, conf=None):
    """
    Show one node as a dict, or None when Slurm does not know it.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.node vn1
    """
    with _errors():
        found = _slurm(conf).node(name)
    return found.to_dict() if found else None


def jobs(nodes=None, states=None, conf=None):  # pylint: disable=redefined-outer-name
    """
    List jobs (from ``squeue --json``) as dicts.

    nodes
        Only jobs on these nodes (hostlist, comma list or list); squeue
        then prints only their lines (``--nodelist``, text form).
    states
        Only jobs in these states (``RUNNING,SUSPENDED`` or a list).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.jobs
        salt ctl slurm.jobs nodes='vn[1-2]' states=RUNNING,SUSPENDED
    """
    with _errors():
        return [j.to_dict() for j in _slurm(conf).jobs(nodes=nodes, states=states)]


def job(jobid, conf=None):
    """
    Show one job as a dict, or None when Slurm does not know it.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.job 42
    """
    with _errors():
        found = _slurm(conf).job(jobid)
    return found.to_dict() if found else None


def job_count(nodes=None, states=None, conf=None):  # pylint: disable=redefined-outer-name
    """
    Count jobs, by default the live ones (pending, running, suspended...).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.job_count
        salt ctl slurm.job_count nodes=vn1 states=RUNNING
    """
    with _errors():
        return _slurm(conf).job_count(nodes=nodes, states=states or _states.JOB_NOT_DONE)


def partitions(conf=None):
    """
    List partitions as dicts.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.partitions
    """
    with _errors():
        return [p.to_dict() for p in _slurm(conf).partitions()]


def create_node(name, spec=None, node_conf=None, addr=None, state="FUTURE", conf=None):
    """
    Create a dynamic node with ``scontrol create`` (``State=FUTURE`` by default).

    A later ``slurmd -Z -N NAME`` on the node brings it to IDLE; without
    ``addr`` Slurm reaches the node by its name. Fails if the node exists.

    spec
        Resources: ``{"cpus": 2, "memory": 2048, "features": [...], "gres": "gpu:1"}``.
    node_conf
        Or a ``Key=Value`` string: ``"CPUs=2 RealMemory=2048 Feature=virtual"``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.create_node vn7 addr=10.77.0.107 node_conf='CPUs=1 RealMemory=1024 Feature=virtual'
        salt ctl slurm.create_node vn7 spec='{cpus: 1, memory: 1024}'
    """
    with _errors():
        return _slurm(conf).create_node(name, spec=spec, conf=node_conf, addr=addr, state=state).to_dict()


def delete_node(name, conf=None):
    """
    Delete a dynamic node (``scontrol delete nodename=``); it must run no job.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.delete_node vn7
    """
    with _errors():
        return _slurm(conf).delete_node(name)


def update_node(name, state=None, reason=None, conf=None):
    """
    Change a node's state (RESUME, DRAIN, UNDRAIN, DOWN, IDLE, FUTURE, FAIL...).

    DRAIN, DOWN and FAIL need a ``reason``. Returns the node afterwards.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.update_node vn1 state=drain reason='vcluster retire'
        salt ctl slurm.update_node vn1 state=resume
    """
    with _errors():
        found = _slurm(conf).update_node(name, state=state, reason=reason)
    return found.to_dict() if found else None


def update_node_addr(name, address, conf=None):
    """
    Change the address slurmctld reaches a node at (``scontrol update nodename= nodeaddr=``).

    For a node that moved (vcluster's migrate gives it a new address).
    ``address`` is an IP address or a host name; anything else is refused
    with one sentence before the command runs. Returns True.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.update_node_addr vn1 10.77.0.121
    """
    with _errors():
        return _slurm(conf).update_node_addr(name, address)


def set_instance(name, instance_id, instance_type, extra=None, conf=None):
    """
    Record a node's cloud instance in Slurm: ``InstanceId``, ``InstanceType`` and ``Extra``.

    One ``scontrol update``; slurmctld sends the three to slurmdbd, where
    ``sacctmgr show instance`` lists them (Slurm 23.11 and later). On an
    older Slurm nothing runs and the return says why:
    ``{"set": False, "comment": "..."}``; otherwise ``{"set": True,
    "node": {...}}`` with the node as Slurm shows it afterwards. Values are
    letters, digits and ``. _ : @ / + , -``; ``extra`` is compact JSON
    (``{"host":"h1","profile":"small","provider":"lxd"}``) or a dict.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.set_instance vn1 vcluster-vn1 2cpu-4096mb extra='{"host":"h1","provider":"lxd"}'
    """
    with _errors():
        client = _slurm(conf)
        release = client.release
        if not release.instance_fields:
            return {"set": False, "comment": f"Slurm {release.series} has no InstanceId or InstanceType on "
                                             "nodes (23.11 and later); not recorded"}
        found = client.set_instance(name, instance_id, instance_type, extra=extra)
    return {"set": True, "node": found.to_dict() if found else None}


def wait_node_state(name, states, timeout=60, interval=0.5, conf=None):
    """
    Wait until a node is in one of ``states``; return its state words.

    ``IDLE`` does not match ``IDLE+DRAIN`` unless DRAIN is wanted too;
    ``DRAINED``, ``DRAINING`` and ``ABSENT`` (node gone) are understood.
    Fails at ``timeout`` seconds, naming the last state seen.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.wait_node_state vn1 IDLE,MIXED timeout=120
        salt ctl slurm.wait_node_state vn1 DRAINED
    """
    with _errors():
        return _slurm(conf).wait_node_state(name, states, timeout=float(timeout), interval=float(interval))


def reconfigure(conf=None):
    """
    Tell slurmctld and every slurmd to re-read slurm.conf.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.reconfigure
    """
    with _errors():
        return _slurm(conf).reconfigure()


def suspend_job(jobid, conf=None):
    """
    Suspend a running job (its node then shows IDLE: drain it too).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.suspend_job 42
    """
    with _errors():
        return _slurm(conf).suspend_job(jobid)


def resume_job(jobid, conf=None):
    """
    Resume a suspended job.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.resume_job 42
    """
    with _errors():
        return _slurm(conf).resume_job(jobid)


def hold_node(name, jobs=None, reason=_client.HOLD_REASON, conf=None):
    """
    Drain a node and suspend the given jobs on it, all or nothing.

    vcluster's suspend in one call: a drain with another reason (an
    admin's) is kept as it is; when a step fails, what this call did is
    undone before the error. Returns ``{"drained": bool, "suspended": [...]}``.

    jobs
        Comma-separated job ids (or a list) to suspend.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.hold_node vn1 jobs=42,43
    """
    with _errors():
        return _slurm(conf).hold_node(name, jobs=_ids(jobs), reason=reason)


def release_node(name, jobs=None, reason=_client.HOLD_REASON, conf=None):
    """
    Resume the given jobs where they are suspended, then lift a drain set with ``reason``.

    The undoing of ``slurm.hold_node``. Returns ``{"resumed": [...], "undrained": bool}``.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.release_node vn1 jobs=42,43
    """
    with _errors():
        return _slurm(conf).release_node(name, jobs=_ids(jobs), reason=reason)


def release_when_listening(name, jobs=None, reason=_client.HOLD_REASON, wait=30, conf=None):
    """
    Wait until a resumed node's slurmd answers this host's SYN probe, then ``slurm.release_node`` it.

    vcluster's resume of a node in one call: the probe every 0.2 s for up
    to ``wait`` seconds, then its jobs resumed and vcluster's drain lifted.
    Returns ``{"slurmd": verdict, "waited": seconds, "released": {...} or
    None}``; nothing is touched unless the verdict is ``listening``.

    wait
        Seconds to wait for slurmd (more than 0, at most 120; default 30).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.release_when_listening vn1 jobs=42,43 wait=10
    """
    wait = _seconds(wait, 120)
    with _errors():
        return _slurm(conf).release_when_listening(name, jobs=_ids(jobs), reason=reason, wait=wait)


def _seconds(wait, most):
    """``wait`` as seconds, more than 0 and at most ``most``; CommandExecutionError naming it otherwise."""
    try:
        wait = float(wait)
    except (TypeError, ValueError):
        raise CommandExecutionError(f"wait must be a number of seconds, got {wait!r}") from None
    if not 0 < wait <= most:
        raise CommandExecutionError(f"wait must be more than 0 and at most {most} seconds, got {wait!r}")
    return wait


def _ids(jobs):
    if jobs is None or jobs == "":
        return []
    if isinstance(jobs, (str, int)):
        return [j.strip() for j in str(jobs).split(",") if j.strip()]
    return [str(j) for j in jobs]


def reserve_for_job(jobid, nodes, user, conf=None):  # pylint: disable=redefined-outer-name
    """
    Give a held job nodes of its own: a reservation on ``nodes`` for ``user``, the job moved into it and released.

    vcluster's per-job nodes (autoscale) in one call: ``scontrol create
    reservation ReservationName=vcjob<jobid>`` (``StartTime=now
    Duration=infinite Flags=IGNORE_JOBS``), ``scontrol update JobId=<jobid>
    ReservationName=vcjob<jobid> ReqNodeList=<nodes>``, ``scontrol release
    <jobid>``. A failing step stops the call with Slurm's words; the steps
    before it stay. Returns ``{"reservation": "vcjob<jobid>", "nodes": [...]}``.

    jobid
        The held job (``42`` or an array task ``42_3``).
    nodes
        Comma-separated names, a hostlist or a list; at least one.
    user
        The job's user (the only one the reservation admits).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.reserve_for_job 42 nodes=vn7,vn8 user=alice
    """
    with _errors():
        return _slurm(conf).reserve_for_job(jobid, nodes, user)


def delete_reservation(name, conf=None):
    """
    Delete a reservation (``scontrol delete ReservationName=``); fails with Slurm's words if it does not exist.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.delete_reservation vcjob42
    """
    with _errors():
        return _slurm(conf).delete_reservation(name)


def requeue(jobid, hold=False, conf=None):
    """
    Requeue a job (it is killed and pending again); ``hold=True`` also holds it.

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.requeue 42
    """
    with _errors():
        return _slurm(conf).requeue(jobid, hold=hold)


def submit(script=None, wrap=None, conf=None, **options):
    """
    Submit a batch job with sbatch; return its id.

    Options become sbatch long options (``nodelist=vn1`` -> ``--nodelist=vn1``,
    ``hold=True`` -> ``--hold``). Give ``script`` (text) or ``wrap`` (command).

    CLI Example:

    .. code-block:: bash

        salt ctl slurm.submit wrap='sleep 60' nodelist=vn1 job_name=probe
    """
    options = {k: v for k, v in options.items() if not k.startswith("__")}
    with _errors():
        return _slurm(conf).submit(script=script, wrap=wrap, **options)
