"""Options of the ``openstack`` driver (OpenStack Nova servers, :mod:`vcluster.providers.openstack`).

The keys of ``vcluster:providers:<name>`` with ``driver: openstack`` and of a
profile's ``extra`` mapping: checks, defaults and the reference text of
docs/policy.md. Imports nothing but the policy schema (no client library):
:mod:`vcluster.policy` loads this table to validate a pillar.
"""

from vcluster.policy import checks as c
from vcluster.policy.schema import DriverOptions, Key, Section

OPTIONS = DriverOptions(
    "openstack",
    "Nova servers through openstacksdk; see [openstack.md](openstack.md). `cloud` or `auth` is required.",
    Section(
        "vcluster:providers:<name> (driver: openstack)", "",
        Key("cloud", c.string, None, "entry in the master's `clouds.yaml`"),
        Key("auth", c.mapping, None, "inline openstacksdk auth (secret); prefer `clouds.yaml`"),
        Key("clouds_yaml", c.abs_path, None, "the `clouds.yaml` holding `cloud`",
            shown_default="openstacksdk's search path"),
        Key("region_name", c.string, None, "region, passed to openstacksdk"),
        Key("interface", c.string, None, "endpoint interface, passed to openstacksdk"),
        Key("verify", c.bool_or_string, None, "TLS verification, passed to openstacksdk"),
        Key("cacert", c.abs_path, None, "CA bundle, passed to openstacksdk"),
        Key("auth_type", c.string, None, "e.g. `v3applicationcredential`, passed to openstacksdk"),
        Key("network", c.string, None, "default network of its profiles"),
        Key("networks", c.choice(("auto", "none")), None, "servers without a network: Nova picks one "
            "(`auto`) or none", shown_default="driver: `auto`"),
        Key("boot_timeout", c.positive_number, None, "seconds from the create request to every server ACTIVE",
            shown_default="driver: `600`"),
        Key("action_timeout", c.positive_number, None, "deadline of suspend, resume, migrate, delete",
            shown_default="driver: `300`"),
        Key("poll_interval", c.positive_number, None, "seconds between status polls",
            shown_default="driver: `2`"),
        Key("multi_create", c.boolean, None, "one Nova request per batch of identical specs (every guest of "
            "a batch can read the batch's user data)", shown_default="driver: `true`"),
        Key("max_batch", c.positive_int, None, "largest `min_count`/`max_count` of one request",
            shown_default="driver: `50`"),
        Key("api_retries", c.integer, None, "retries of a 5xx answer or dropped connection",
            shown_default="driver: `4`"),
        Key("api_retry_deadline", c.positive_number, None, "seconds one call may spend retrying",
            shown_default="driver: `60`"),
        Key("api_retry_backoff", c.positive_number, None, "seconds before the first retry, doubled after "
            "each", shown_default="driver: `0.5`"),
        Key("api_concurrency", c.positive_int, None, "parallel per-server calls (rename, metadata, delete)",
            shown_default="driver: `8`"),
        Key("name_servers", c.boolean, None, "rename and tag each multi-created server once ACTIVE (2 calls "
            "per server); false: the batch's create call names its nodes (no call per server, Nova keeps "
            "the batch names)", shown_default="driver: `true`"),
        Key("minion_start", c.string, None, "shell command cloud-init runs last to start the minion",
            shown_default="driver: `systemctl enable --now salt-minion ...`"),
        Key("region", c.string, None, "accepted but not read by the driver: use `region_name`"),
        Key("availability_zone", c.string, None, "accepted but not read by the driver: use a profile's "
            "`extra:availability_zone`"),
        Key("security_groups", c.string_list, None, "accepted but not read by the driver: use a profile's "
            "`extra:security_groups`"),
        Key("key_name", c.string, None, "accepted but not read by the driver: use a profile's "
            "`extra:key_name`"),
        Key("timeout", c.positive_number, None, "accepted but not read by the driver: use `boot_timeout` "
            "and `action_timeout`"),
    ),
    Section(
        "vcluster:profiles:<name>:extra (driver: openstack)", "",
        Key("scheduler_hints", None, None, "accepted, not read by the driver (the server group sets the "
            "hint)", kind="mapping"),
        Key("availability_zone", None, None, "Nova availability zone", kind="string"),
        Key("security_groups", None, None, "Nova security group names", kind="list of strings"),
        Key("key_name", None, None, "Nova key pair", kind="string"),
        Key("metadata", None, None, "accepted, not read by the driver", kind="mapping"),
        Key("server_group_policy", None, None, "`affinity`, `anti-affinity`, `soft-affinity` or "
            "`soft-anti-affinity`: the profile's servers share a server group", kind="string"),
        Key("server_group", None, None, "server group name, created when missing",
            kind="string", shown_default="`vcluster-<cluster>-<profile>-<policy>`"),
        Key("config_drive", None, None, "boot with a config drive", kind="bool", shown_default="`false`"),
        Key("networks", None, None, "overrides the provider's `networks`", kind="`auto` \\| `none`"),
        Key("boot_timeout", None, None, "overrides the provider's `boot_timeout`", kind="positive number"),
        Key("runcmd", None, None, "cloud-init commands run before the minion starts",
            kind="list of strings"),
    ),
    profile_requires=("flavor",),
    label="OpenStack",
)
