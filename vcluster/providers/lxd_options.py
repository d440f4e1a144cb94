"""Options of the ``lxd`` driver (LXD system containers, :mod:`vcluster.providers.lxd`).

The keys of ``vcluster:providers:<name>`` with ``driver: lxd`` and of a
profile's ``extra`` mapping: checks, defaults and the reference text of
docs/policy.md. Imports nothing but the policy schema (no client library):
:mod:`vcluster.policy` loads this table to validate a pillar.
"""

from vcluster.policy import checks as c
from vcluster.policy.schema import REQUIRED, DriverOptions, Key, Section

OPTIONS = DriverOptions(
    "lxd",
    "System containers on an LXD server; keys vcluster/providers/lxd/ reads.",
    Section(
        "vcluster:providers:<name> (driver: lxd)", "",
        Key("network", c.string, REQUIRED, "LXD managed bridge the containers attach to"),
        Key("storage_pool", c.string, REQUIRED, "LXD storage pool of the root disks"),
        Key("endpoint", c.string, None, "`https://host:8443` or a unix socket path",
            shown_default="the local unix socket"),
        Key("project", c.string, None, "LXD project", shown_default="LXD's `default`"),
        Key("profiles", c.string_list, None, "LXD profiles applied before vcluster's settings",
            shown_default="driver: `[default]`"),
        Key("privileged", c.boolean, None, "`security.privileged` of the containers",
            shown_default="driver: `false`"),
        Key("timeout", c.positive_number, None, "seconds per LXD operation", shown_default="driver: `120`"),
        Key("parallel", c.positive_int, None, "instances created or deleted at once",
            shown_default="driver: `4`"),
        Key("verify", c.bool_or_string, None, "TLS verification of an https endpoint",
            shown_default="pylxd's default"),
        Key("cert", c.string, None, "client certificate file (https), with `key`"),
        Key("key", c.string, None, "client key file (https), with `cert` (secret)"),
    ),
    Section(
        "vcluster:profiles:<name>:extra (driver: lxd)", "",
        Key("config", None, None, "LXD instance config merged over vcluster's (e.g. `limits.cpu.allowance`)",
            kind="mapping"),
        Key("devices", None, None, "LXD devices merged over vcluster's", kind="mapping"),
    ),
)
