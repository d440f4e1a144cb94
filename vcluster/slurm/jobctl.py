"""What :class:`vcluster.slurm.client.Slurm` does to jobs: suspend, requeue, submit, holds, reservations.

:class:`JobControl` is a part of the client class (a mixin: it runs its
commands with the client's :meth:`~vcluster.slurm.client.Slurm.run` and
reads nodes and jobs with its readers), kept apart from the node and
reading commands of :mod:`vcluster.slurm.client`. Every value is checked
before a command runs; a bad one is refused with one sentence naming it.

The command lines here are the same in every supported release (22.05 to
25.11, scontrol's man page at each tag); a release that differs would
choose through ``self.release`` (:mod:`vcluster.slurm.versions`), as
:meth:`~vcluster.slurm.client.Slurm.update_node` does for power saving.
"""

import logging
import re

from vcluster.errors import SlurmError
from vcluster.slurm import conf as _conf
from vcluster.slurm import hostlist

log = logging.getLogger(__name__)

#: Drain reason of a node vcluster holds (suspended with its jobs).
HOLD_REASON = "vcluster suspend"

#: Name of the reservation that holds a job's own nodes (autoscale's per-job nodes).
JOB_RESERVATION = "vcjob{job}"

#: A reservation name: what vcluster creates, and what Slurm shows of the others.
_RESERVATION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

#: A user name as squeue prints it (local, or ``user@domain`` from SSSD).
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


