"""
External pillar: what the registry knows, for the state tree.

Every minion gets ``vcluster_nodes``: the virtual nodes with ``static`` or
``cloud`` membership that hold a place in Slurm (name -> address, cpus,
memory, features, partition, membership), rendered as NodeName lines.
Dynamic nodes register themselves and never appear there. A virtual node
also gets ``vcluster_self``.

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

#: Registry states in which a node belongs in slurm.conf.
IN_SLURM = ("joining", "ready", "draining", "suspending", "suspended", "resuming", "migrating")
#: Membership modes whose nodes are declared in slurm.conf.
DECLARED = ("static", "cloud")

try:
    from vcluster.registry import Registry

    HAS_LIB = True
except ImportError:  # pragma: no cover
    HAS_LIB = False


def __virtual__():
    if not HAS_LIB:
        return False, "the vcluster library is not importable"
    return __virtualname__


def ext_pillar(minion_id, pillar, registry=None):  # pylint: disable=unused-argument
    """Return ``vcluster_nodes`` and, for a virtual node, ``vcluster_self``."""
    if not registry or not os.path.exists(registry):
        return {}
    with Registry(registry) as reg:
        held = reg.nodes()
    nodes = {}
    me = None
    for node in held:
        entry = dict(node.attrs or {}, address=node.address, profile=node.profile, state=node.state)
        if node.name == minion_id:
            me = dict(entry, name=node.name)
        if node.state in IN_SLURM and node.membership in DECLARED:
            nodes[node.name] = entry
    ret = {"vcluster_nodes": nodes}
    if me is not None:
        ret["vcluster_self"] = me
    return ret
