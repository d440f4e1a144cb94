"""libvirt provider: virtual nodes as QEMU virtual machines (KVM or TCG).

Config keys (pillar ``vcluster:providers:<name>``):

``uri``           libvirt connection URI (default ``qemu:///system``; a remote
                  hypervisor: ``qemu+ssh://root@host/system``).
``hosts``         instead of ``uri``: several hypervisors by name, ``{name:
                  URI}`` or ``{name: {uri, migration_address}}``; nodes are
                  placed on the one with the most free memory and
                  :meth:`LibvirtProvider.migrate` live-migrates between them
                  (:mod:`vcluster.providers.libvirt_migrate`).
``network``       libvirt network the nic joins; its dnsmasq hands out the
                  spec's address as a static DHCP host entry (a spec
                  without one gets a lease from the network's range, read
                  back from the network's leases).
``storage_pool``  libvirt storage pool holding the image (volumes
                  ``<image>.qcow2``, ``<image>.vmlinuz``, ``<image>.initrd``
                  from ``image-vm/build.sh``) and the nodes' overlay and
                  seed volumes.
``domain_type``   ``kvm``, ``qemu`` (TCG, software emulation) or ``auto``
                  (default): ``kvm`` when libvirt offers it and the host CPU
                  has ``vmx``/``svm``, else ``qemu``.
``machine``       QEMU machine type (default ``pc``).
``cmdline``       kernel command line (default: root on vda, serial console).
``tcg_cache_mib`` TCG translation cache per guest (default 128; QEMU's own
                  default, 1024, cost 512 MiB more QEMU RSS per guest here).
``shared_storage``  ``true``: the pool is shared by the hypervisors though
                  libvirt cannot tell (local directory of two daemons on one
                  machine): migrations pass ``VIR_MIGRATE_UNSAFE``, and the
                  nodes' volumes are QEMU's own, never relabelled by libvirt.
``clock_sync_timeout``  seconds resume waits for the guest agent to step
                  the guest clock (default 30).
``minion_restart_timeout``  seconds a resume waits for the guest agent to
                  reset the minion's connections to the master, and the
                  runner's fallback to queue ``systemctl restart salt-minion``
                  (default 60; the restart itself is not waited for).

``spec.extra`` may hold ``machine`` and ``cmdline`` overriding the provider's.

Reaching libvirt: the runner on the master opens the URI with
libvirt-python, as the LXD and cloud providers talk to their APIs directly:
one connection, libvirt's own authentication (SSH keys for ``qemu+ssh``),
and no dependency on a minion on the hypervisor being up (the hypervisor may
also be the bare-metal Slurm node whose minion runs states).

Instance ids are domain names (the node names). Suspend modes: ``pause``
stops the vCPUs (RAM kept, virDomainSuspend); ``save`` (and ``suspend``,
the engine's word for "memory to disk where the provider can") is libvirt's
managed save: the guest's RAM goes to a file on the hypervisor and the QEMU
process exits, so the host gets the memory back; ``resume`` restores it
(or lifts the pause) and steps the guest clock; once the node's jobs run
again the runner has the guest minion's connections to the master reset so
that it reconnects at once (``reconnect_minion``, :mod:`vcluster.providers.libvirt_guest`).
"""

import logging
import secrets
import threading
import time
import xml.etree.ElementTree as ET

import libvirt

from vcluster.errors import PolicyError, ProviderError, ProviderStateError
from vcluster.providers import libvirt_memory, libvirt_migrate
from vcluster.providers import libvirt_xml as lx
from vcluster.providers.base import Instance, Provider, Status, SuspendModes, spec_names
from vcluster.providers.libvirt_conn import Connection, _Missing
from vcluster.providers.libvirt_guest import GuestAgent
from vcluster.providers.libvirt_hosts import Hypervisors
from vcluster.providers.libvirt_migrate import Migration
from vcluster.providers.libvirt_options import hypervisor_uris

log = logging.getLogger(__name__)

#: suspend modes -> what libvirt does ("suspend", the old default word, is a save).
SUSPEND_MODES = {"pause": "pause", "save": "save", "suspend": "save"}
DOMAIN_TYPES = ("auto", "kvm", "qemu")