class JobControl:
    """The job commands of :class:`vcluster.slurm.client.Slurm` (see the module docstring)."""

    def suspend_job(self, job_id):
        """``scontrol suspend JOB``: stop the job's processes (SIGSTOP); its node shows idle."""
        self.run("scontrol", "suspend", _job_id(job_id))
        return True

    def resume_job(self, job_id):
        """``scontrol resume JOB``: continue a suspended job."""
        self.run("scontrol", "resume", _job_id(job_id))
        return True

    # -- suspend and resume of a node with its jobs (one call each for vcluster) --

    def hold_node(self, name, jobs=(), reason=HOLD_REASON):
        """Drain node ``name`` with ``reason`` and suspend ``jobs`` on it; all or nothing.

        A drain with another reason (an admin's) is left as it is and not
        lifted later. Returns ``{"drained": bool, "suspended": [job ids]}``.
        When a step fails, the jobs this call suspended are resumed and the
        drain it set is lifted before the error is raised.
        """
        _conf.validate_name(name)
        ids = [_job_id(j) for j in jobs]
        node = self.node(name)
        if node is None:
            raise SlurmError(f"node {name} is not known to Slurm")
        foreign = "DRAIN" in node.state and node.reason not in ("", reason)
        drained, done = False, []
        try:
            if not foreign:
                self._update_node(name, "DRAIN", reason)
                drained = True
            for job_id in ids:
                self.suspend_job(job_id)
                done.append(job_id)
        except SlurmError:
            for job_id in done:
                _quiet(self.resume_job, job_id)
            if drained:
                _quiet(self._update_node, name, "RESUME")
            raise
        return {"drained": drained, "suspended": done}

    def release_node(self, name, jobs=(), reason=HOLD_REASON):
        """Resume those of ``jobs`` that are suspended, then lift a drain that carries ``reason``.

        The undoing of :meth:`hold_node`. Returns ``{"resumed": [job ids],
        "undrained": bool}``; a job Slurm no longer knows is skipped.
        """
        _conf.validate_name(name)
        ids = [_job_id(j) for j in jobs]
        resumed = []
        for job_id in ids:
            job = self.job(job_id)
            if job is not None and job.state == "SUSPENDED":
                self.resume_job(job_id)
                resumed.append(job_id)
        node = self.node(name)
        undrain = node is not None and "DRAIN" in node.state and node.reason == reason
        if undrain:
            self._update_node(name, "RESUME")
        return {"resumed": resumed, "undrained": undrain}

    def requeue(self, job_id, hold=False):
        """``scontrol requeue[hold] JOB``: kill the job and put it back in the queue."""
        self.run("scontrol", "requeuehold" if hold else "requeue", _job_id(job_id))
        return True

    def submit(self, script=None, wrap=None, **options):
        """``sbatch --parsable``; return the new job id.

        ``options`` become long options: ``nodelist='vn1'`` -> ``--nodelist=vn1``,
        ``hold=True`` -> ``--hold``. Give exactly one of ``script`` (its text)
        and ``wrap`` (a command line).
        """
        if (script is None) == (wrap is None):
            raise SlurmError("submit needs exactly one of script and wrap")
        argv = ["sbatch", "--parsable"]
        for key, value in sorted(options.items()):
            if value is None or value is False:
                continue
            flag = "--" + key.replace("_", "-")
            argv.append(flag if value is True else f"{flag}={value}")
        if wrap is not None:
            argv += ["--wrap", wrap]
            _, out, _ = self.run(*argv)
        else:
            _, out, _ = self.run(*argv, stdin=script)
        try:
            return int(out.strip().split(";")[0])
        except ValueError:
            raise SlurmError(f"sbatch printed no job id: {out.strip()[:80]!r}") from None

    # -- per-job nodes: a reservation for one job ----------------------------------

    def reserve_for_job(self, job_id, nodes, user):
        """Give the held job ``job_id`` the nodes ``nodes`` for itself, then release it.

        Three commands, in this order: ``scontrol create reservation
        ReservationName=vcjob<ID> Nodes=<nodes> StartTime=now
        Duration=infinite Users=<user> Flags=IGNORE_JOBS``, ``scontrol
        update JobId=<ID> ReservationName=vcjob<ID> ReqNodeList=<nodes>``,
        ``scontrol release <ID>``. A failing step raises SlurmError and the
        steps before it stay: the caller remembers the job's nodes and
        removes them and the reservation (:meth:`delete_reservation`) when
        the job has ended. Returns ``{"reservation": name, "nodes": [...]}``.
        """
        job = _job_id(job_id)
        names = _node_names(nodes)
        if not isinstance(user, str) or not _USER.match(user):
            raise SlurmError(f"user {user!r} is invalid: use a user name of letters, digits, '_', '.', '@' or '-'")
        name = job_reservation(job)
        listed = ",".join(names)
        self.run("scontrol", "create", "reservation", f"ReservationName={name}", f"Nodes={listed}",
                 "StartTime=now", "Duration=infinite", f"Users={user}", "Flags=IGNORE_JOBS")
        self.run("scontrol", "update", f"JobId={job}", f"ReservationName={name}", f"ReqNodeList={listed}")
        self.run("scontrol", "release", job)
        return {"reservation": name, "nodes": names}

    def delete_reservation(self, name):
        """``scontrol delete ReservationName=NAME``; SlurmError (Slurm's words) when it fails."""
        if not isinstance(name, str) or not _RESERVATION.match(name):
            raise SlurmError(f"reservation name {name!r} is invalid: use up to 64 letters, digits, '_', '.' or '-'")
        self.run("scontrol", "delete", f"ReservationName={name}")
        return True


def job_reservation(job_id):
    """The name of job ``job_id``'s own reservation (:data:`JOB_RESERVATION`)."""
    return JOB_RESERVATION.format(job=_job_id(job_id))


def _node_names(nodes):
    """Node names from a list, a comma list or a hostlist; SlurmError for none or a bad one."""
    names = hostlist.expand(nodes) if isinstance(nodes, (str, list, tuple)) else None
    if not names:
        raise SlurmError(f"nodes {nodes!r} is invalid: give at least one node name (a list or a hostlist)")
    for name in names:
        _conf.validate_name(name)
    return names


def _job_id(job_id):
    text = str(job_id).strip()
    main, _, task = text.partition("_")
    if not main.isdigit() or (task and not task.isdigit()):
        raise SlurmError(f"job id {job_id!r} is invalid: use a number such as 42 or 42_3")
    return text


def _quiet(step, *args):
    """Run one undo step; a failure is logged, the undo goes on."""
    try:
        step(*args)
    except SlurmError as exc:
        log.warning("undo step %s%r failed: %s", step.__name__, args, exc)
