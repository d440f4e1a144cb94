"""The OpenNebula provider class: create, list, delete, suspend/resume/migrate and hosts.

The connection and its error mapping are in :mod:`.api`, the state tables
and action rules in :mod:`.states`, a VM's XML (extra template, tags read
back) in :mod:`.vms`; the package's docstring tells how a node is made.
"""

import logging
import os
import stat
import urllib.parse

from vcluster.errors import PolicyError, ProviderError, ProviderStateError, ProviderTimeout
from vcluster.providers.base import Host, Instance, Provider, Status, SuspendModes
from vcluster.providers.opennebula import api, vms
from vcluster.providers.opennebula.states import (
    ALLOWED_LABELS,
    HOST_STATE_WORD,
    HOST_STATES,
    VM_STATES,
    allowed,
    state_label,
    state_names,
    status_of,
)

log = logging.getLogger(__name__)

#: suspend modes (vcluster.providers.base.SUSPEND_MODES) -> (one.vm.action, resting STATE names it
#: leads to). ``save``: the VM's memory is saved on its host and the host RAM freed; ``shelve``: the
#: VM leaves the host, only its disks are kept (UNDEPLOYED reads as SHELVED).
SUSPEND_MODES = {
    "save": ("suspend", {"SUSPENDED"}),
    "shelve": ("undeploy", {"UNDEPLOYED"}),
}
#: OpenNebula's own actions, accepted by name by :meth:`OpenNebulaProvider.suspend` for its direct
#: callers; not modes of the engine.
ONE_ACTIONS = {
    "stop": ("stop", {"STOPPED"}),
    "poweroff": ("poweroff", {"POWEROFF"}),
    "poweroff-hard": ("poweroff-hard", {"POWEROFF"}),
    "undeploy": ("undeploy", {"UNDEPLOYED"}),
    "undeploy-hard": ("undeploy-hard", {"UNDEPLOYED"}),
}


