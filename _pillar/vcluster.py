"""
External pillar: what the registry knows, for the state tree.

Every minion gets ``vcluster_nodes``: the virtual nodes with ``static`` or
``cloud`` membership that hold a place in Slurm (name -> address, cpus,
memory, features, partition, membership), rendered as NodeName lines.
Dynamic nodes register themselves and never appear there. A virtual node
also gets ``vcluster_self``.

The slurmctld host (the minion the policy names as ``vcluster:controller``,
which holds the full policy) also gets ``vcluster_cloud``: every name of every cloud-membership pool,
declared up front as ``State=CLOUD`` (one hostlist per profile with its
sizes, features and partition) and the power-saving settings, taken from
the validated policy. An invalid policy gives ``vcluster_cloud: {error:
<one sentence>}`` and the slurm states fail with that sentence.

Master configuration:

.. code-block:: yaml

    ext_pillar:
      - vcluster:
          registry: /var/lib/vcluster/registry.sqlite
"""

import logging
import os

log = logging.getLogger(__name__)

__virtualname__ = "vcluster"

#: Membership modes whose nodes are declared in slurm.conf.
DECLARED = ("static", "cloud")

try:
    from vcluster.nodestates import IN_SLURM  # registry states in which a node belongs in slurm.conf
    from vcluster.registry import Registry

    HAS_LIB = True
except ImportError:  # pragma: no cover
    HAS_LIB = False


def __virtual__():
    if not HAS_LIB:
        return False, "the vcluster library is not importable"
    return __virtualname__


def cloud_pillar(data):
    """``vcluster_cloud`` from the policy pillar; None without cloud profiles."""
    # Cluster nodes get the site pillar's few vcluster keys (controller,
    # master...); only a full policy (master, controller) has profiles.
    if not data or "profiles" not in data:
        return None
    from vcluster import policy as _policy
    from vcluster.errors import PolicyError

    try:
        pol = _policy.load(data)
    except PolicyError as exc:
        return {"error": str(exc)}
    import hostlist

    profiles = {}
    for prof in sorted(pol.profiles.values(), key=lambda p: p.name):
        if prof.membership != "cloud":
            continue
        profiles[prof.name] = {
            "nodes": hostlist.collect_hostlist(list(pol.pools[prof.pool].names)),
            "cpus": prof.cpus,
            "memory": prof.memory,
            "features": list(prof.features),
            "partition": prof.partition,
            "resume_timeout": prof.resume_timeout,
        }
    if not profiles:
        return None
    ps = pol.power_save
    return {
        "profiles": profiles,
        "power_save": {
            "suspend_time": ps.suspend_time,
            "suspend_timeout": ps.suspend_timeout,
            "resume_timeout": ps.resume_timeout,
            "resume_rate": ps.resume_rate,
            "suspend_rate": ps.suspend_rate,
            "exclude_nodes": hostlist.collect_hostlist(list(ps.exclude_nodes)) if ps.exclude_nodes else "",
            "exclude_partitions": list(ps.exclude_partitions),
        },
    }


def ext_pillar(minion_id, pillar, registry=None):  # pylint: disable=unused-argument
    """Return ``vcluster_nodes`` and, for a virtual node, ``vcluster_self``."""
    if not registry or not os.path.exists(registry):
        held = []
    else:
        with Registry(registry) as reg:
            held = reg.nodes()
    nodes = {}
    me = None
    for node in held:
        entry = dict(node.attrs or {}, address=node.address, profile=node.profile, state=node.state)
        if node.name == minion_id:
            # instance_id once the provider gave one: the node's slurmd registers it on
            # Slurm 23.11+ (salt/slurm/compute.sls --instance-id), instance_type is in attrs
            me = dict(entry, name=node.name, **({"instance_id": node.instance_id} if node.instance_id else {}))
        if node.state in IN_SLURM and node.membership in DECLARED:
            nodes[node.name] = entry
    ret = {"vcluster_nodes": nodes}
    policy = (pillar or {}).get("vcluster")
    # Only the controller renders the power-saving settings; other minions
    # may see a few vcluster keys of the site pillar, never the full policy.
    is_controller = isinstance(policy, dict) and policy.get("controller") == minion_id
    cloud = cloud_pillar(policy) if is_controller else None
    if cloud is not None:
        ret["vcluster_cloud"] = cloud
    if me is not None:
        ret["vcluster_self"] = me
    return ret
