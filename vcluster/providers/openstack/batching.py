"""Which specs share one Nova multi-create request, and which server is which afterwards."""

import re

from vcluster.errors import ProviderError
from vcluster.providers.openstack import userdata


def batch_key(spec, resolved, by_request=False):
    """Specs with equal keys may share one multi-create request.

    ``by_request``: specs of different requests (``registry_id`` tags) never
    share one (``name_servers: false`` sets the tag once per batch).
    """
    extra = spec.extra or {}
    return (spec.tags.get("registry_id") if by_request else None,) + (
        resolved["image"],
        resolved["flavor"],
        resolved.get("network"),
        resolved.get("server_group"),
        extra.get("availability_zone"),
        extra.get("key_name"),
        tuple(extra.get("security_groups") or ()),
        bool(extra.get("config_drive", False)),
        spec.tags.get("cluster"),
        spec.tags.get("profile"),
    )


def plan_batches(specs, keys, max_batch=50, multi_create=True, minion_start=userdata.DEFAULT_MINION_START):
    """Group spec indexes into create requests.

    ``keys[i]`` is the batch key of ``specs[i]`` or ``None`` for a spec that
    must be created alone (fixed address). Returns a list of lists of indexes;
    order within a batch is the launch-index order. Each batch fits
    ``max_batch`` and Nova's user-data limit.
    """
    batches = []
    groups = {}
    order = []
    for i, key in enumerate(keys):
        if key is None or not multi_create or max_batch <= 1:
            batches.append([i])
            continue
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(i)
    texts = {}  # (spec index, launch index) -> its cloud-config, made once

    def text(i, index):
        if (i, index) not in texts:
            texts[i, index] = userdata.cloud_config(specs[i], index, minion_start)
        return texts[i, index]

    def fits(members):
        data = userdata.batch_user_data([specs[j] for j in members], minion_start,
                               texts=[text(j, index) for index, j in enumerate(members)])
        return userdata.encoded_size(data) <= userdata.USER_DATA_LIMIT

    for key in order:
        members = groups[key]
        start = 0
        while start < len(members):
            rest = members[start:start + max_batch]
            # the longest prefix whose plain text (parts plus generous MIME headers) fits: no archive built
            count, estimate = 0, 0
            for index, i in enumerate(rest):
                estimate += len(text(i, index).encode()) + 400
                if count and 4 * ((estimate + 2) // 3) > userdata.USER_DATA_LIMIT:
                    break
                count += 1
            # gzip may fit more: the longest prefix that does, by bisection (a few archives per
            # batch, not one per added part: that was quadratic in the batch size)
            low, high = count, len(rest)
            while low < high:
                mid = (low + high + 1) // 2
                if fits(rest[:mid]):
                    low = mid
                else:
                    high = mid - 1
            batches.append(rest[:low])
            start += low
    return batches


def map_batch(servers, base_name, size):
    """Map the servers of one multi-create to launch indexes 0..size-1.

    Uses ``launch_index`` where the API shows it (admin), else the ``-<n>``
    suffix Nova appends to the display name. Raises :class:`ProviderError`
    when the servers do not form exactly one of each index.
    """
    mapped = {}
    pattern = re.compile(re.escape(base_name) + r"-(\d+)$")
    for server in servers:
        index = getattr(server, "launch_index", None)
        if index is None:
            match = pattern.match(server.name or "")
            if match:
                index = int(match.group(1)) - 1
        if index is None or not 0 <= index < size or index in mapped:
            raise ProviderError(
                f"cannot map server {server.id} ({server.name!r}) of multi-create {base_name} to a node"
            )
        mapped[index] = server
    if len(mapped) != size:
        raise ProviderError(f"Nova reports {len(mapped)} of the {size} servers of multi-create {base_name}")
    return mapped
