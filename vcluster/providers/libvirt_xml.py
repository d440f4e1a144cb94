"""XML and seed documents of the libvirt provider (no libvirt calls here).

A VM node is a domain booted directly from the image's kernel and initramfs
(no bootloader: fast under TCG), with a qcow2 overlay on the image's base
disk, a read-only NoCloud seed disk (label ``cidata``: ``user-data`` with the
boot files as ``write_files``, ``meta-data`` with the hostname) and one
virtio nic on a libvirt network. The vcluster tags live in the domain's
``<metadata>`` under :data:`NS`.
"""

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import yaml

from vcluster import bootstrap
from vcluster.errors import ProviderError

#: Namespace of vcluster's element in a domain's <metadata>.
NS = "http://vcluster.invalid/libvirt/1"
#: Kernel command line of every node (root is the whole first virtio disk).
CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"


def random_mac():
    """A MAC in QEMU's 52:54:00 range, for a node without a fixed address."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def mac_for(address):
    """The MAC of the node holding ``address``: 52:54:00 and the address's last three bytes.

    dnsmasq keeps a retired node's lease until it expires and will not give
    its address to another client meanwhile. A node created later on the
    same address gets the same MAC (and the image's DHCP client identifies
    itself by MAC), so to dnsmasq it is the same client.
    """
    if not address:
        return random_mac()
    last3 = [int(x) for x in address.split(".")[1:]]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in last3)


def guest_memory_mib(memory_mb):
    """RAM of a domain whose guest sees at least ``memory_mb`` MiB (``MemTotal``).

    ``memory_mb`` is the profile's memory, which Slurm is told as
    ``RealMemory``; slurmctld refuses a node reporting less ("Low
    RealMemory", the node drained). The guest kernel keeps part of its RAM
    for itself: Debian 12's 6.1 kernel showed a 512 MiB domain a MemTotal
    of 457 MiB (measured 2026-12-07; its code and data, page tables, the
    ``struct page`` array, which grows with the RAM). The domain therefore
    gets 64 MiB and 1/32 of ``memory_mb`` more.
    """
    memory_mb = int(memory_mb)
    return memory_mb + 64 + memory_mb // 32


def metadata(tags, mac, address, request):
    """The <vcluster:node> element: tags, the nic's MAC, the reserved address, the create request."""
    parts = [f'<vcluster:node xmlns:vcluster="{NS}">']
    for key, value in sorted(tags.items()):
        parts.append(f"<vcluster:tag key={quoteattr(str(key))}>{escape(str(value))}</vcluster:tag>")
    parts.append(f"<vcluster:mac>{escape(mac)}</vcluster:mac>")
    if address:
        parts.append(f"<vcluster:address>{escape(address)}</vcluster:address>")
    parts.append(f"<vcluster:request>{escape(request)}</vcluster:request>")
    parts.append("</vcluster:node>")
    return "".join(parts)


def parse_metadata(text):
    """``{"tags": {...}, "mac": ..., "address": ..., "request": ...}`` from a <vcluster:node> element."""
    root = ET.fromstring(text)
    out = {"tags": {}, "mac": None, "address": None, "request": None}
    for child in root:
        local = child.tag.rsplit("}", 1)[-1]
        if local == "tag":
            out["tags"][child.get("key")] = child.text or ""
        elif local in ("mac", "address", "request"):
            out[local] = child.text
    return out


def domain_xml(spec, domain_type, pool, disks, network, mac, request, machine="pc", cmdline=CMDLINE,
               console_log=None, tb_cache_mib=None, memory_mib=None, relabel=True):
    """The persistent domain definition of one node.

    ``relabel=False`` keeps libvirt's DAC driver off the node's volumes
    (``<seclabel model='dac' relabel='no'/>``): they are created owned by
    QEMU's user (:func:`volume_permissions`), so no libvirtd changes their
    owner, and none gives them back to root when a migration ends on a
    storage it cannot tell is shared.

    ``disks`` maps ``kernel``/``initrd`` to file paths on the hypervisor and
    ``disk``/``seed`` to volume names in ``pool``. ``tb_cache_mib`` sizes
    TCG's translation cache (QEMU's default is 1 GiB, on top of guest RAM).
    ``memory_mib`` is the domain's RAM (default ``spec.memory_mb``; the
    provider passes :func:`guest_memory_mib` of it).
    """
    tcg = (f"<tcg><tb-cache unit='MiB'>{int(tb_cache_mib)}</tb-cache></tcg>"
           if domain_type == "qemu" and tb_cache_mib else "")
    log = f"<log file={quoteattr(console_log)} append='off'/>" if console_log else ""
    seclabel = "" if relabel else "<seclabel model='dac' relabel='no'/>"
    return f"""<domain type={quoteattr(domain_type)}>
  <name>{escape(spec.name)}</name>
  <metadata>{metadata(spec.tags, mac, spec.address, request)}</metadata>
  <memory unit='MiB'>{int(memory_mib or spec.memory_mb)}</memory>
  <vcpu>{int(spec.cpus)}</vcpu>
  <os>
    <type arch='x86_64' machine={quoteattr(machine)}>hvm</type>
    <kernel>{escape(disks['kernel'])}</kernel>
    <initrd>{escape(disks['initrd'])}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/>{tcg}</features>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool={quoteattr(pool)} volume={quoteattr(disks['disk'])}>{seclabel}</source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw'/>
      <source pool={quoteattr(pool)} volume={quoteattr(disks['seed'])}>{seclabel}</source>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <source network={quoteattr(network)}/>
      <mac address={quoteattr(mac)}/>
      <model type='virtio'/>
    </interface>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <serial type='pty'>{log}</serial>
    <console type='pty'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
</domain>"""


def volume_permissions(owner):
    """``<permissions>`` making a volume QEMU's own (``owner`` is ``(uid, gid)``), or nothing for None."""
    if owner is None:
        return ""
    uid, gid = owner
    return f"<permissions><owner>{int(uid)}</owner><group>{int(gid)}</group><mode>0600</mode></permissions>"


def qemu_owner(capabilities, domain_type):
    """``(uid, gid)`` QEMU runs as on a hypervisor, from its capabilities' DAC base label (``+64055:+64055``).

    None when libvirt names no DAC label for ``domain_type`` (its
    security driver is off: then it changes no owner either).
    """
    root = ET.fromstring(capabilities)
    for model in root.findall("./host/secmodel"):
        if (model.findtext("model") or "") != "dac":
            continue
        for label in model.findall("baselabel"):
            if label.get("type") == domain_type:
                match = re.fullmatch(r"\+?(\d+):\+?(\d+)", (label.text or "").strip())
                if match:
                    return int(match.group(1)), int(match.group(2))
    return None


def overlay_xml(name, base_path, owner=None):
    """A qcow2 volume backed by the image's base disk (copy on write); ``owner`` see :func:`volume_permissions`."""
    return f"""<volume>
  <name>{escape(name)}</name>
  <capacity unit='bytes'>0</capacity>
  <target><format type='qcow2'/>{volume_permissions(owner)}</target>
  <backingStore><path>{escape(base_path)}</path><format type='qcow2'/></backingStore>
</volume>"""


def raw_volume_xml(name, size, owner=None):
    return f"""<volume>
  <name>{escape(name)}</name>
  <capacity unit='bytes'>{int(size)}</capacity>
  <target><format type='raw'/>{volume_permissions(owner)}</target>
</volume>"""


def dhcp_host_xml(mac, name, address):
    return f"<host mac={quoteattr(mac)} name={quoteattr(name)} ip={quoteattr(address)}/>"


def seed_iso(spec, instance_id):
    """The NoCloud seed of ``spec`` as ISO 9660 bytes (label ``cidata``).

    ``user-data`` is the same ``#cloud-config`` the OpenStack provider
    sends (:func:`vcluster.bootstrap.cloud_config`, without ``runcmd``: the
    image's vcluster-seed.service writes the files before the minion
    starts). It holds the minion's private key: the seed volume is deleted
    with the node.
    """
    tool = shutil.which("genisoimage") or shutil.which("mkisofs")
    if tool is None:
        raise ProviderError("genisoimage is missing on the master: run scripts/install-deps.sh")
    meta = yaml.safe_dump({"instance-id": instance_id, "local-hostname": spec.name}, sort_keys=True)
    with tempfile.TemporaryDirectory(prefix="vcluster-seed-") as tmp:
        os.chmod(tmp, 0o700)
        src = os.path.join(tmp, "seed")
        os.mkdir(src)
        with open(os.path.join(src, "user-data"), "w") as out:
            out.write(bootstrap.cloud_config(spec.boot_files))
        with open(os.path.join(src, "meta-data"), "w") as out:
            out.write(meta)
        iso = os.path.join(tmp, "seed.iso")
        proc = subprocess.run([tool, "-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock", src],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ProviderError(f"building the seed of {spec.name} failed: {proc.stderr.strip()[:200]}")
        with open(iso, "rb") as fh:
            return fh.read()


def read_seed_user_data(iso_bytes):
    """``user-data`` of a seed built by :func:`seed_iso` (tests and debugging; needs isoinfo)."""
    with tempfile.NamedTemporaryFile(suffix=".iso") as fh:
        fh.write(iso_bytes)
        fh.flush()
        proc = subprocess.run(["isoinfo", "-R", "-i", fh.name, "-x", "/user-data"],
                              capture_output=True, text=True, check=True)
    return proc.stdout
