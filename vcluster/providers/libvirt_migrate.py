"""Live migration of the libvirt provider between the hypervisors of its ``hosts`` option.

A mixin of :class:`vcluster.providers.libvirt.LibvirtProvider` (it uses
the provider's ``hypervisors``, ``conn_to``, ``_call``, ``_find``,
``_status``, ``_pool``, ``_label``, ``_meta``, ``_to_instance`` and
``hosts``), and the pure placement rules :func:`place` and
:func:`choose_target`.

How a node moves (see docs/libvirt.md, "Live migration"):

* *managed direct* migration (``virDomainMigrate3`` with both connections
  held by the runner): the hypervisors need no libvirt credentials for each
  other, only the destination's QEMU port reachable from the source's
  (``migration_address``), which is what the runner's connections already
  give. ``VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE``: the
  definition moves with the guest, so the node exists on one hypervisor.
* *shared storage*: the overlay and seed volumes stay where they are; the
  destination has the pool under the same name on the same storage (NFS,
  Ceph, or here the one directory both daemons see: libvirt calls a local
  file system unsafe, so the ``shared_storage`` option vouches for it).
  Only memory and device state travel: on this machine copying the disks (``copy-storage``) would
  copy a file onto itself, and on a real site the node disks are small
  overlays on an image every hypervisor holds anyway.
* the same domain XML: name, MAC and ``<interface type='network'>`` stay,
  so on a network of the same name bridged to the same segment the guest
  keeps its address (its static DHCP entry is on every serving network,
  :meth:`LibvirtProvider._dhcp_networks`), its TCP connections and its jobs.
* a *saved* node (managed save: no QEMU process) moves saved: libvirt
  cannot migrate a save file (it lives in the source daemon's state
  directory), so it is restored paused on the source (the guest's RAM is
  taken there again for the few seconds of the move; its vCPUs never
  run there), moved paused, and saved again on the destination, where a
  resume restores it. Before that save it runs for an instant on the
  destination: QEMU 7.2 keeps an arrived guest's disks inactive until it
  runs and aborts on saving them (``bdrv_inactivate_recurse`` assertion);
  its Slurm jobs stay stopped (suspended: SIGSTOP). A move that fails
  leaves it saved on the source; a save that fails on the destination
  leaves it paused there (reported). A node
  that arrived by migration saves like any other: with ``shared_storage``
  its volumes are QEMU's own, so the source's end of the move cannot give
  them back to root (docs/libvirt.md).
"""

import logging
import time

import libvirt

from vcluster.errors import ProviderError, ProviderStateError
from vcluster.providers.base import Status

log = logging.getLogger(__name__)

#: Flags of every move: the definition goes with the guest, a failure leaves it on the source.
BASE_FLAGS = (libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
              | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)


def place(sizes_mib, free_mib):
    """Hypervisor of each new guest: the one with the most free memory, counting the ones placed before.

    ``sizes_mib``: each guest's memory; ``free_mib``: hypervisor -> free
    memory (an ordered mapping: ties go to the first). A guest that fits
    nowhere goes to the host with the most free memory anyway: libvirt (or
    the kernel) then says what is short, as on a single hypervisor.
    """
    if not free_mib:
        raise ProviderError("no hypervisor is up to place the new nodes on")
    free = dict(free_mib)
    out = []
    for size in sizes_mib:
        host = max(free, key=lambda h: free[h])  # max keeps the first of equals
        out.append(host)
        free[host] -= int(size)
    return out


def choose_target(source, need_mib, hosts, wanted=None):
    """The hypervisor a guest of ``need_mib`` on ``source`` moves to, or a ProviderError in one sentence.

    ``hosts``: the provider's :class:`~vcluster.providers.base.Host` list
    (names as the provider reports them). ``wanted`` names the destination;
    without it the up host other than ``source`` with the most free memory
    that fits the guest is taken.
    """
    names = [h.name for h in hosts]
    if wanted is not None:
        if wanted not in names:
            raise ProviderError(f"{wanted!r} is not one of its hypervisors ({', '.join(names)})")
        if wanted == source:
            raise ProviderError(f"it already runs on {wanted}")
        host = next(h for h in hosts if h.name == wanted)
        if host.state != "up":
            raise ProviderError(f"hypervisor {wanted} is {host.state}")
        return wanted
    others = [h for h in hosts if h.name != source and h.state == "up"]
    fits = [h for h in others if h.memory_free_mb >= need_mib]
    if not fits:
        seen = ", ".join(f"{h.name}: {h.memory_free_mb} MiB" for h in others) or "none is up"
        raise ProviderError(f"no other hypervisor has {need_mib} MiB free ({seen})")
    return max(fits, key=lambda h: h.memory_free_mb).name


