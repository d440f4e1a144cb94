"""libvirt helpers of the integration modules (test_provider_libvirt, test_vm_nodes): networks, QEMU pids,
a second hypervisor."""

import contextlib
import ipaddress
import os
import subprocess

import libvirt


@contextlib.contextmanager
def module_network(conn, name, bridge, cidr, dhcp_hosts, forward=None):
    """A libvirt network of a test module's own, made anew, removed at the end.

    ``cidr`` is the gateway's address with its prefix; DHCP hands out the
    hosts 2 to ``dhcp_hosts`` + 1 of the network; ``forward`` is the
    ``<forward mode=>`` (None: isolated). Yields ``{"name", "gateway",
    "cidr", "net"}``. A network of that name left by an earlier run is
    removed first.
    """
    iface = ipaddress.ip_interface(cidr)
    with contextlib.suppress(libvirt.libvirtError):
        old = conn.networkLookupByName(name)
        if old.isActive():
            old.destroy()
        old.undefine()
    hosts = list(iface.network.hosts())
    mode = f"<forward mode='{forward}'/>" if forward else ""
    net = conn.networkDefineXML(f"""<network><name>{name}</name>{mode}
      <bridge name='{bridge}' stp='off'/>
      <ip address='{iface.ip}' prefix='{iface.network.prefixlen}'>
        <dhcp><range start='{hosts[1]}' end='{hosts[dhcp_hosts]}'/></dhcp></ip></network>""")
    net.create()
    try:
        yield {"name": name, "gateway": str(iface.ip), "cidr": str(iface.network), "net": net}
    finally:
        net.destroy()
        net.undefine()


def qemu_pid(name, run_dir="/run/libvirt"):
    """The QEMU process of a running domain, or None (libvirt's pid file; ``run_dir``: that libvirtd's /run/libvirt)."""
    try:
        pid = int(open(f"{run_dir}/qemu/{name}.pid").read().strip())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


@contextlib.contextmanager
def second_hypervisor(script, hv_dir, pool, network, bridge):
    """A second libvirtd (``scripts/libvirt-second-host.sh``) with a network ``network`` bridged onto ``bridge``.

    The network has no dnsmasq of its own (``<forward mode='bridge'/>``): a
    guest there is on the first hypervisor's segment, with its DHCP host
    entry and address. Yields ``{"uri", "conn", "run_dir"}``; the daemon is
    stopped (its domains and network removed) at the end.
    """
    up = subprocess.run(["bash", str(script), "up", "--dir", hv_dir, "--pool", pool], capture_output=True,
                        text=True, timeout=300, check=False)
    if up.returncode != 0:
        raise AssertionError(f"{script} up failed: {up.stderr.strip()[-2000:]}")
    uri = up.stdout.strip().splitlines()[-1]
    conn = libvirt.open(uri)
    try:
        with contextlib.suppress(libvirt.libvirtError):
            old = conn.networkLookupByName(network)
            if old.isActive():
                old.destroy()
            old.undefine()
        net = conn.networkDefineXML(f"<network><name>{network}</name><forward mode='bridge'/>"
                                    f"<bridge name='{bridge}'/></network>")
        net.create()
        yield {"uri": uri, "conn": conn, "run_dir": f"{hv_dir}/run"}
    finally:
        conn.close()
        subprocess.run(["bash", str(script), "down", "--dir", hv_dir, "--pool", pool], capture_output=True,
                       timeout=300, check=False)