class LibvirtProvider(Connection, Hypervisors, GuestAgent, Migration, Provider):
    """Virtual nodes as libvirt/QEMU domains."""

    driver = "libvirt"
    #: in the vocabulary of providers.base.SUSPEND_MODES (old names resolve: suspend -> save)
    suspend_modes = SuspendModes(("pause", "save"))

    def __init__(self, name, config):
        super().__init__(name, config)
        for key in ("network", "storage_pool"):
            if not self.config.get(key):
                raise PolicyError(f"vcluster:providers:{name}:{key} is required by the libvirt driver")
        if self.config.get("hosts") and self.config.get("uri"):
            raise PolicyError(f"vcluster:providers:{name} gives both uri and hosts: name one hypervisor with uri "
                              f"or several with hosts, not both")
        if self.config.get("hosts"):
            #: hypervisor name -> {"uri", "migration_address"}; the key None is the one ``uri`` (named by libvirt)
            self.hypervisors = hypervisor_uris(self.config["hosts"], f"vcluster:providers:{name}:hosts")
        else:
            self.hypervisors = {None: {"uri": self.config.get("uri") or "qemu:///system", "migration_address": None}}
        self.default_host = next(iter(self.hypervisors))
        self.uri = self.hypervisors[self.default_host]["uri"]
        self.network = self.config["network"]
        self.storage_pool = self.config["storage_pool"]
        self.domain_type_setting = self.config.get("domain_type") or "auto"
        if self.domain_type_setting not in DOMAIN_TYPES:
            raise PolicyError(f"vcluster:providers:{name}:domain_type must be one of {', '.join(DOMAIN_TYPES)}, "
                              f"got {self.domain_type_setting!r}")
        self.machine = self.config.get("machine") or "pc"
        self.cmdline = self.config.get("cmdline") or lx.CMDLINE
        self.clock_sync_timeout = float(self.config.get("clock_sync_timeout") or 30)
        self.minion_restart_timeout = float(self.config.get("minion_restart_timeout") or 60)
        self.tb_cache_mib = int(self.config.get("tcg_cache_mib") or 128)
        self.shared_storage = self.config.get("shared_storage") is True
        self._conns = {}
        self._labels = {}
        self._domain_type = None
        self._lock = threading.RLock()

    # -- plumbing ------------------------------------------------------------

    @property
    def domain_type(self):
        """``kvm`` or ``qemu``: the setting, or what ``auto`` detects once."""
        if self._domain_type is None:
            if self.domain_type_setting != "auto":
                self._domain_type = self.domain_type_setting
            else:
                caps = ET.fromstring(self._call("get", "read capabilities", self.conn.getCapabilities))
                offered = {d.get("type") for d in caps.iter("domain")}
                features = {f.get("name") for f in caps.findall("./host/cpu/feature")}
                self._domain_type = "kvm" if "kvm" in offered and features & {"vmx", "svm"} else "qemu"
        return self._domain_type

    def _qemu_owner(self, host):
        """(uid, gid) of QEMU on ``host``: with ``shared_storage`` the nodes' volumes are created QEMU's own
        and libvirt is told not to relabel them, since a libvirtd that cannot tell the pool is shared gives
        a migrated node's disk back to root at the end of the move (a node that arrived paused then cannot
        reopen it when it runs)."""
        caps = self._call("get", "read capabilities", self.conn_to(host).getCapabilities)
        return lx.qemu_owner(caps, self.domain_type)

    def _image(self, pool, image):
        """Paths of the image's base disk, kernel and initramfs, or a clear error."""
        paths = {}
        for part, suffix in (("disk", "qcow2"), ("kernel", "vmlinuz"), ("initrd", "initrd")):
            try:
                vol = self._call("get", f"image {image}", pool.storageVolLookupByName, f"{image}.{suffix}")
            except _Missing:
                raise ProviderError(f"libvirt pool {self.storage_pool} has no image '{image}' "
                                    f"(volume {image}.{suffix} is missing: run image-vm/build.sh)") from None
            paths[part] = vol.path()
        return paths

    # -- lifecycle -------------------------------------------------------------

    def create(self, specs):
        """Define and start one domain per spec (overlay, seed, DHCP entry).

        Everything is checked first (names free on every hypervisor, images
        and networks exist); then each node is made in turn, on the
        hypervisor with the most free memory (:func:`place`). All or
        nothing: on any error what this call made is deleted again.
        """
        specs = list(specs)
        if not specs:
            return []
        names = spec_names(specs)
        existing = set()
        for host in self.hypervisors:
            existing |= {d.name() for d in self._call("list", "list domains", self.conn_to(host).listAllDomains, 0)}
        taken = sorted(set(names) & existing)
        if taken:
            raise ProviderError(f"libvirt already has domains named {', '.join(taken)}: delete them or use other names")
        if len(self.hypervisors) > 1:
            free = {self._key(h.name): h.memory_free_mb for h in self.hosts() if h.state == "up"}
            targets = libvirt_migrate.place([lx.guest_memory_mib(s.memory_mb) for s in specs], free)
        else:
            targets = [self.default_host] * len(specs)
        pools, images, networks, dhcp = {}, {}, {}, {}
        for spec, host in zip(specs, targets, strict=True):
            if host not in pools:
                pools[host] = self._pool(host)
                self._call("get", f"refresh pool {self.storage_pool}", pools[host].refresh, 0)
            if (host, spec.image) not in images:
                images[host, spec.image] = self._image(pools[host], spec.image)
            net = spec.network or self.network
            if (host, net) not in networks:
                try:
                    networks[host, net] = self._call("get", f"network {net}", self.conn_to(host).networkLookupByName,
                                                     net)
                except _Missing:
                    raise ProviderError(f"cannot create {spec.name}: libvirt has no network '{net}'"
                                        f"{self._on(host)}") from None
            if spec.address and net not in dhcp:
                dhcp[net] = self._dhcp_networks(net)
                if not dhcp[net]:
                    raise ProviderError(f"cannot create {spec.name} on {spec.address}: no hypervisor's network "
                                        f"'{net}' hands out addresses (its <ip> has no <dhcp>)")
        request = secrets.token_hex(8)
        made = []
        try:
            for spec, host in zip(specs, targets, strict=True):
                net = spec.network or self.network
                made.append(self._create_one(spec, host, pools[host], images[host, spec.image],
                                             net, dhcp.get(net, []), request))
        except Exception as exc:
            self.delete([s.name for s in specs[:len(made) + 1]], request=request)
            if isinstance(exc, ProviderError):
                raise type(exc)(str(exc)) from exc
            raise ProviderError(f"creating libvirt domains failed: {exc}") from exc
        return made

    def _create_one(self, spec, host, pool, image, net_name, dhcp_nets, request):
        mac = lx.mac_for(spec.address)
        disk, seed = f"{spec.name}.qcow2", f"{spec.name}-seed.iso"
        what = f"create {spec.name}"
        conn = self.conn_to(host)
        owner = self._qemu_owner(host) if self.shared_storage else None
        self._call("volume", what, pool.createXML, lx.overlay_xml(disk, image["disk"], owner), 0)
        iso = lx.seed_iso(spec, f"{spec.name}-{request}")
        vol = self._call("volume", what, pool.createXML, lx.raw_volume_xml(seed, len(iso), owner), 0)
        self._upload(conn, vol, iso, what)
        xml = lx.domain_xml(spec, self.domain_type, self.storage_pool,
                            {"kernel": image["kernel"], "initrd": image["initrd"], "disk": disk, "seed": seed},
                            net_name, mac, request, machine=spec.extra.get("machine") or self.machine,
                            cmdline=spec.extra.get("cmdline") or self.cmdline,
                            console_log=f"/var/log/libvirt/qemu/{spec.name}-console.log",
                            tb_cache_mib=self.tb_cache_mib, memory_mib=lx.guest_memory_mib(spec.memory_mb),
                            relabel=owner is None)
        dom = self._call("create", what, conn.defineXML, xml)
        # After the definition: a rollback finds the entries through the domain's metadata.
        if spec.address:
            for net in dhcp_nets:
                self._call("network", f"{what}: DHCP host {spec.address}", net.update,
                           libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                           lx.dhcp_host_xml(mac, spec.name, spec.address),
                           libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
        self._call("start", f"start {spec.name}", dom.create)
        return Instance(id=spec.name, name=spec.name, status=Status.RUNNING, address=spec.address,
                        host=self._label(host), tags={k: str(v) for k, v in spec.tags.items()})

    def _upload(self, conn, vol, data, what):
        stream = conn.newStream(0)
        try:
            self._call("volume", what, vol.upload, stream, 0, len(data), 0)
            view = memoryview(data)
            while view:
                sent = stream.send(bytes(view[:1 << 20]))
                view = view[sent:]
            stream.finish()
        except libvirt.libvirtError as exc:
            stream.abort()
            raise ProviderError(f"{what}: uploading the seed failed: {exc.get_error_message()}") from exc

    def delete(self, instance_ids, request=None):
        """Destroy and undefine domains, then remove their volumes and DHCP entry.

        Missing ids are ignored. With ``request`` (a rollback), only domains
        that create call made are touched, never a namesake. Returns the ids
        that existed and are now gone.
        """
        deleted, errors = [], []
        for name in dict.fromkeys(instance_ids):
            try:
                if self._delete_one(name, request):
                    deleted.append(name)
            except ProviderError as exc:
                errors.append(str(exc))
        if errors:
            raise ProviderError("; ".join(errors))
        return deleted

    def _delete_one(self, name, request):
        what = f"delete {name}"
        host, dom = self._locate(name, what)
        meta = self._meta(dom) if dom is not None else None
        if request is not None and (meta or {}).get("request") not in (None, request):
            return False  # a namesake made by someone else
        if dom is not None:
            network = None
            if meta and meta.get("address"):
                source = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).find("./devices/interface/source")
                network = source.get("network") if source is not None else None
            if dom.isActive():
                try:
                    self._call("delete", what, dom.destroy)
                except ProviderStateError:
                    pass  # stopped meanwhile
            flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            self._call("delete", what, dom.undefineFlags, flags)
            if network:
                self._remove_dhcp_host(network, name, meta, what)
        elif request is None:
            return False
        # The volumes of a node that moved were made through another hypervisor's
        # view of the shared pool: refreshed, this one sees them.
        for pool_host in [host] if dom is not None else list(self.hypervisors):
            pool = self._pool(pool_host)
            self._call("get", what, pool.refresh, 0)
            for vol_name in (f"{name}.qcow2", f"{name}-seed.iso"):
                try:
                    vol = self._call("get", what, pool.storageVolLookupByName, vol_name)
                    self._call("delete", what, vol.delete, 0)
                except _Missing:
                    pass
        return dom is not None

    # -- queries -----------------------------------------------------------------

    def _meta(self, dom):
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, lx.NS, 0)
        except libvirt.libvirtError:
            return None  # not one of ours
        return lx.parse_metadata(text)

    def list(self, cluster):
        """Domains tagged ``cluster`` (one listing call, then each domain's metadata)."""
        return [i for i in self.list_all() if i.tags.get("cluster") == cluster]

    def list_all(self):
        """Every domain carrying vcluster metadata, on every hypervisor (one listing call each).

        A domain found on two hypervisors is in the middle of a migration:
        the persistent one (the source, until the move ends) is reported.
        """
        found = {}
        for host in self.hypervisors:
            for dom in self._call("list", "list domains", self.conn_to(host).listAllDomains, 0):
                meta = self._meta(dom)
                if meta is None:
                    continue
                try:
                    if dom.name() in found and not dom.isPersistent():
                        continue
                    found[dom.name()] = self._to_instance(dom, meta, self._label(host))
                except libvirt.libvirtError:
                    continue  # undefined while we looked
        return list(found.values())

    def get(self, instance_id):
        """One domain (tagged or not), or ``None``."""
        host, dom = self._locate(instance_id, f"get {instance_id}")
        if dom is None:
            return None
        return self._to_instance(dom, self._meta(dom) or lx.parse_metadata(f'<n xmlns="{lx.NS}"/>'),
                                 self._label(host))

    def _to_instance(self, dom, meta, host):
        status = self._status(dom)
        fault = None
        if status is Status.ERROR:
            fault = "the guest crashed" if dom.state()[0] == libvirt.VIR_DOMAIN_CRASHED else \
                "its QEMU process ended unexpectedly (killed or crashed)"
        address = meta.get("address")
        if address is None and status is Status.RUNNING:
            address = self._leased_address(dom)
        return Instance(id=dom.name(), name=dom.name(), status=status, address=address,
                        host=host, tags=meta["tags"], fault=fault)

    def _leased_address(self, dom):
        """The IPv4 address the network's DHCP server leased to a node created without one.

        A hypervisor whose network only bridges onto another's (no dnsmasq
        of its own) has no lease: the hypervisor's ARP table answers then.
        """
        for source in (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP):
            try:
                found = dom.interfaceAddresses(source, 0)
            except libvirt.libvirtError:
                continue
            for iface in (found or {}).values():
                for addr in iface.get("addrs") or []:
                    if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                        return addr["addr"]
        return None

    def _status(self, dom):
        state, reason = dom.state()
        if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
            return Status.ERROR  # QEMU died under libvirt (libvirt's word for a killed process too)
        if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
            return Status.RUNNING
        if state == libvirt.VIR_DOMAIN_PAUSED:
            if reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY):
                return Status.MIGRATING
            if reason in (libvirt.VIR_DOMAIN_PAUSED_SAVE, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP):
                return Status.BUILDING if reason == libvirt.VIR_DOMAIN_PAUSED_STARTING_UP else Status.RUNNING
            return Status.PAUSED
        if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
            return Status.SUSPENDED
        if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTDOWN):
            return Status.SUSPENDED if dom.hasManagedSaveImage(0) else Status.STOPPED
        if state == libvirt.VIR_DOMAIN_CRASHED:
            return Status.ERROR
        return Status.UNKNOWN

    # -- suspend / resume ------------------------------------------------------

    def suspend(self, instance_id, mode="suspend"):
        """``pause`` (vCPUs stopped) or ``save``/``suspend`` (managed save, QEMU gone).

        Returns ``{"mode", "seconds", "freed_mib", "process_mib",
        "available_delta_mib"}``:

        * ``freed_mib``: what the QEMU process held right before a save,
          counted once it is gone (:mod:`~vcluster.providers.libvirt_memory`:
          its PSS on this machine, libvirt's RSS statistic of a remote
          hypervisor); 0 for a pause (QEMU keeps its memory); ``None`` for a
          no-op on an instance already in that state, or when it could not
          be read;
        * ``process_mib``: that measurement (``{"source", "pid", "rss_mib",
          "pss_mib"}``, save only);
        * ``available_delta_mib``: the hypervisor's available memory after
          minus before (save only): what the rest of the host did meanwhile
          is in it too, so it is a second opinion, not the figure.
        """
        if mode not in SUSPEND_MODES:
            raise ProviderError(f"libvirt can pause or save a VM: suspend mode '{mode}' is not one of "
                                f"{', '.join(SUSPEND_MODES)}")
        action = SUSPEND_MODES[mode]
        what = f"{action} {instance_id}"
        host, dom = self._find(instance_id, what)
        status = self._status(dom)
        if (action, status) in (("pause", Status.PAUSED), ("save", Status.SUSPENDED)):
            return {"mode": action, "seconds": 0.0, "freed_mib": None}
        if status not in (Status.RUNNING, Status.PAUSED) or (action == "pause" and status is not Status.RUNNING):
            raise ProviderStateError(f"cannot {action} {instance_id}: it is {status.value}, not running")
        if action == "pause":
            start = time.monotonic()
            self._call("suspend", what, dom.suspend)
            return {"mode": action, "seconds": round(time.monotonic() - start, 2), "freed_mib": 0}
        held = libvirt_memory.held_before_save(self.hypervisors[host]["uri"], dom)
        before = self._available_mib(host)
        start = time.monotonic()
        # Restore running even if it was paused, and keep the save file out of the page cache.
        flags = libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE | libvirt.VIR_DOMAIN_SAVE_RUNNING
        self._call("suspend", what, dom.managedSave, flags)
        seconds = time.monotonic() - start
        return {"mode": action, "seconds": round(seconds, 2), "freed_mib": libvirt_memory.freed_after_save(held, dom),
                "process_mib": held, "available_delta_mib": self._available_mib(host) - before}

    def resume(self, instance_id):
        """Undo a pause (virDomainResume) or a save (start from the managed save image).

        The guest's clock stood still meanwhile: it is stepped to the host's
        through the guest agent. The guest minion's connections to the
        master are not touched here: the runner has them reset
        (``reconnect_minion``, :mod:`~vcluster.providers.libvirt_guest`) once
        the node's jobs run again.
        slurmd is never restarted: it holds no connection to slurmctld
        between messages (each RPC is its own connection under
        ``MessageTimeout``), and a restart while jobs run is a risk for
        nothing.

        Returns ``{"seconds", "clock_offset_before", "clock_offset_after",
        "clock_step_s"}``: the restore's seconds, offsets guest minus host in
        seconds (``None`` when the agent did not answer within
        ``clock_sync_timeout``), and the step's seconds.
        """
        what = f"resume {instance_id}"
        dom = self._domain(instance_id, what)
        status = self._status(dom)
        start = time.monotonic()
        if status is Status.RUNNING:
            return {"seconds": 0.0, "clock_offset_before": None, "clock_offset_after": None, "clock_step_s": 0.0}
        if status is Status.PAUSED:
            self._call("resume", what, dom.resume)
        elif status is Status.SUSPENDED and not dom.isActive():
            self._call("resume", what, dom.createWithFlags, libvirt.VIR_DOMAIN_START_BYPASS_CACHE)
        else:
            raise ProviderStateError(f"cannot resume {instance_id}: it is {status.value}, not paused or saved")
        seconds = round(time.monotonic() - start, 2)
        stepping = time.monotonic()
        before, after = self._step_clock(dom, what)
        return {"seconds": seconds, "clock_offset_before": before, "clock_offset_after": after,
                "clock_step_s": round(time.monotonic() - stepping, 2)}

