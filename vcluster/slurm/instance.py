"""Slurm's cloud accounting of a virtual node: ``InstanceId``, ``InstanceType`` and ``Extra``.

From Slurm 23.11 a node carries ``InstanceId`` and ``InstanceType``
(``scontrol update``), which slurmctld sends, with ``Extra``, to slurmdbd;
``sacctmgr show instance`` lists them with the time each instance ran
(``versions.Release.instance_fields``). vcluster sets them when a virtual
node becomes ready and again after a migration (:func:`record`):

* ``InstanceId``: the provider's instance id (registry ``instance_id``);
* ``InstanceType``: the profile's ``flavor``, or its size as
  ``<cpus>cpu-<memory>mb`` (``2cpu-4096mb``) where it has none;
* ``Extra``: compact JSON ``{"host":...,"profile":...,"provider":...}``
  (keys sorted, no spaces): valid where ``SchedulerParameters=
  extra_constraints`` makes slurmctld refuse non-JSON Extra, and one word
  in ``scontrol show -o node``.

What Slurm does with them (read in SchedMD's source at slurm-24-11-5-1):

* a slurmd's first registration sends ``InstanceId=``/``InstanceType=`` of
  its ``--instance-id``/``--instance-type`` options, empty by default, and
  slurmctld then *clears* both (src/slurmd/slurmd/slurmd.c,
  ``_fill_registration_msg``; node_mgr.c ``validate_node_specs``).
  ``Extra`` is sent only with ``--extra``, so it stays. A slurmd restart
  after :func:`record` therefore empties the two fields in slurmctld;
  slurmdbd keeps what it had (see below);
* power-down clears both (node_mgr.c ``reset_node_instance``);
* slurmdbd stores them on the newest ``POWERED_DOWN`` event of the node
  (as_mysql_cluster.c ``as_mysql_node_update``), and ``sacctmgr show
  instance`` makes one instance of each powered-down event that has ended,
  from its end to the next power-down (``as_mysql_get_instances``). A node
  that never was ``POWERED_DOWN`` in the database (a dynamic node created
  ``State=FUTURE``, as vcluster's dynamic and static membership make them)
  has no such event: slurmctld's update reaches slurmdbd, which writes
  nothing that ``sacctmgr show instance`` lists, but adds a zero-length
  ``node-update`` event (``sacctmgr show event``) that also ends an open
  event of the node, such as its DRAIN (``as_mysql_node_down`` then
  ``as_mysql_node_up``); hence :func:`record`'s ``drained``. Cloud
  membership's nodes (``State=CLOUD``, powered down until Slurm resumes
  them) are listed.

The values go into slurmdbd's SQL unescaped (``extra='%s'``), so every
value is checked against :data:`_VALUE` before anything runs.
"""

import json
import logging
import re

from vcluster.errors import SlurmError

log = logging.getLogger(__name__)

#: What an instance id, type or Extra value may be: one word without quotes,
#: backslashes, ``=`` or white space (scontrol's ``-o`` output stays
#: parseable, slurmdbd's SQL stays intact), at most 128 characters.
_VALUE = re.compile(r"^[A-Za-z0-9._:@/+,-]{1,128}$")


def check_value(what, value):
    """``value`` as a string when it may be an instance field; SlurmError naming it otherwise."""
    text = "" if value is None else str(value)
    if not _VALUE.match(text):
        raise SlurmError(f"{what} {value!r} is invalid: use 1-128 letters, digits and . _ : @ / + , -")
    return text


def extra_json(**fields):
    """Compact JSON of ``fields`` (sorted keys, no spaces); None values left out; every value checked."""
    data = {check_value("Extra key", key): check_value(f"Extra {key}", value)
            for key, value in sorted(fields.items()) if value is not None}
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def parse_extra(text):
    """The dict of an ``Extra`` that :func:`extra_json` wrote; ``{}`` for an empty or foreign one."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def instance_type(profile):
    """``InstanceType`` of a policy profile: its ``flavor``, else ``<cpus>cpu-<memory>mb``."""
    flavor = getattr(profile, "flavor", None)
    if flavor:
        return str(flavor)
    return f"{int(profile.cpus)}cpu-{int(profile.memory)}mb"


def fields(node, profile):
    """``{"instance_id", "instance_type", "extra"}`` of registry row ``node`` and its policy ``profile``."""
    return {
        "instance_id": check_value("InstanceId", node.instance_id),
        "instance_type": check_value("InstanceType", instance_type(profile)),
        "extra": extra_json(provider=node.provider, host=node.host or None, profile=node.profile),
    }


def record(ctx, name, drained=False):
    """Set ``name``'s InstanceId, InstanceType and Extra in Slurm from its registry row; never raises.

    Returns True when Slurm took them, False otherwise: a release without
    the fields (before 23.11, logged at info) or any failure (a warning of
    one sentence; the node's join or migration goes on).

    ``drained``: the node is drained in Slurm (a suspended node being
    migrated). Then only a cloud-membership node is updated: for any other
    node slurmdbd would write a ``node-update`` event that ends the node's
    open DRAIN event in its accounting (``as_mysql_node_update`` on a node
    without a ``POWERED_DOWN`` event), and would list no instance of it
    anyway.
    """
    try:
        node = ctx.registry.get(name)
        if node is None or not node.instance_id:
            log.info("node %s has no instance; Slurm's instance fields are not set", name)
            return False
        mode = node.membership or ctx.policy.membership_of(node.profile)
        if drained and mode != "cloud":
            log.info("node %s is drained and of %s membership: its instance fields are left as they are "
                     "(slurmdbd would end its drain event)", name, mode)
            return False
        wanted = fields(node, ctx.policy.profiles[node.profile])
        ret = ctx.slurm.set_instance(name, **wanted)
    except Exception as exc:  # noqa: BLE001 - accounting must not fail a join or a migration
        log.warning("Slurm did not record the instance of node %s (sacctmgr show instance will not list "
                    "it): %s", name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return False
    if isinstance(ret, dict) and not ret.get("set", True):
        log.info("node %s: %s", name, ret.get("comment", "Slurm has no instance fields"))
        return False
    return True
