"""Options of the ``libvirt`` driver (libvirt/QEMU virtual machines, :mod:`vcluster.providers.libvirt`).

The keys of ``vcluster:providers:<name>`` with ``driver: libvirt`` and of a
profile's ``extra`` mapping: checks, defaults and the reference text of
docs/policy.md. Imports nothing but the policy schema (no client library):
:mod:`vcluster.policy` loads this table to validate a pillar.
"""

from vcluster.policy import checks as c
from vcluster.policy.schema import REQUIRED, DriverOptions, Key, Section

OPTIONS = DriverOptions(
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
