"""What a Nova server says, in vcluster's words: status, tags, metadata, batch identity.

Pure functions of openstacksdk ``Server`` objects (or anything with the
same attributes) and :class:`~vcluster.providers.base.InstanceSpec`; no
API calls.
"""

import hashlib
import re

from vcluster.providers.base import TAG_KEYS, Instance, Status

META_PREFIX = "vcluster_"
TAG_ALL = "vcluster"

NOVA_STATUS = {
    "BUILD": Status.BUILDING,
    "ACTIVE": Status.RUNNING,
    "SUSPENDED": Status.SUSPENDED,
    "PAUSED": Status.PAUSED,
    "SHELVED": Status.SHELVED,
    "SHELVED_OFFLOADED": Status.SHELVED,
    "SHUTOFF": Status.STOPPED,
    "STOPPED": Status.STOPPED,
    "MIGRATING": Status.MIGRATING,
    "RESIZE": Status.MIGRATING,
    "VERIFY_RESIZE": Status.MIGRATING,
    "REVERT_RESIZE": Status.MIGRATING,
    "ERROR": Status.ERROR,
    "DELETED": Status.DELETED,
    "SOFT_DELETED": Status.DELETED,
}


def tag_cluster(cluster):
    """Server tag naming the cluster (Nova tags: at most 60 characters, no ',' or '/')."""
    tag = f"vcluster-cluster={cluster}"
    if len(tag) > 60 or "," in tag or "/" in tag:
        tag = "vcluster-cluster#" + hashlib.sha256(str(cluster).encode()).hexdigest()[:32]
    return tag


def tag_request(request_id):
    return f"vcluster-req={request_id}"


def nova_status(server):
    return (getattr(server, "status", None) or "UNKNOWN").upper()


def to_status(server):
    return NOVA_STATUS.get(nova_status(server), Status.UNKNOWN)


def first_ipv4(addresses):
    for entries in (addresses or {}).values():
        for entry in entries or []:
            if entry.get("version", 4) == 4 and entry.get("addr"):
                return entry["addr"]
    return None


def fault_message(server):
    fault = getattr(server, "fault", None) or {}
    if isinstance(fault, dict):
        return fault.get("message") or None
    return str(fault) or None


#: Metadata of a batch created with ``name_servers: false``: its nodes and addresses in launch-index order.
BATCH_NODES = META_PREFIX + "nodes_"
BATCH_ADDRESSES = META_PREFIX + "addresses_"
#: Nova's longest metadata value.
META_VALUE_LIMIT = 255
#: Largest batch named by its metadata: 100 names of 63 characters and their addresses are about
#: 33 metadata items, well within Nova's default of 128 per server.
BATCH_IDENTITY_MAX = 100
_SUFFIX = re.compile(r"-(\d+)$")


def batch_identity(specs):
    """Metadata naming every node of a batch by launch index (``name_servers: false``)."""
    meta = {META_PREFIX + "registry_id": str(specs[0].tags["registry_id"])}
    for prefix, values in ((BATCH_NODES, [s.name for s in specs]),
                           (BATCH_ADDRESSES, [s.address or "" for s in specs])):
        text = ",".join(values)
        for i in range(0, max(1, len(text)), META_VALUE_LIMIT):
            meta[f"{prefix}{i // META_VALUE_LIMIT:02d}"] = text[i:i + META_VALUE_LIMIT]
    return meta


def _batch_list(meta, prefix):
    keys = sorted(k for k in meta if k.startswith(prefix) and k[len(prefix):].isdigit())
    return "".join(str(meta[k]) for k in keys).split(",") if keys else None


def batch_member(server):
    """``(node name, address or None)`` of a server of a batch created with ``name_servers: false``, or None."""
    meta = dict(getattr(server, "metadata", None) or {})
    names = _batch_list(meta, BATCH_NODES)
    if not names:
        return None
    index = getattr(server, "launch_index", None)
    if index is None:  # not shown to this caller: the display name's -<n> suffix (1-based)
        match = _SUFFIX.search(getattr(server, "name", None) or "")
        index = int(match.group(1)) - 1 if match else None
    if index is None or not 0 <= int(index) < len(names):
        return None
    addresses = _batch_list(meta, BATCH_ADDRESSES) or []
    address = addresses[int(index)] if int(index) < len(addresses) else ""
    return names[int(index)], address or None


def to_instance(server):
    """Normalise an openstacksdk Server into an :class:`Instance`.

    A server of a batch created with ``name_servers: false`` is named after
    its node (from the batch's metadata and its launch index), as a renamed
    one is.
    """
    meta = dict(getattr(server, "metadata", None) or {})
    tags = {k[len(META_PREFIX):]: v for k, v in meta.items() if k.startswith(META_PREFIX) and k[len(META_PREFIX):] in TAG_KEYS}
    name = server.name
    if "node" not in tags:
        member = batch_member(server)
        if member is not None:
            name = tags["node"] = member[0]
    return Instance(
        id=server.id,
        name=name,
        status=to_status(server),
        address=first_ipv4(getattr(server, "addresses", None)),
        host=getattr(server, "compute_host", None) or getattr(server, "hypervisor_hostname", None),
        tags=tags,
        fault=fault_message(server) if nova_status(server) == "ERROR" else None,
    )


def spec_metadata(spec):
    """Server metadata of one spec: ``vcluster_<key>`` for every tag key, and ``vcluster_address``.

    ``vcluster_address`` is the address the registry allocated to the node.
    With a ``network`` it is also the server's fixed IP; without one (``networks:
    none`` or ``auto``) Nova does not use it, and it tells the guest's (or the
    site's) network tooling which address the node was given.
    """
    meta = {META_PREFIX + key: str(spec.tags[key]) for key in TAG_KEYS if spec.tags.get(key) is not None}
    if spec.address:
        meta[META_PREFIX + "address"] = str(spec.address)
    return meta