def migration_params(migration_address):
    """``virDomainMigrate3`` parameters: where the destination's QEMU listens, when the host names it."""
    return {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{migration_address}"} if migration_address else {}


def job_summary(stats):
    """The completed migration job's statistics (libvirt's ms and bytes) as seconds and MiB."""
    def ms(key):
        return round(stats[key] / 1000, 3) if key in stats else None

    return {"downtime_s": ms("downtime"), "time_s": ms("time_elapsed"),
            "memory_mib": round(stats["memory_processed"] / 2**20, 1) if "memory_processed" in stats else None,
            "iterations": stats.get("memory_iteration")}


class Migration:
    """:meth:`migrate` of the libvirt provider (see the module docstring)."""

    #: What the last :meth:`migrate` measured (``None`` before the first): ``{"source", "host", "live",
    #: "paused", "saved", "seconds", "downtime_s", "time_s", "memory_mib", "iterations"}`` (libvirt's job
    #: statistics), and for a saved node ``restore_s`` (restored paused on the source) and ``save_s``
    #: (saved again on the destination) or ``save_error`` (left paused there).
    last_migration = None

    def migrate(self, instance_id, host=None, live=True):
        """Move a running or paused domain to hypervisor ``host`` (or the one with most free memory).

        Live (``live=True``): the guest runs while its memory is copied and
        stops only for the last pass (QEMU's downtime target, 300 ms by
        default); ``live=False`` pauses it for the whole copy. Name, MAC,
        address, disks and the guest's processes and connections stay; the
        definition moves (persistent on the destination, undefined on the
        source). A paused node moves paused, a saved one saved (see the
        module docstring). Returns the
        :class:`~vcluster.providers.base.Instance` with its new ``host``;
        :attr:`last_migration` holds the timings.

        CLI Example (through the runner):

        .. code-block:: bash

            salt-run vcluster.migrate node=vnode003 host=hv2
        """
        what = f"migrate {instance_id}"
        if len(self.hypervisors) < 2:
            raise ProviderError(f"cannot migrate {instance_id}: libvirt provider {self.name} has one hypervisor "
                                f"({self.uri}); name two or more under its hosts option to migrate")
        source, dom = self._find(instance_id, what)
        status = self._status(dom)
        if status not in (Status.RUNNING, Status.PAUSED, Status.SUSPENDED):
            raise ProviderStateError(f"cannot migrate {instance_id}: it is {status.value}, not running, paused "
                                     f"or saved")
        need_mib = dom.info()[1] // 1024
        try:
            target = choose_target(self._label(source), need_mib, self.hosts(), wanted=host)
        except ProviderError as exc:
            raise ProviderError(f"cannot migrate {instance_id}: {exc}") from None
        dest = self._key(target)
        dconn = self.conn_to(dest)
        # The destination's view of the shared pool must list the node's volumes.
        self._call("get", what, self._pool(dest).refresh, 0)
        start = time.monotonic()
        saved = {}
        if status is Status.SUSPENDED:  # restored paused here, moved paused, saved again there
            self._call("migrate", what, dom.createWithFlags,
                       libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_BYPASS_CACHE)
            saved["restore_s"] = round(time.monotonic() - start, 2)
        flags = BASE_FLAGS | (libvirt.VIR_MIGRATE_LIVE if live and status is Status.RUNNING else 0)
        if self.shared_storage:  # libvirt refuses a local file system ("without shared storage is unsafe")
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        params = migration_params(self.hypervisors[dest]["migration_address"])
        try:
            new = self._call("migrate", what, dom.migrate3, dconn, params, flags)
        except ProviderError:
            if saved:  # still on the source, paused: saved again there, as it was
                self._call("migrate", f"save {instance_id} again after a failed move", dom.managedSave,
                           libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE | libvirt.VIR_DOMAIN_SAVE_RUNNING)
            raise
        if saved:
            # The node has moved: a save that fails here leaves it paused on the destination (holding its
            # RAM there; a resume runs it), reported, not raised, so that the registry follows the move.
            # QEMU (7.2) keeps an arrived guest's disks inactive until it runs, and aborts a save of them
            # (block.c: bdrv_inactivate_recurse assertion, seen here): let it run the instant between
            # QEMU's cont and the save's stop. Its jobs stay stopped (Slurm suspended them: SIGSTOP).
            moved = time.monotonic()
            try:
                self._call("migrate", f"run {instance_id} on {target} to save it", new.resume)
                self._call("migrate", f"save {instance_id} on {target} after the move", new.managedSave,
                           libvirt.VIR_DOMAIN_SAVE_BYPASS_CACHE | libvirt.VIR_DOMAIN_SAVE_RUNNING)
                saved["save_s"] = round(time.monotonic() - moved, 2)
            except ProviderError as exc:
                log.warning("%s: moved to %s but left paused there, its save failed: %s", what, target, exc)
                saved["save_error"] = str(exc)
                if new.isActive() and self._status(new) is Status.RUNNING:
                    self._call("migrate", f"pause {instance_id} on {target} after a failed save", new.suspend)
        seconds = time.monotonic() - start
        try:
            stats = job_summary(new.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
        except libvirt.libvirtError:
            stats = job_summary({})
        self.last_migration = {"source": self._label(source), "host": target,
                               "live": bool(live) and status is Status.RUNNING,
                               "paused": status is Status.PAUSED, "saved": status is Status.SUSPENDED,
                               "seconds": round(seconds, 2), **stats, **saved}
        log.info("%s: moved from %s to %s in %.2f s (downtime %s s)", what, self._label(source), target,
                 seconds, stats["downtime_s"])
        return self._to_instance(new, self._meta(new) or {"tags": {}, "address": None}, target)