class OpenNebulaProvider(Provider):
    """Virtual nodes as OpenNebula VMs (XML-RPC through pyone).

    Provider options (pillar ``vcluster:providers:<name>``): ``endpoint``,
    ``credentials_file`` (``user:password``, mode 0600) or ``session``,
    ``timeout`` (s, default 30), ``verify_tls``, ``pool_filter`` (default -3,
    the user's own VMs), ``cpu_factor``, ``enforce_capacity``, ``boot``,
    ``start_command``, ``context``, ``template``, ``network_owner``.
    Profile keys reach it through ``spec.extra`` and win over these.
    """

    driver = "opennebula"
    suspend_modes = SuspendModes(SUSPEND_MODES)

    def __init__(self, name, config, transport=None):
        super().__init__(name, config)
        if api.pyone is None:
            raise PolicyError("the opennebula driver needs pyone: pip install 'vcluster[opennebula]'")
        session = self.config.pop("session", None)
        endpoint = self.config.get("endpoint")
        if not endpoint or not isinstance(endpoint, str):
            raise PolicyError(f"vcluster:providers:{name}:endpoint is required (e.g. https://one:2633/RPC2)")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PolicyError(f"vcluster:providers:{name}:endpoint must be an http(s) URL, got {api.safe_url(endpoint)!r}")
        self.endpoint = api.safe_url(endpoint)
        session = self._load_session(session)
        self.timeout = float(self.config.get("timeout", 30))
        self.pool_filter = int(self.config.get("pool_filter", api.POOL_MINE))
        self._template_ids = {}
        self._one = api.Connection(name, endpoint, session, self.timeout, self.config.get("verify_tls", True),
                                   transport)

    def __repr__(self):
        return f"OpenNebulaProvider(name={self.name!r}, endpoint={self.endpoint!r})"

    # -- configuration -----------------------------------------------------

    def _load_session(self, session):
        path = self.config.get("credentials_file")
        where = f"vcluster:providers:{self.name}"
        if path and session:
            raise PolicyError(f"{where} sets both credentials_file and session; keep one")
        if path:
            try:
                st = os.stat(path)
                with open(path, encoding="utf-8") as handle:
                    session = handle.read().strip().splitlines()[0].strip() if st.st_size else ""
            except (OSError, IndexError) as exc:
                raise PolicyError(f"{where}:credentials_file {path} cannot be read ({exc.__class__.__name__})") from None
            if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
                raise PolicyError(f"{where}:credentials_file {path} is readable by others; chmod 600 it")
            if st.st_mode & stat.S_IRGRP:
                log.warning("OpenNebula credentials file %s is readable by its group", path)
        if not session or not isinstance(session, str) or ":" not in session:
            raise PolicyError(f"{where} needs credentials: credentials_file or session in the form user:password")
        return session

    def _opt(self, spec, key, default=None):
        return vms.option(spec, self.config, key, default)

    # -- the one place that talks to OpenNebula ----------------------------

    def _call(self, kind, method, *args):
        """Call ``one.<method>`` (counted as ``kind``, its retries as ``retry``); every failure is a vcluster error."""
        self.calls[kind] += 1
        log.debug("opennebula %s: one.%s", self.name, method)
        before = self._one.retried
        try:
            return self._one.call(method, *args)
        finally:
            if self._one.retried > before:
                self.calls["retry"] += self._one.retried - before

    # -- reading VMs ---------------------------------------------------------

    def _pool(self):
        """Every VM of the pool filter, in every state but DONE: one call."""
        pool = self._call("list", "vmpool.infoextended", self.pool_filter, -1, -1, -1)
        return list(getattr(pool, "VM", None) or [])

    def _instance(self, vm):
        tags = vms.tags_of(vm)
        status = status_of(vm.STATE, vm.LCM_STATE)
        fault = None
        if status is Status.ERROR:
            fault = vms.error_of(vm) or f"OpenNebula reports state {state_label(vm.STATE, vm.LCM_STATE)}"
        elif status is Status.UNKNOWN:
            fault = f"OpenNebula reports state {state_label(vm.STATE, vm.LCM_STATE)}"
        return Instance(id=str(vm.ID), name=str(vm.NAME), status=status, address=vms.address_of(vm),
                        host=vms.host_of(vm), tags=tags, fault=fault)

    def list(self, cluster):
        """Instances tagged ``VCLUSTER_CLUSTER=cluster`` (one vmpool call)."""
        return [self._instance(vm) for vm in self._pool() if vms.tags_of(vm).get("cluster") == cluster]

    def list_all(self):
        """Every VM of the pool filter that carries vcluster tags."""
        return [self._instance(vm) for vm in self._pool() if vms.tags_of(vm).get("cluster")]

    def get(self, instance_id):
        """One of our VMs (``one.vm.info``), or ``None`` when gone or not ours."""
        vm = self._vm(instance_id, required=False)
        return None if vm is None else self._instance(vm)

    def _vm(self, instance_id, required=True):
        vm = None
        if str(instance_id).strip().isdigit():
            try:
                vm = self._call("get", "vm.info", int(instance_id))
            except api.NotFound:
                pass
        if vm is not None and (VM_STATES[int(vm.STATE)] == "DONE" or not vms.tags_of(vm).get("cluster")):
            vm = None
        if vm is None and required:
            raise ProviderError(f"OpenNebula has no vcluster VM {instance_id}")
        return vm

    # -- create ----------------------------------------------------------------

    def create(self, specs):
        """Instantiate one VM per spec; all or nothing."""
        specs = list(specs)
        for spec in specs:
            self._validate(spec)
        templates = [self._template_id(spec) for spec in specs]  # before any side effect
        created = []
        try:
            for spec, template_id in zip(specs, templates, strict=True):
                extra = self.extra_template(spec)
                vid = self._call("create", "template.instantiate", template_id, spec.name, False, extra, False)
                created.append((str(vid), spec))
                log.info("opennebula %s: instantiated VM %s for %s", self.name, vid, spec.name)
        except Exception as exc:
            # after a timeout, a lost connection or an HTTP 5xx OpenNebula may
            # have made a VM whose id we never saw: look for it by its tags too
            uncertain = (isinstance(exc, (ProviderTimeout, api.Unreachable))
                         or getattr(exc, "http_status", 0) >= 500)
            note = self._cleanup(created, specs, sweep=uncertain)
            if isinstance(exc, api.NotFound):
                self._template_ids.clear()  # a template was deleted since we looked it up
                exc = ProviderError(f"OpenNebula at {self.endpoint} refused one.template.instantiate: {exc}")
            if isinstance(exc, ProviderError):
                raise type(exc)(f"{exc}; {note}" if note else str(exc)) from None
            raise
        return [
            Instance(id=vid, name=spec.name, status=Status.BUILDING, address=spec.address,
                     tags=dict(spec.tags))
            for vid, spec in created
        ]

    def _validate(self, spec):
        where = f"profile {spec.tags.get('profile', '?')}"
        if self._template_ref(spec) is None:
            raise PolicyError(f"{where}: the opennebula provider needs a VM template (template or image)")
        if spec.address and not (spec.network or self.config.get("network")):
            raise PolicyError(
                f"{where}: OpenNebula can pin address {spec.address} of {spec.name} only with a network"
            )
        if int(spec.cpus) < 1 or int(spec.memory_mb) < 1:
            raise PolicyError(f"{where}: cpus and memory must be positive for {spec.name}")
        mode = self._opt(spec, "boot", "start_script")
        if mode not in ("start_script", "cloud_init"):
            raise PolicyError(f"{where}: boot must be start_script or cloud_init, got {mode!r}")

    def _template_ref(self, spec):
        """The profile's ``template``, the provider's, else the image: a name or an ID."""
        for ref in (spec.extra.get("template"), self.config.get("template"), spec.image):
            if ref is not None and str(ref).strip():
                return ref
        return None

    def _template_id(self, spec):
        ref = self._template_ref(spec)
        if isinstance(ref, int) or str(ref).isdigit():
            return int(ref)
        if ref in self._template_ids:
            return self._template_ids[ref]
        pool = self._call("templates", "templatepool.info", api.POOL_ALL, -1, -1)
        found = [t for t in (getattr(pool, "VMTEMPLATE", None) or []) if t.NAME == ref]
        if not found:
            raise ProviderError(f"OpenNebula at {self.endpoint} has no VM template named {ref!r} visible to us")
        if len(found) > 1:
            ids = ", ".join(str(t.ID) for t in found)
            raise ProviderError(f"OpenNebula VM template name {ref!r} is ambiguous (IDs {ids}); use the ID")
        self._template_ids[ref] = int(found[0].ID)
        return self._template_ids[ref]

    def extra_template(self, spec):
        """The XML extra template merged into the VM template for ``spec``."""
        return vms.extra_template(spec, self.config)

    def _cleanup(self, created, specs, sweep=False):
        """Terminate what this create made (with ``sweep``, also VMs whose id we never saw)."""
        ids = [vid for vid, _ in created]
        if sweep:
            try:
                names = {s.name for s in specs}
                batch = {s.tags.get("registry_id") for s in specs}
                for vm in self._pool():
                    tags = vms.tags_of(vm)
                    if (str(vm.ID) not in ids and tags.get("node") in names
                            and tags.get("registry_id") in batch and tags.get("cluster")):
                        ids.append(str(vm.ID))
            except ProviderError as exc:
                log.warning("opennebula %s: could not look for half-created VMs: %s", self.name, exc)
        failed = []
        for vid in ids:
            try:
                self._terminate(int(vid), None)
            except ProviderError as exc:
                failed.append(f"{vid} ({exc})")
        if failed:
            return "cleanup failed for VM " + ", ".join(failed)
        return f"terminated VM {', '.join(ids)} created by this request" if ids else ""

    # -- delete ----------------------------------------------------------------

    def delete(self, instance_ids):
        """Terminate (hard) our VMs; gone or unknown ids are ignored."""
        # an id that is not a number never was an OpenNebula VM: nothing to delete
        wanted = [str(i).strip() for i in instance_ids if str(i).strip().isdigit()]
        if not wanted:
            return
        pool = {str(vm.ID): vm for vm in self._pool()}
        # DONE, never existed, or outside our pool filter: nothing to do
        found = [pool[vid] for vid in dict.fromkeys(wanted) if vid in pool]
        strangers = [f"{vm.ID} ({vm.NAME})" for vm in found if not vms.tags_of(vm).get("cluster")]
        if strangers:
            raise ProviderError(f"OpenNebula VM {', '.join(strangers)} carries no vcluster tags; not deleting")
        for vm in found:
            self._terminate(int(vm.ID), vm)

    def _terminate(self, vid, vm):
        """terminate-hard, or recover --delete in states terminate refuses."""
        if vm is not None:
            sname, lname = state_names(vm.STATE, vm.LCM_STATE)
            if sname == "DONE" or lname in ("EPILOG", "CLEANUP_DELETE"):
                return  # already going away
        try:
            self._call("delete", "vm.action", "terminate-hard", vid)
        except api.NotFound:
            return
        except ProviderStateError as first:
            try:
                self._call("delete", "vm.recover", vid, api.RECOVER_DELETE)
            except api.NotFound:
                return
            except ProviderError as exc:
                raise ProviderStateError(
                    f"VM {vid} cannot be terminated now ({first}) and recover --delete failed ({exc})"
                ) from None

    # -- suspend / resume / migrate -------------------------------------------

    def suspend(self, instance_id, mode="suspend"):
        """``save`` (OpenNebula suspend: memory on the host; also the old name ``suspend``),
        ``shelve`` (undeploy); OpenNebula's own ``stop`` (memory to the system datastore, host
        freed), ``poweroff``[-hard] and ``undeploy``[-hard] by name."""
        resolved = self.suspend_mode(mode)
        if resolved is None and mode not in ONE_ACTIONS:
            raise ProviderError(f"OpenNebula suspend mode must be one of {self.suspend_modes.described()} "
                                f"or OpenNebula's own {', '.join(ONE_ACTIONS)}, got {mode!r}")
        action, targets = SUSPEND_MODES[resolved] if resolved else ONE_ACTIONS[mode]
        vm = self._vm(instance_id)
        sname, lname = state_names(vm.STATE, vm.LCM_STATE)
        if sname in targets:
            return  # already there: nothing to do
        self._refuse_failed(vm, action)
        if not allowed(action, sname, lname):
            raise ProviderStateError(self._refusal(vm, action, action))
        self._call("suspend", "vm.action", action, int(vm.ID))

    def resume(self, instance_id):
        """Resume a SUSPENDED, STOPPED, POWEROFF, UNDEPLOYED (or UNKNOWN) VM."""
        vm = self._vm(instance_id)
        sname, lname = state_names(vm.STATE, vm.LCM_STATE)
        if sname == "ACTIVE" and lname == "RUNNING":
            return  # already running
        self._refuse_failed(vm, "resume")
        if not allowed("resume", sname, lname):
            raise ProviderStateError(self._refusal(vm, "resume", "resume"))
        self._call("resume", "vm.action", "resume", int(vm.ID))

    def migrate(self, instance_id, host=None, live=True):
        """``one.vm.migrate`` to ``host`` (name or ID); no host: reschedule.

        Live migration needs a RUNNING guest; a SUSPENDED or POWEROFF VM is
        moved cold (its saved state travels with it).
        """
        vm = self._vm(instance_id)
        sname, lname = state_names(vm.STATE, vm.LCM_STATE)
        self._refuse_failed(vm, "migrate")
        if not allowed("migrate", sname, lname):
            raise ProviderStateError(self._refusal(vm, "migrate", "migrate"))
        if host is None:
            if not allowed("resched", sname, lname):
                raise ProviderStateError(self._refusal(vm, "reschedule", "resched"))
            self._call("migrate", "vm.action", "resched", int(vm.ID))
            return
        hid, hname = self._host_id(host)
        current = vms.last_history(vm)
        if current is not None and int(current.HID) == hid:
            raise ProviderStateError(f"VM {vm.ID} ({vm.NAME}) already runs on host {hname}")
        live = bool(live) and sname == "ACTIVE" and lname == "RUNNING"
        enforce = bool(self.config.get("enforce_capacity", True))
        self._call("migrate", "vm.migrate", int(vm.ID), hid, live, enforce, -1, 0)

    def _host_id(self, host):
        if isinstance(host, int) or str(host).isdigit():
            return int(host), str(host)
        for h in self._host_pool():
            if h.NAME == host:
                return int(h.ID), h.NAME
        raise ProviderError(f"OpenNebula at {self.endpoint} has no host named {host!r}")

    def _refuse_failed(self, vm, what):
        if status_of(vm.STATE, vm.LCM_STATE) is Status.ERROR:
            reason = vms.error_of(vm) or "no reason recorded"
            raise ProviderError(
                f"cannot {what} VM {vm.ID} ({vm.NAME}): it failed in "
                f"{state_label(vm.STATE, vm.LCM_STATE)}: {reason}"
            )

    @staticmethod
    def _refusal(vm, what, action):
        label = state_label(vm.STATE, vm.LCM_STATE)
        accepted = ", ".join(ALLOWED_LABELS[action])
        return f"cannot {what} VM {vm.ID} ({vm.NAME}) in state {label}; OpenNebula allows it in {accepted}"

    # -- hosts -----------------------------------------------------------------

    def _host_pool(self):
        pool = self._call("hosts", "hostpool.info")
        return list(getattr(pool, "HOST", None) or [])

    def hosts(self):
        """Hypervisors with the CPU and memory not yet allocated to VMs."""
        result = []
        for h in self._host_pool():
            share = h.HOST_SHARE
            cpu_free = (int(share.MAX_CPU or 0) - int(share.CPU_USAGE or 0)) // 100
            mem_free = (int(share.MAX_MEM or 0) - int(share.MEM_USAGE or 0)) // 1024
            state = int(h.STATE)
            word = HOST_STATE_WORD.get(HOST_STATES[state], "unknown") if 0 <= state < len(HOST_STATES) else "unknown"
            result.append(Host(name=str(h.NAME), cpus_free=max(cpu_free, 0), memory_free_mb=max(mem_free, 0),
                               instances=int(share.RUNNING_VMS or 0), state=word))
        return result

    def close(self):
        """Close the HTTP session."""
        self._one.close()

