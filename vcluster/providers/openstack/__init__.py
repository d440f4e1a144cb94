"""OpenStack provider: virtual nodes as Nova servers, through openstacksdk.

Configuration (``vcluster:providers:<name>`` in master-only pillar)::

    driver: openstack
    cloud: mycloud            # a clouds.yaml entry ...
    clouds_yaml: /etc/vcluster/clouds.yaml   # optional path to that file
    auth: {auth_url: ..., username: ..., password: ..., project_name: ...}
                              # ... or the auth dict itself (never logged)
    region_name: RegionOne    # optional, also interface, verify, cacert, auth_type
    networks: auto            # servers without spec.network: auto | none
    boot_timeout: 600         # seconds from create to ACTIVE
    action_timeout: 300       # suspend/resume/migrate/delete deadlines
    poll_interval: 2          # seconds between status polls
    multi_create: true        # one Nova request per batch of identical specs
    max_batch: 50             # largest min_count/max_count of one request
    api_retries: 4            # retries of a 5xx answer (idempotent calls)
    api_retry_deadline: 60    # seconds a call may spend retrying
    api_concurrency: 8        # parallel per-server calls (rename, metadata, delete)
    name_servers: true        # rename and tag each multi-created server (2 calls per server);
                              # false: the batch's create call names its nodes, no call per server

How a batch is created and mapped
---------------------------------
Specs that share image, flavor, network mode, server group, availability
zone, key and security groups go to Nova in one ``POST /servers`` with
``min_count = max_count = N`` (chunks of ``max_batch`` and of Nova's 64 KiB
user-data limit). Nova gives the N servers the display names
``<base>-1 .. <base>-N`` and sets ``launch_index`` 0..N-1 in that order. The
provider therefore fixes the mapping *before* the request: spec ``i`` of the
batch is launch index ``i``.

- The guest learns who it is from its user data: a MIME multi-part archive with
  one ``#cloud-config`` part per spec, each carrying ``launch-index: i`` (and a
  ``Launch-Index`` header). cloud-init applies only the part whose index is the
  instance's own launch index (from the metadata service / config drive), so
  the guest writes its own boot files and hostname, with no race against the
  renames below.
- The API side: every server of the request carries the tag
  ``vcluster-req=<id>`` and the metadata ``vcluster_batch``; the first poll
  round (one list call filtered by that tag) maps each server to its spec by
  ``launch_index`` (or the ``-<n>`` name suffix when the caller may not see
  launch_index). As soon as a multi-created server is ACTIVE it is renamed
  to its node name and given ``vcluster_node`` and ``vcluster_registry_id``
  (2 calls per server, in a thread pool while the poll goes on): Nova
  refuses metadata changes before ACTIVE, and a rename while the server is
  still a build request was seen to be lost when the cell took it over.
  ``vcluster_cluster`` and ``vcluster_profile`` are set at create.

With ``name_servers: false`` there is no call per server: the create call of
a batch carries the batch's node names and addresses in launch-index order
as metadata (``vcluster_nodes_00``, ``vcluster_nodes_01``... and
``vcluster_addresses_NN``: comma-separated lists cut into Nova's
255-character values) and ``vcluster_registry_id`` (a batch then holds one
request's specs, at most 100 of them). The servers keep Nova's display
names ``<base>-<n>``; the provider names each one from its launch index (or
its ``-<n>`` suffix) when it lists them, so ``list``, ``get`` and reconcile
see the node names as before. An expand costs one create per batch and one
list per poll round, whatever the number of nodes; ``openstack server
list`` shows the batch names.

A batch of one is a plain create with the final name, metadata and a single
cloud-config. Specs with a fixed address (``spec.network`` and
``spec.address``) are always created one per request, since Nova refuses a
fixed IP in a multi-create; Nova creates their port with that fixed IP from
``networks=[{"uuid": net, "fixed_ip": addr}]`` and deletes it with the server.

Note: with multi-create every guest of a batch can read the whole batch's
user data (its peers' boot files, minion keys included) from the metadata
service. Set ``multi_create: false`` where that is not acceptable.

Tags and metadata: every server has the tags ``vcluster``,
``vcluster-cluster=<cluster>`` and ``vcluster-req=<id>`` (server-side filters
for ``list_all``, ``list`` and the polling of one create) and the metadata
``vcluster_cluster``, ``vcluster_node``, ``vcluster_profile``,
``vcluster_registry_id`` and, when the node has an allocated address,
``vcluster_address``.
"""

# Modules of the package, by concern: ``logfilter`` (keystoneauth's log
# without bodies), ``servers`` (Nova server <-> Instance, tags, metadata,
# batch identity), ``userdata`` (cloud-config parts and archives),
# ``batching`` (multi-create planning and mapping), ``api`` (connection,
# API calls, retries, error mapping), ``create`` (lookups, batch requests,
# the poll until ACTIVE, cleanup), ``provider`` (the class: delete, list,
# suspend/resume/migrate, capacity). The driver's options are in
# ``vcluster.providers.openstack_options``.
from vcluster.providers.openstack import logfilter  # noqa: F401 - installs the log filter first
from vcluster.providers.openstack.batching import batch_key, map_batch, plan_batches
from vcluster.providers.openstack.provider import OpenStackProvider
from vcluster.providers.openstack.servers import (
    BATCH_ADDRESSES,
    BATCH_IDENTITY_MAX,
    BATCH_NODES,
    META_PREFIX,
    META_VALUE_LIMIT,
    NOVA_STATUS,
    TAG_ALL,
    batch_identity,
    batch_member,
    first_ipv4,
    nova_status,
    spec_metadata,
    tag_cluster,
    tag_request,
    to_instance,
    to_status,
)
from vcluster.providers.openstack.userdata import (
    DEFAULT_MINION_START,
    USER_DATA_LIMIT,
    batch_user_data,
    cloud_config,
    encoded_size,
    parse_user_data,
)

__all__ = [
    "BATCH_ADDRESSES", "BATCH_IDENTITY_MAX", "BATCH_NODES", "DEFAULT_MINION_START", "META_PREFIX",
    "META_VALUE_LIMIT", "NOVA_STATUS", "TAG_ALL", "USER_DATA_LIMIT", "OpenStackProvider", "batch_identity",
    "batch_key", "batch_member", "batch_user_data", "cloud_config", "encoded_size", "first_ipv4", "map_batch",
    "nova_status", "parse_user_data", "plan_batches", "spec_metadata", "tag_cluster", "tag_request",
    "to_instance", "to_status",
]
