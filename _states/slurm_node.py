"""Slurm node states: resumed, drained, absent.

Run on the minion of the slurmctld host; they use the ``slurm`` execution
module.

.. code-block:: yaml

    vn1-drained:
      slurm_node.drained:
        - name: vn1
        - reason: vcluster retire

    vn1-gone:
      slurm_node.absent:
        - name: vn1
"""

from salt.exceptions import CommandExecutionError

from vcluster.slurm import states as _states

__virtualname__ = "slurm_node"

#: Flags (or base states) that a resume clears.
_RESUMABLE = ("DRAIN", "DOWN", "FAIL")


def __virtual__():
    if "slurm.nodes" in __salt__:
        return __virtualname__
    return (False, "slurm_node needs the slurm execution module")


def _show(node):
    return "+".join(node["state"]) if node else None


def _get(name, conf, ret):
    """The node dict, None when unknown, or False after filling ``ret`` with the error."""
    try:
        return __salt__["slurm.node"](name, conf=conf)
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return False


def resumed(name, conf=None):
    """
    Ensure the node takes work: clear DRAIN, DOWN or FAIL with ``scontrol update state=resume``.

    A node Slurm does not know, or a FUTURE node whose slurmd never
    registered, is a failure.

    name
        The node name.
    conf
        Optional slurm.conf path (default: config ``slurm:conf`` or Slurm's).
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    node = _get(name, conf, ret)
    if node is False:
        return ret
    if node is None:
        ret["comment"] = f"Slurm does not know node {name}"
        return ret
    words = node["state"]
    if not any(w in words for w in _RESUMABLE):
        # Nothing differs: the node is not drained, down or failed.
        ret["result"] = words[0] != "FUTURE"
        ret["comment"] = (f"node {name} is already resumed ({_show(node)})" if ret["result"]
                          else f"node {name} is FUTURE: its slurmd has not registered")
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = {"old": _show(node), "new": "resumed"}
        ret["comment"] = f"node {name} ({_show(node)}) would be resumed"
        return ret
    try:
        after = __salt__["slurm.update_node"](name, state="RESUME", conf=conf)
    except CommandExecutionError as exc:
        ret["comment"] = f"resuming node {name} failed: {exc}"
        return ret
    ret["result"] = True
    ret["changes"] = {"old": _show(node), "new": _show(after)}
    ret["comment"] = f"node {name} resumed"
    return ret


def drained(name, reason="vcluster", conf=None):
    """
    Ensure the node is drained (takes no new work) with ``reason``.

    Running jobs continue; the node shows DRAINING until they end, then
    DRAINED. A drained node with another reason gets the new reason.

    name
        The node name.
    reason
        Why, as Slurm shows it (``sinfo -R``).
    conf
        Optional slurm.conf path.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    node = _get(name, conf, ret)
    if node is False:
        return ret
    if node is None:
        ret["comment"] = f"Slurm does not know node {name}"
        return ret
    old = {"state": _show(node), "reason": node["reason"]}
    if "DRAIN" in node["state"] and node["reason"] == reason:
        # Nothing differs: drained already, with this reason.
        ret["result"] = True
        ret["comment"] = f"node {name} is already drained ({_show(node)}): {reason}"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = {"old": old, "new": {"state": "drained", "reason": reason}}
        ret["comment"] = f"node {name} ({_show(node)}) would be drained: {reason}"
        return ret
    try:
        after = __salt__["slurm.update_node"](name, state="DRAIN", reason=reason, conf=conf)
    except CommandExecutionError as exc:
        ret["comment"] = f"draining node {name} failed: {exc}"
        return ret
    ret["result"] = True
    ret["changes"] = {"old": old, "new": {"state": _show(after), "reason": (after or {}).get("reason")}}
    if after and _states.matches(after["state"], "DRAINED"):
        ret["comment"] = f"node {name} drained"
    else:
        ret["comment"] = f"node {name} is draining: jobs still run on it"
    return ret


def absent(name, conf=None):
    """
    Ensure Slurm no longer knows the (dynamic) node: ``scontrol delete nodename=``.

    Slurm refuses while jobs run on the node; drain it and let them end (or
    requeue them) first. A still-running ``slurmd -Z`` registers it again,
    so stop slurmd (or delete the instance) before.

    name
        The node name.
    conf
        Optional slurm.conf path.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    node = _get(name, conf, ret)
    if node is False:
        return ret
    if node is None:
        # Nothing differs: Slurm does not know the node.
        ret["result"] = True
        ret["comment"] = f"node {name} is already absent"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = {"old": _show(node), "new": None}
        ret["comment"] = f"node {name} ({_show(node)}) would be deleted"
        return ret
    try:
        __salt__["slurm.delete_node"](name, conf=conf)
    except CommandExecutionError as exc:
        ret["comment"] = f"deleting node {name} failed: {exc}"
        return ret
    ret["result"] = True
    ret["changes"] = {"old": _show(node), "new": None}
    ret["comment"] = f"node {name} deleted"
    return ret
