"""The libvirt provider's hypervisors: names, finding a domain, DHCP entries, capacity.

A mixin of :class:`vcluster.providers.libvirt.LibvirtProvider`: it uses
the provider's ``hypervisors`` (name -> ``{"uri", "migration_address"}``;
the one key ``None`` when the provider has a single ``uri``, named then by
libvirt's host name), ``default_host``, ``conn_to``, ``_call``,
``storage_pool`` and ``_labels``.
"""

import logging
import xml.etree.ElementTree as ET

import libvirt

from vcluster.errors import ProviderError
from vcluster.providers import libvirt_xml as lx
from vcluster.providers.base import Host
from vcluster.providers.libvirt_conn import _Missing

log = logging.getLogger(__name__)

_NO_HOST = object()  # _key() of a name that is none of the provider's hypervisors


class Hypervisors:
    """Where the provider's domains live (see the module docstring)."""

    @property
    def host_name(self):
        """The name of the first (or only) hypervisor."""
        return self._label(self.default_host)

    def _label(self, host):
        """The name of hypervisor ``host`` as instances and hosts() report it: its key, or libvirt's host name."""
        if host is not None:
            return host
        if host not in self._labels:
            self._labels[host] = self._call("get", "read the hypervisor's name", self.conn_to(host).getHostname)
        return self._labels[host]

    def _key(self, label):
        """The hypervisor key of a host name as :meth:`_label` gives it, or ``None`` if it is not one of ours."""
        if label in self.hypervisors:
            return label
        return self.default_host if self.default_host is None and label == self._label(None) else _NO_HOST

    def _pool(self, host=None):
        host = self.default_host if host is None else host
        return self._call("get", f"storage pool {self.storage_pool}", self.conn_to(host).storagePoolLookupByName,
                          self.storage_pool)

    def _on(self, host):
        return "" if len(self.hypervisors) == 1 else f" on hypervisor {self._label(host)}"

    def _dhcp_networks(self, net_name):
        """The networks named ``net_name`` whose dnsmasq hands out addresses, one per hypervisor that has one.

        With several hypervisors on one L2 segment only one of them (or
        each, with the same entries) serves DHCP; the others bridge onto
        it (``<forward mode='bridge'/>``). A node's static entry goes to
        every one that serves, so it holds wherever the node runs.
        """
        found = []
        for host in self.hypervisors:
            try:
                net = self._call("get", f"network {net_name}", self.conn_to(host).networkLookupByName, net_name)
            except _Missing:
                continue
            if ET.fromstring(self._call("get", f"network {net_name}", net.XMLDesc, 0)).find("./ip/dhcp") is not None:
                found.append(net)
        return found

    def _remove_dhcp_host(self, network, name, meta, what):
        entry = lx.dhcp_host_xml(meta["mac"], name, meta["address"])
        try:
            nets = self._dhcp_networks(network)
        except ProviderError as exc:
            log.warning("%s: DHCP host entry %s left on network %s: %s", what, meta["address"], network, exc)
            return
        for net in nets:
            try:
                if meta["mac"] not in self._call("get", what, net.XMLDesc, 0):
                    continue
                self._call("delete", what, net.update, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                           libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, entry,
                           libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
            except ProviderError as exc:
                log.warning("%s: DHCP host entry %s left on the network: %s", what, meta["address"], exc)

    def _locate(self, instance_id, what):
        """``(hypervisor, domain)`` of ``instance_id``, or ``(None, None)``.

        On two hypervisors (a migration under way, or one that failed
        half-way) the persistent, then the running one is taken.
        """
        found = []
        for host in self.hypervisors:
            try:
                found.append((host, self._call("get", what, self.conn_to(host).lookupByName, instance_id)))
            except _Missing:
                continue
        if not found:
            return None, None
        if len(found) > 1:
            found.sort(key=lambda hd: (not hd[1].isPersistent(), not hd[1].isActive()))
        return found[0]

    def _domain(self, instance_id, what):
        return self._find(instance_id, what)[1]

    def _find(self, instance_id, what):
        """``(hypervisor, domain)`` of ``instance_id``, or a ProviderError saying there is none."""
        host, dom = self._locate(instance_id, what)
        if dom is None:
            raise ProviderError(f"{what}: libvirt has no instance named {instance_id}")
        return host, dom

    def _available_mib(self, host=None):
        """Memory available to new work on hypervisor ``host`` (default: the first), MiB.

        Local URI: the host's ``MemAvailable``. Remote: libvirt's node memory
        stats (free + buffers + cached), the closest it reports.
        """
        host = self.default_host if host is None else host
        uri = self.hypervisors[host]["uri"]
        if uri.split(":", 1)[0] in ("qemu", "qemu+unix") and "///" in uri:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) // 1024
        stats = self._call("get", "read memory stats", self.conn_to(host).getMemoryStats,
                           libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        return sum(stats.get(k, 0) for k in ("free", "buffers", "cached")) // 1024

    def hosts(self):
        """Each hypervisor with its CPUs and memory minus those of its active domains.

        With several hypervisors, one that does not answer is reported with
        ``state="down"`` and nothing free, so placement and migration pass it by.
        """
        out = []
        for host in self.hypervisors:
            try:
                out.append(self._capacity(host))
            except ProviderError as exc:
                if len(self.hypervisors) == 1:
                    raise
                log.warning("hypervisor %s: %s", host, exc)
                out.append(Host(name=self._label(host), cpus_free=0, memory_free_mb=0, state="down"))
        return out

    def _capacity(self, host):
        conn = self.conn_to(host)
        info = self._call("get", "read node info", conn.getInfo)
        memory_mb, cpus = int(info[1]), int(info[2])
        used_cpus = used_mb = active = 0
        for dom in self._call("list", "list domains", conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            _state, max_kib, _mem, vcpus, _cpu_time = dom.info()
            active += 1
            used_cpus += vcpus
            used_mb += max_kib // 1024
        return Host(name=self._label(host), cpus_free=max(0, cpus - used_cpus),
                    memory_free_mb=max(0, memory_mb - used_mb), instances=active)
