"""Options of the ``opennebula`` driver (OpenNebula VMs, :mod:`vcluster.providers.opennebula`).

The keys of ``vcluster:providers:<name>`` with ``driver: opennebula`` and of a
profile's ``extra`` mapping: checks, defaults and the reference text of
docs/policy.md. Imports nothing but the policy schema (no client library):
:mod:`vcluster.policy` loads this table to validate a pillar.
"""

from vcluster.policy import checks as c
from vcluster.policy.schema import REQUIRED, DriverOptions, Key, Section

OPTIONS = DriverOptions(
    "opennebula",
    "OpenNebula VMs over XML-RPC through pyone; keys vcluster/providers/opennebula/ reads.",
    Section(
        "vcluster:providers:<name> (driver: opennebula)", "",
        Key("endpoint", c.string, REQUIRED, "XML-RPC URL, e.g. `https://one:2633/RPC2`"),
        Key("credentials_file", c.abs_path, None, "file holding `user:password`, mode 0600"),
        Key("session", c.string, None, "`user:password` inline (secret); prefer `credentials_file`"),
        Key("network", c.string, None, "default virtual network of its profiles"),
        Key("timeout", c.positive_number, None, "seconds per call", shown_default="driver: `30`"),
        Key("verify_tls", c.bool_or_string, None, "TLS verification", shown_default="driver: `true`"),
        Key("pool_filter", c.integer, None, "VM pool filter of listings", shown_default="driver: `-3` (own VMs)"),
        Key("cpu_factor", c.positive_number, None, "`CPU` = `VCPU` × factor", shown_default="driver: `1.0`"),
        Key("enforce_capacity", c.boolean, None, "migrations respect the host's capacity",
            shown_default="driver: `true`"),
        Key("boot", c.choice(("start_script", "cloud_init")), None, "how boot files travel in `CONTEXT`",
            shown_default="driver: `start_script`"),
        Key("start_command", c.string, None, "command that starts the minion after the boot files",
            shown_default="the driver's"),
        Key("context", c.mapping, None, "extra `CONTEXT` entries"),
        Key("template", c.string, None, "VM template (name or id) to instantiate", shown_default="the image"),
        Key("network_owner", c.string, None, "owner of a network given by name"),
    ),
    Section(
        "vcluster:profiles:<name>:extra (driver: opennebula)", "",
        Key("template", None, None, "overrides the provider's `template`", kind="string"),
        Key("context", None, None, "more `CONTEXT` entries, over the provider's", kind="mapping"),
        Key("boot", None, None, "overrides the provider's `boot`", kind="`start_script` \\| `cloud_init`"),
        Key("start_command", None, None, "overrides the provider's `start_command`", kind="string"),
        Key("cpu_factor", None, None, "overrides the provider's `cpu_factor`", kind="positive number"),
        Key("network_owner", None, None, "overrides the provider's `network_owner`", kind="string"),
        Key("sched_requirements", None, None, "`SCHED_REQUIREMENTS` of the VM", kind="string"),
    ),
)
