"""The Slurm releases vcluster supports, and what differs between them.

One table, :data:`RELEASES`, says for each supported release series (22.05
... 25.11) what shape its client commands print and which behaviour
vcluster must choose for it. Everything that depends on the Slurm version
reads it from here, through :func:`release` (from a version string such as
``scontrol --version`` prints). docs/slurm-versions.md is the same table for
people, with the sources of each entry.

Sources: output captured from real 22.05.8 (Debian 12) and 24.11.5 (Debian
13) controllers (tests/unit/data/slurm/), and for the other releases
SchedMD's source at the release tags: ``src/plugins/data_parser/v0.0.*/
parsers.c``, ``src/squeue/squeue.c``, ``src/sinfo/sinfo.c``, the man pages
and CHANGELOG/slurm-*.md.
"""

import dataclasses
import re

from vcluster.errors import SlurmError

#: ``slurm 24.11.5``, ``slurm-wlm 22.05.8``, ``slurm 25.11.0-0rc1``, or a bare ``24.11.5``.
_VERSION = re.compile(r"^(?:slurm(?:-wlm)?\s+)?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<micro>\d+))?(?P<rest>\S*)$")


@dataclasses.dataclass(frozen=True)
class Release:
    """What one Slurm release series prints and how vcluster drives it.

    Output shapes (parsers):

    * ``data_parser``: the data_parser plugin ``squeue/sinfo --json`` use.
    * ``job_state_list``: ``job_state`` is a list of words (``["RUNNING"]``,
      ``["PENDING", "REQUEUED"]``), not one string.
    * ``number_objects``: numbers such as ``priority`` and ``cpus`` come as
      ``{"set", "infinite", "number"}`` objects.
    * ``sinfo_key``: the top-level list of ``sinfo --json``: ``nodes`` (one
      record per node) or ``sinfo`` (one record per node group and partition).
    * ``squeue_json_filters``: ``squeue --json`` applies squeue's filters
      (by default: no finished jobs); before 24.05 it lists every job.

    Behaviour (commands and configuration):

    * ``reconfigure_changes_nodes``: ``scontrol reconfigure`` starts new
      daemons that read a changed node list; before 23.11 adding or removing
      a ``NodeName`` line needs a slurmctld restart.
    * ``cloud_reg_addrs``: ``SlurmctldParameters=cloud_reg_addrs`` is needed
      for cloud nodes to register their address (before 23.11); from 23.11
      it is the default, and slurmctld logs an error ("defunct, please
      remove it") at start when the word is set, then ignores it.
    * ``node_aliases``: jobs on cloud nodes get ``SLURM_NODE_ALIASES`` (before 23.11).
    * ``power_command``: ``scontrol power up|down [asap|force] NODES`` (24.05+);
      before, ``scontrol update nodename=X state=POWER_UP|POWER_DOWN...``.
    * ``suspend_exc_states``: ``SuspendExcStates`` exists (23.02+).
    * ``requeue_on_resume_failure``: ``SchedulerParameters=requeue_on_resume_failure`` (25.05+).
    * ``prolog_power_wait``: the PrologSlurmctld waits for powering-up nodes,
      so a job does not stay CONFIGURING until the next 30 s check (measured
      on 22.05; kept on later releases, where no change to it is recorded).
    * ``instance_fields``: nodes have ``InstanceId`` and ``InstanceType``
      (``scontrol update``, ``slurmd --instance-id``), which slurmctld sends
      to slurmdbd for ``sacctmgr show instance`` (23.11+). ``Extra`` is older
      (22.05 has it) but only reaches the database with them.
    * ``slurmd_notify``: SchedMD's ``slurmd.service`` is ``Type=notify``
      (``slurmd --systemd``, 23.11+; Debian 13 ships it so): ``systemctl
      start slurmd`` returns once slurmd has its configuration, so a
      configless slurmd whose controller does not answer holds its start
      job until systemd's start timeout (salt/slurm/compute.sls bounds it).

    ``tested``: ``captured`` (real output in the unit fixtures) or ``schema``
    (fixtures written from SchedMD's data_parser source).
    """

    series: str
    data_parser: str
    job_state_list: bool
    number_objects: bool
    sinfo_key: str
    squeue_json_filters: bool
    reconfigure_changes_nodes: bool
    cloud_reg_addrs: bool
    node_aliases: bool
    power_command: bool
    suspend_exc_states: bool
    requeue_on_resume_failure: bool
    prolog_power_wait: bool
    instance_fields: bool
    slurmd_notify: bool
    tested: str

    @property
    def key(self):
        """``(major, minor)`` for comparisons."""
        major, minor = self.series.split(".")
        return int(major), int(minor)

    def to_dict(self):
        """Plain dict (Salt return)."""
        return dataclasses.asdict(self)


