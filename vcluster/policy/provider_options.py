"""Provider options, one :class:`DriverOptions` object per driver.

``options`` are the keys of ``vcluster:providers:<name>`` besides ``driver``;
``extra`` the keys a profile's ``extra`` mapping may hold (passed to the
provider as ``InstanceSpec.extra``, values unchecked here). A default of
``None`` leaves the value to the driver; ``shown_default`` says what the
driver then uses. Each object is self-contained so that a provider module
can own its table later.
"""

import dataclasses

from vcluster.policy import checks as c
from vcluster.policy.schema import REQUIRED, Key, Section


@dataclasses.dataclass(frozen=True)
class DriverOptions:
    """What ``vcluster:providers:<name>`` and ``profiles:<name>:extra`` accept for one driver."""

    driver: str
    doc: str
    options: Section
    extra: Section


LXD = DriverOptions(
    "lxd",
    "System containers on an LXD server; keys vcluster/providers/lxd.py reads.",
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

OPENSTACK = DriverOptions(
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
)

OPENNEBULA = DriverOptions(
    "opennebula",
    "OpenNebula VMs over XML-RPC through pyone; keys vcluster/providers/opennebula.py reads.",
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

LIBVIRT = DriverOptions(
    "libvirt",
    "QEMU virtual machines on a libvirt hypervisor (KVM or TCG); see [libvirt.md](libvirt.md).",
    Section(
        "vcluster:providers:<name> (driver: libvirt)", "",
        Key("network", c.string, REQUIRED, "libvirt network the nics join (static DHCP host entries)"),
        Key("storage_pool", c.string, REQUIRED, "libvirt storage pool of the image (`image-vm/build.sh`) and "
            "of the nodes' overlay and seed volumes"),
        Key("uri", c.string, None, "libvirt URI; `qemu+ssh://root@host/system` for a remote hypervisor",
            shown_default="driver: `qemu:///system`"),
        Key("domain_type", c.choice(("auto", "kvm", "qemu")), None, "`kvm`, `qemu` (TCG) or `auto`: `kvm` when "
            "libvirt offers it and the host CPU has vmx/svm", shown_default="driver: `auto`"),
        Key("machine", c.string, None, "QEMU machine type", shown_default="driver: `pc`"),
        Key("cmdline", c.string, None, "guest kernel command line",
            shown_default="driver: root on `/dev/vda`, serial console"),
        Key("tcg_cache_mib", c.positive_int, None, "TCG translation cache per guest, MiB (QEMU's default "
            "is 1024, on top of the guest's RAM); unused under KVM", shown_default="driver: `128`"),
        Key("clock_sync_timeout", c.positive_number, None, "seconds resume waits for the guest agent to step "
            "the guest clock to the host's", shown_default="driver: `30`"),
        Key("minion_restart_timeout", c.positive_number, None, "seconds resume from a save waits for the guest "
            "agent's `systemctl restart salt-minion` (the minion's connections did not survive the save)",
            shown_default="driver: `60`"),
    ),
    Section(
        "vcluster:profiles:<name>:extra (driver: libvirt)", "",
        Key("machine", None, None, "overrides the provider's `machine`", kind="string"),
        Key("cmdline", None, None, "overrides the provider's `cmdline`", kind="string"),
    ),
)

#: driver name -> its options, in the order error messages list the drivers.
DRIVER_OPTIONS = {d.driver: d for d in (LXD, OPENSTACK, OPENNEBULA, LIBVIRT)}
DRIVERS = tuple(DRIVER_OPTIONS)
#: driver -> keys of ``vcluster:providers:<name>`` besides ``driver``.
PROVIDER_KEYS = {d.driver: d.options for d in DRIVER_OPTIONS.values()}
#: driver -> keys a profile's ``extra`` mapping may hold.
EXTRA_KEYS = {d.driver: d.extra for d in DRIVER_OPTIONS.values()}
