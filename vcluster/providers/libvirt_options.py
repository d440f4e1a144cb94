"""Options of the ``libvirt`` driver (libvirt/QEMU virtual machines, :mod:`vcluster.providers.libvirt`).

The keys of ``vcluster:providers:<name>`` with ``driver: libvirt`` and of a
profile's ``extra`` mapping: checks, defaults and the reference text of
docs/policy.md. Imports nothing but the policy schema (no client library):
:mod:`vcluster.policy` loads this table to validate a pillar.
"""

import collections.abc

from vcluster.policy import checks as c
from vcluster.policy.schema import REQUIRED, DriverOptions, Key, Section

HOSTS_HINT = ("must map hypervisor names to libvirt URIs (a URI, or {uri: URI, migration_address: ADDRESS}), "
              "e.g. {hv1: 'qemu+ssh://root@hv1/system'}")


@c.kind("mapping hypervisor name → URI or {uri, migration_address}")
def hypervisor_uris(value, path):
    """``hosts``: name -> URI (or ``{uri, migration_address}``) -> ``{name: {"uri", "migration_address"}}``.

    One sentence per mistake: not a mapping or empty, a bad name, a value
    that is neither a URI nor such a mapping, an unknown key, or two names
    for the same URI (one hypervisor twice would "migrate" a guest onto itself).
    """
    if not isinstance(value, collections.abc.Mapping) or not value:
        raise c.fail(path, HOSTS_HINT, value)
    out, seen = {}, {}
    for name, entry in value.items():
        c.name(name, path)
        where = c.join(path, name)
        if isinstance(entry, str):
            entry = {"uri": entry}
        if not isinstance(entry, collections.abc.Mapping) or not isinstance(entry.get("uri"), str) \
                or not entry["uri"].strip():
            raise c.fail(where, "must be a libvirt URI or a mapping with `uri` (and `migration_address`)", entry)
        unknown = sorted(set(entry) - {"uri", "migration_address"})
        if unknown:
            raise c.fail(where, "takes only `uri` and `migration_address`", unknown[0])
        address = entry.get("migration_address")
        if address is not None:
            c.host_or_address(address, c.join(where, "migration_address"))
        uri = entry["uri"].strip()
        if uri in seen:
            raise c.fail(where, f"names the same hypervisor as {seen[uri]} (one URI, two names)", uri)
        seen[uri] = name
        out[name] = {"uri": uri, "migration_address": address}
    return out


OPTIONS = DriverOptions(
    "libvirt",
    "QEMU virtual machines on a libvirt hypervisor (KVM or TCG); see [libvirt.md](libvirt.md).",
    Section(
        "vcluster:providers:<name> (driver: libvirt)", "",
        Key("network", c.string, REQUIRED, "libvirt network the nics join (static DHCP host entries)"),
        Key("storage_pool", c.string, REQUIRED, "libvirt storage pool of the image (`image-vm/build.sh`) and "
            "of the nodes' overlay and seed volumes"),
        Key("uri", c.string, None, "libvirt URI of the one hypervisor; `qemu+ssh://root@host/system` for a "
            "remote one (not with `hosts`)", shown_default="driver: `qemu:///system`"),
        Key("hosts", hypervisor_uris, None, "the hypervisors by name (instead of `uri`): new nodes go to the one "
            "with the most free memory, `vcluster.migrate` live-migrates between them; every one needs the "
            "network and the storage pool under the same names, the pool on storage they share; "
            "`migration_address`: where the destination's QEMU listens for the memory stream (default: its "
            "host name)", shown_default="driver: one hypervisor, `uri`"),
        Key("shared_storage", c.boolean, None, "`true`: the storage pool is shared by the `hosts` though libvirt "
            "cannot tell (one local directory seen by several daemons on a machine, a file system libvirt does "
            "not recognise): migration then passes `VIR_MIGRATE_UNSAFE`, and the nodes' volumes are created owned "
            "by QEMU's user (the hypervisor's DAC label) and never relabelled, so the end of a move cannot give "
            "a disk back to root; libvirt itself recognises NFS, GFS2, OCFS2, Ceph and the like", shown_default="driver: `false`"),
        Key("domain_type", c.choice(("auto", "kvm", "qemu")), None, "`kvm`, `qemu` (TCG) or `auto`: `kvm` when "
            "libvirt offers it and the host CPU has vmx/svm", shown_default="driver: `auto`"),
        Key("machine", c.string, None, "QEMU machine type", shown_default="driver: `pc`"),
        Key("cmdline", c.string, None, "guest kernel command line",
            shown_default="driver: root on `/dev/vda`, serial console"),
        Key("tcg_cache_mib", c.positive_int, None, "TCG translation cache per guest, MiB (QEMU's default "
            "is 1024, on top of the guest's RAM); unused under KVM", shown_default="driver: `128`"),
        Key("clock_sync_timeout", c.positive_number, None, "seconds resume waits for the guest agent to step "
            "the guest clock to the host's", shown_default="driver: `30`"),
        Key("minion_restart_timeout", c.positive_number, None, "seconds a resume waits for the guest agent to "
            "reset the minion's connections to the master (`ss -K`), and to queue `systemctl restart salt-minion` "
            "when the minion stays silent after that (the jobs wait for neither)",
            shown_default="driver: `60`"),
    ),
    Section(
        "vcluster:profiles:<name>:extra (driver: libvirt)", "",
        Key("machine", None, None, "overrides the provider's `machine`", kind="string"),
        Key("cmdline", None, None, "overrides the provider's `cmdline`", kind="string"),
    ),
)