def _r(series, parser, tested, *flags):
    (job_list, objects, sinfo_key, filters, reconf, reg_addrs, aliases, power, exc, requeue, wait, inst,
     notify) = flags
    return Release(series, parser, job_list, objects, sinfo_key, filters, reconf, reg_addrs, aliases,
                   power, exc, requeue, wait, inst, notify, tested)


#: The supported releases. Columns after ``tested`` in the order of :class:`Release`:
#: job_state_list, number_objects, sinfo_key, squeue_json_filters,
#: reconfigure_changes_nodes, cloud_reg_addrs, node_aliases, power_command,
#: suspend_exc_states, requeue_on_resume_failure, prolog_power_wait, instance_fields, slurmd_notify.
#: salt/slurm/releases.yaml is the same table for the state tree (tests/unit/test_state_releases.py).
RELEASES = {r.series: r for r in (
    #   series   parser     tested      list   obj    sinfo     filt   reconf regadr alias  power  exc    requeue wait  inst  notify
    _r("22.05", "v0.0.38", "captured", False, False, "nodes", False, False, True,  True,  False, False, False, True, False, False),
    _r("23.02", "v0.0.39", "schema",   False, True,  "sinfo", False, False, True,  True,  False, True,  False, True, False, False),
    _r("23.11", "v0.0.40", "schema",   True,  True,  "sinfo", False, True,  False, False, False, True,  False, True, True, True),
    _r("24.05", "v0.0.41", "schema",   True,  True,  "sinfo", True,  True,  False, False, True,  True,  False, True, True, True),
    _r("24.11", "v0.0.42", "captured", True,  True,  "sinfo", True,  True,  False, False, True,  True,  False, True, True, True),
    _r("25.05", "v0.0.43", "schema",   True,  True,  "sinfo", True,  True,  False, False, True,  True,  True,  True, True, True),
    _r("25.11", "v0.0.44", "schema",   True,  True,  "sinfo", True,  True,  False, False, True,  True,  True,  True, True, True),
)}

#: The release series the parsers were first written for (and the default of
#: parsers called without a release: their output shape is detected).
OLDEST = "22.05"


def supported():
    """``'22.05, 23.02, ... and 25.11'`` for messages."""
    names = list(RELEASES)
    return ", ".join(names[:-1]) + " and " + names[-1]


def parse_version(text):
    """``(major, minor, micro)`` of ``scontrol --version`` output; SlurmError if it is not one."""
    line = next((ln.strip() for ln in str(text or "").splitlines() if ln.strip()), "")
    match = _VERSION.match(line)
    if not match:
        raise SlurmError(f"cannot read a Slurm version from {line[:80]!r}")
    return int(match.group("major")), int(match.group("minor")), int(match.group("micro") or 0)


def release(version):
    """The :class:`Release` of ``version`` (``'slurm 24.11.5'``, ``'24.11.5'``, ``'24.11'``).

    An unsupported version raises SlurmError with one sentence that names it
    and the supported ones.
    """
    if isinstance(version, Release):
        return version
    major, minor, micro = parse_version(version)
    series = f"{major:02d}.{minor:02d}"
    found = RELEASES.get(series)
    if found is None:
        raise SlurmError(f"Slurm {major}.{minor:02d}.{micro} is not supported: vcluster supports "
                         f"{supported()} (see docs/slurm-versions.md)")
    return found


def detect_json(data):
    """The :class:`Release` that printed a parsed ``squeue``/``sinfo --json`` document, or None.

    Reads ``meta.slurm.release`` (23.11+), ``meta.Slurm.release`` (22.05,
    23.02) or the version numbers beside it.
    """
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        return None
    slurm = meta.get("slurm") or meta.get("Slurm")
    if not isinstance(slurm, dict):
        return None
    text = slurm.get("release")
    if not text and isinstance(slurm.get("version"), dict):
        ver = slurm["version"]
        text = f"{ver.get('major')}.{ver.get('minor')}.{ver.get('micro') or 0}"
    if not text:
        return None
    major, minor, micro = parse_version(str(text))
    return release(f"{major}.{minor}.{micro}")
