"""OpenNebula provider: virtual nodes are OpenNebula VMs, driven over XML-RPC.

How a node is made (see docs/opennebula.md for the operator's side):

* ``one.template.instantiate`` of the profile's VM template (``template`` in
  the profile, else ``image``), one call per node: OpenNebula has no
  multi-create. The extra template (XML, root ``TEMPLATE``) sets the name,
  ``VCPU``/``CPU``/``MEMORY``, ``NIC=[NETWORK, IP]`` when the profile names a
  virtual network, a ``CONTEXT`` that carries the boot files, and the tags
  ``VCLUSTER_CLUSTER``, ``VCLUSTER_NODE``, ``VCLUSTER_PROFILE``,
  ``VCLUSTER_REGISTRY_ID``. OpenNebula keeps attributes it does not know in
  the VM's ``USER_TEMPLATE``, where ``list()`` reads them back.
* Boot files travel in ``CONTEXT/START_SCRIPT_BASE64``: a POSIX shell script
  that one-context runs at boot; it writes each file (base64 inside the
  script, written to a temporary name, chmod, then renamed) and restarts the
  minion. ``boot: cloud_init`` puts a ``#cloud-config`` into
  ``CONTEXT/USER_DATA`` instead, for images that run cloud-init.
* ``list()`` is one ``one.vmpool.infoextended`` call (VMs of the user, every
  state but DONE), filtered on ``VCLUSTER_CLUSTER``.

Actions are checked against the VM's STATE/LCM_STATE before they are sent
(the rules of OpenNebula's DispatchManager), and the server's own ACTION
errors are mapped to :class:`ProviderStateError` too. The session string
(``user:password``) comes from a master-only file or pillar and never
appears in a repr, a log record, a return value or an exception.
"""

import base64
import json
import logging
import os
import re
import shlex
import stat
import urllib.parse
import xml.etree.ElementTree as ET
import xml.parsers.expat
import xmlrpc.client

import requests

from vcluster import bootstrap
from vcluster.errors import PolicyError, ProviderError, ProviderStateError, ProviderTimeout, QuotaExceeded
from vcluster.providers.base import Host, Instance, Provider, Status

try:  # pragma: no cover - exercised by the import itself
    import pyone
except ImportError:  # pragma: no cover
    pyone = None

log = logging.getLogger(__name__)

TAG_PREFIX = "VCLUSTER_"

# -- OpenNebula's state numbers (docs: "Virtual Machines States Reference") --

VM_STATES = (
    "INIT", "PENDING", "HOLD", "ACTIVE", "STOPPED", "SUSPENDED", "DONE", "FAILED",
    "POWEROFF", "UNDEPLOYED", "CLONING", "CLONING_FAILURE",
)
LCM_STATES = (
    "LCM_INIT", "PROLOG", "BOOT", "RUNNING", "MIGRATE", "SAVE_STOP", "SAVE_SUSPEND",
    "SAVE_MIGRATE", "PROLOG_MIGRATE", "PROLOG_RESUME", "EPILOG_STOP", "EPILOG",
    "SHUTDOWN", "CANCEL", "FAILURE", "CLEANUP_RESUBMIT", "UNKNOWN", "HOTPLUG",
    "SHUTDOWN_POWEROFF", "BOOT_UNKNOWN", "BOOT_POWEROFF", "BOOT_SUSPENDED", "BOOT_STOPPED",
    "CLEANUP_DELETE", "HOTPLUG_SNAPSHOT", "HOTPLUG_NIC", "HOTPLUG_SAVEAS",
    "HOTPLUG_SAVEAS_POWEROFF", "HOTPLUG_SAVEAS_SUSPENDED", "SHUTDOWN_UNDEPLOY",
    "EPILOG_UNDEPLOY", "PROLOG_UNDEPLOY", "BOOT_UNDEPLOY", "HOTPLUG_PROLOG_POWEROFF",
    "HOTPLUG_EPILOG_POWEROFF", "BOOT_MIGRATE", "BOOT_FAILURE", "BOOT_MIGRATE_FAILURE",
    "PROLOG_MIGRATE_FAILURE", "PROLOG_FAILURE", "EPILOG_FAILURE", "EPILOG_STOP_FAILURE",
    "EPILOG_UNDEPLOY_FAILURE", "PROLOG_MIGRATE_POWEROFF", "PROLOG_MIGRATE_POWEROFF_FAILURE",
    "PROLOG_MIGRATE_SUSPEND", "PROLOG_MIGRATE_SUSPEND_FAILURE", "BOOT_UNDEPLOY_FAILURE",
    "BOOT_STOPPED_FAILURE", "PROLOG_RESUME_FAILURE", "PROLOG_UNDEPLOY_FAILURE",
    "DISK_SNAPSHOT_POWEROFF", "DISK_SNAPSHOT_REVERT_POWEROFF", "DISK_SNAPSHOT_DELETE_POWEROFF",
    "DISK_SNAPSHOT_SUSPENDED", "DISK_SNAPSHOT_REVERT_SUSPENDED", "DISK_SNAPSHOT_DELETE_SUSPENDED",
    "DISK_SNAPSHOT", "DISK_SNAPSHOT_REVERT", "DISK_SNAPSHOT_DELETE", "PROLOG_MIGRATE_UNKNOWN",
    "PROLOG_MIGRATE_UNKNOWN_FAILURE", "DISK_RESIZE", "DISK_RESIZE_POWEROFF",
    "DISK_RESIZE_UNDEPLOYED", "HOTPLUG_NIC_POWEROFF", "HOTPLUG_RESIZE",
    "HOTPLUG_SAVEAS_UNDEPLOYED", "HOTPLUG_SAVEAS_STOPPED", "BACKUP", "BACKUP_POWEROFF",
)
_VM = {name: number for number, name in enumerate(VM_STATES)}
_LCM = {name: number for number, name in enumerate(LCM_STATES)}

S = Status
#: STATE (not ACTIVE) -> Status. OpenNebula STOPPED keeps the memory image (in
#: the system datastore) and resumes the guest where it stopped: SUSPENDED.
#: UNDEPLOYED keeps only the disks, like Nova's shelved-offloaded: SHELVED.
VM_STATUS = {
    "INIT": S.BUILDING, "PENDING": S.BUILDING, "HOLD": S.BUILDING, "STOPPED": S.SUSPENDED,
    "SUSPENDED": S.SUSPENDED, "DONE": S.DELETED, "FAILED": S.ERROR, "POWEROFF": S.STOPPED,
    "UNDEPLOYED": S.SHELVED, "CLONING": S.BUILDING, "CLONING_FAILURE": S.ERROR,
}
#: LCM_STATE of an ACTIVE VM -> Status. Every *_FAILURE is ERROR. Saving and
#: shutting down on the way to a resting state report RUNNING (the guest is
#: still on its host) so a wait for SUSPENDED/STOPPED does not end early;
#: operations on a resting VM (snapshot, hotplug, backup) report that rest.
LCM_STATUS = {
    "LCM_INIT": S.BUILDING, "PROLOG": S.BUILDING, "BOOT": S.BUILDING, "RUNNING": S.RUNNING,
    "MIGRATE": S.MIGRATING, "SAVE_STOP": S.RUNNING, "SAVE_SUSPEND": S.RUNNING,
    "SAVE_MIGRATE": S.MIGRATING, "PROLOG_MIGRATE": S.MIGRATING, "PROLOG_RESUME": S.BUILDING,
    "EPILOG_STOP": S.RUNNING, "EPILOG": S.DELETED, "SHUTDOWN": S.DELETED, "CANCEL": S.DELETED,
    "FAILURE": S.ERROR, "CLEANUP_RESUBMIT": S.BUILDING, "UNKNOWN": S.UNKNOWN,
    "HOTPLUG": S.RUNNING, "SHUTDOWN_POWEROFF": S.RUNNING, "BOOT_UNKNOWN": S.BUILDING,
    "BOOT_POWEROFF": S.BUILDING, "BOOT_SUSPENDED": S.BUILDING, "BOOT_STOPPED": S.BUILDING,
    "CLEANUP_DELETE": S.DELETED, "HOTPLUG_SNAPSHOT": S.RUNNING, "HOTPLUG_NIC": S.RUNNING,
    "HOTPLUG_SAVEAS": S.RUNNING, "HOTPLUG_SAVEAS_POWEROFF": S.STOPPED,
    "HOTPLUG_SAVEAS_SUSPENDED": S.SUSPENDED, "SHUTDOWN_UNDEPLOY": S.RUNNING,
    "EPILOG_UNDEPLOY": S.RUNNING, "PROLOG_UNDEPLOY": S.BUILDING, "BOOT_UNDEPLOY": S.BUILDING,
    "HOTPLUG_PROLOG_POWEROFF": S.STOPPED, "HOTPLUG_EPILOG_POWEROFF": S.STOPPED,
    "BOOT_MIGRATE": S.MIGRATING, "PROLOG_MIGRATE_POWEROFF": S.MIGRATING,
    "PROLOG_MIGRATE_SUSPEND": S.MIGRATING, "DISK_SNAPSHOT_POWEROFF": S.STOPPED,
    "DISK_SNAPSHOT_REVERT_POWEROFF": S.STOPPED, "DISK_SNAPSHOT_DELETE_POWEROFF": S.STOPPED,
    "DISK_SNAPSHOT_SUSPENDED": S.SUSPENDED, "DISK_SNAPSHOT_REVERT_SUSPENDED": S.SUSPENDED,
    "DISK_SNAPSHOT_DELETE_SUSPENDED": S.SUSPENDED, "DISK_SNAPSHOT": S.RUNNING,
    "DISK_SNAPSHOT_REVERT": S.RUNNING, "DISK_SNAPSHOT_DELETE": S.RUNNING,
    "PROLOG_MIGRATE_UNKNOWN": S.MIGRATING, "DISK_RESIZE": S.RUNNING,
    "DISK_RESIZE_POWEROFF": S.STOPPED, "DISK_RESIZE_UNDEPLOYED": S.SHELVED,
    "HOTPLUG_NIC_POWEROFF": S.STOPPED, "HOTPLUG_RESIZE": S.RUNNING,
    "HOTPLUG_SAVEAS_UNDEPLOYED": S.SHELVED, "HOTPLUG_SAVEAS_STOPPED": S.SUSPENDED,
    "BACKUP": S.RUNNING, "BACKUP_POWEROFF": S.STOPPED,
}
for _name in LCM_STATES:
    if _name.endswith("_FAILURE"):
        LCM_STATUS[_name] = S.ERROR
del S, _name

HOST_STATES = ("INIT", "MONITORING_MONITORED", "MONITORED", "ERROR", "DISABLED",
               "MONITORING_ERROR", "MONITORING_INIT", "MONITORING_DISABLED", "OFFLINE")
HOST_STATE_WORD = {"INIT": "init", "MONITORING_MONITORED": "up", "MONITORED": "up",
                   "ERROR": "error", "DISABLED": "disabled", "MONITORING_ERROR": "error",
                   "MONITORING_INIT": "init", "MONITORING_DISABLED": "disabled",
                   "OFFLINE": "offline"}

#: pool filter flags of one.*pool.info
POOL_MINE, POOL_ALL, POOL_MINE_AND_GROUPS = -3, -2, -1
#: one.vm.recover operation "delete" (works in any state; needs VM:ADMIN)
RECOVER_DELETE = 3

#: suspend modes -> (one.vm.action, resting STATE names it leads to)
SUSPEND_MODES = {
    "suspend": ("suspend", {"SUSPENDED"}),
    "stop": ("stop", {"STOPPED"}),
    "poweroff": ("poweroff", {"POWEROFF"}),
    "poweroff-hard": ("poweroff-hard", {"POWEROFF"}),
    "undeploy": ("undeploy", {"UNDEPLOYED"}),
    "undeploy-hard": ("undeploy-hard", {"UNDEPLOYED"}),
}

DEFAULT_START_COMMAND = "systemctl restart salt-minion"
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{40,}")


def state_names(state, lcm_state):
    """``(STATE name, LCM_STATE name)`` for the numbers OpenNebula reports."""
    state, lcm_state = int(state), int(lcm_state)
    sname = VM_STATES[state] if 0 <= state < len(VM_STATES) else f"STATE_{state}"
    lname = LCM_STATES[lcm_state] if 0 <= lcm_state < len(LCM_STATES) else f"LCM_STATE_{lcm_state}"
    return sname, lname


def state_label(state, lcm_state):
    """Human label: the LCM state for ACTIVE VMs, the VM state otherwise."""
    sname, lname = state_names(state, lcm_state)
    return lname if sname == "ACTIVE" else sname


def status_of(state, lcm_state):
    """Map OpenNebula's STATE/LCM_STATE numbers to a :class:`Status`."""
    sname, lname = state_names(state, lcm_state)
    if sname == "ACTIVE":
        return LCM_STATUS.get(lname, Status.UNKNOWN)
    return VM_STATUS.get(sname, Status.UNKNOWN)


class _Secret:
    """Holds the session string; prints as a placeholder."""

    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def get(self):
        return self._value

    def __repr__(self):
        return "<redacted>"

    __str__ = __repr__


class _Transport(xmlrpc.client.Transport):
    """XML-RPC over ``requests`` with a per-call timeout (no global socket default)."""

    def __init__(self, scheme, timeout, verify):
        super().__init__()
        self._scheme = scheme
        self._timeout = timeout
        self._verify = verify
        self._http = requests.Session()

    def request(self, host, handler, request_body, verbose=False):
        url = f"{self._scheme}://{host}/{handler.lstrip('/')}"
        resp = self._http.post(url, data=request_body, timeout=self._timeout, verify=self._verify,
                               headers={"Content-Type": "text/xml", "User-Agent": "vcluster"})
        if resp.status_code != 200:
            raise xmlrpc.client.ProtocolError(url, resp.status_code, resp.reason, {})
        parser, unmarshaller = self.getparser()
        parser.feed(resp.content)
        parser.close()
        return unmarshaller.close()

    def close(self):
        self._http.close()
        super().close()


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
    suspend_modes = tuple(SUSPEND_MODES)

    def __init__(self, name, config, transport=None):
        super().__init__(name, config)
        if pyone is None:
            raise PolicyError("the opennebula driver needs pyone: pip install 'vcluster[opennebula]'")
        session = self.config.pop("session", None)
        endpoint = self.config.get("endpoint")
        if not endpoint or not isinstance(endpoint, str):
            raise PolicyError(f"vcluster:providers:{name}:endpoint is required (e.g. https://one:2633/RPC2)")
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PolicyError(f"vcluster:providers:{name}:endpoint must be an http(s) URL, got {_safe_url(endpoint)!r}")
        self.endpoint = _safe_url(endpoint)
        self._secret = _Secret(self._load_session(session))
        self.timeout = float(self.config.get("timeout", 30))
        self.pool_filter = int(self.config.get("pool_filter", POOL_MINE))
        self._template_ids = {}
        self._server = pyone.OneServer(endpoint, session=self._secret.get())
        if transport is None:
            transport = _Transport(parts.scheme, self.timeout, self.config.get("verify_tls", True))
        # pyone builds its own transport without a per-call timeout; use ours.
        self._server._ServerProxy__transport = transport
        self._transport = transport

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
        if spec is not None and key in spec.extra:
            return spec.extra[key]
        return self.config.get(key, default)

    # -- the one place that talks to OpenNebula ----------------------------

    def _call(self, kind, method, *args):
        """Call ``one.<method>``; map every failure to a vcluster error."""
        self.calls[kind] += 1
        log.debug("opennebula %s: one.%s", self.name, method)
        target = self._server
        for part in method.split("."):
            target = getattr(target, part)
        try:
            return target(*args)
        except pyone.OneAuthenticationException:
            raise ProviderError(
                f"OpenNebula at {self.endpoint} rejected the credentials of provider {self.name} "
                "(authentication failed)"
            ) from None
        except pyone.OneAuthorizationException as exc:
            msg = self._scrub(exc)
            if _is_quota(msg):
                raise QuotaExceeded(f"OpenNebula at {self.endpoint} refused over quota: {msg}") from None
            raise ProviderError(f"OpenNebula at {self.endpoint} did not authorize one.{method}: {msg}") from None
        except pyone.OneNoExistsException as exc:
            raise _NotFound(self._scrub(exc)) from None
        except pyone.OneActionException as exc:
            raise ProviderStateError(f"OpenNebula refused one.{method}: {self._scrub(exc)}") from None
        except pyone.OneException as exc:
            msg = self._scrub(exc)
            if _is_quota(msg):
                raise QuotaExceeded(f"OpenNebula at {self.endpoint} refused over quota: {msg}") from None
            raise ProviderError(f"OpenNebula call one.{method} failed: {msg}") from None
        except (requests.Timeout, TimeoutError):
            raise ProviderTimeout(
                f"OpenNebula at {self.endpoint} did not answer one.{method} within {self.timeout:g} s"
            ) from None
        except (requests.ConnectionError, ConnectionError) as exc:
            raise _Unreachable(
                f"cannot reach OpenNebula at {self.endpoint} ({exc.__class__.__name__})"
            ) from None
        except xmlrpc.client.ProtocolError as exc:
            raise ProviderError(
                f"OpenNebula at {self.endpoint} answered HTTP {exc.errcode} to one.{method}"
            ) from None
        except (xmlrpc.client.Fault, xmlrpc.client.ResponseError, xml.parsers.expat.ExpatError,
                requests.RequestException, OSError, ValueError, SyntaxError, IndexError, TypeError) as exc:
            # a malformed answer (not XML-RPC, not OpenNebula's [ok, value, code])
            raise ProviderError(
                f"OpenNebula call one.{method} to {self.endpoint} failed: {self._scrub(exc)}"
            ) from None

    def _scrub(self, exc):
        """A server message made safe to show: no credential, no long base64."""
        text = str(exc)
        session = self._secret.get()
        for secret in (session, session.split(":", 1)[1]):
            if secret:
                text = text.replace(secret, "<redacted>")
        text = _BASE64_RUN.sub("<redacted>", text)
        return text[:500]

    # -- reading VMs ---------------------------------------------------------

    def _pool(self):
        """Every VM of the pool filter, in every state but DONE: one call."""
        pool = self._call("list", "vmpool.infoextended", self.pool_filter, -1, -1, -1)
        return list(getattr(pool, "VM", None) or [])

    def _instance(self, vm):
        tags = _tags(vm)
        status = status_of(vm.STATE, vm.LCM_STATE)
        fault = None
        if status is Status.ERROR:
            fault = _error_of(vm) or f"OpenNebula reports state {state_label(vm.STATE, vm.LCM_STATE)}"
        elif status is Status.UNKNOWN:
            fault = f"OpenNebula reports state {state_label(vm.STATE, vm.LCM_STATE)}"
        return Instance(id=str(vm.ID), name=str(vm.NAME), status=status, address=_address_of(vm),
                        host=_host_of(vm), tags=tags, fault=fault)

    def list(self, cluster):
        """Instances tagged ``VCLUSTER_CLUSTER=cluster`` (one vmpool call)."""
        return [self._instance(vm) for vm in self._pool() if _tags(vm).get("cluster") == cluster]

    def list_all(self):
        """Every VM of the pool filter that carries vcluster tags."""
        return [self._instance(vm) for vm in self._pool() if _tags(vm).get("cluster")]

    def get(self, instance_id):
        """One of our VMs (``one.vm.info``), or ``None`` when gone or not ours."""
        vm = self._vm(instance_id, required=False)
        return None if vm is None else self._instance(vm)

    def _vm(self, instance_id, required=True):
        vm = None
        if str(instance_id).strip().isdigit():
            try:
                vm = self._call("get", "vm.info", int(instance_id))
            except _NotFound:
                pass
        if vm is not None and (VM_STATES[int(vm.STATE)] == "DONE" or not _tags(vm).get("cluster")):
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
            # after a timeout or a lost connection OpenNebula may have made a
            # VM whose id we never saw: look for it by its tags too
            uncertain = isinstance(exc, (ProviderTimeout, _Unreachable))
            note = self._cleanup(created, specs, sweep=uncertain)
            if isinstance(exc, _NotFound):
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
        pool = self._call("templates", "templatepool.info", POOL_ALL, -1, -1)
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
        root = ET.Element("TEMPLATE")
        _sub(root, "NAME", spec.name)
        _sub(root, "VCPU", int(spec.cpus))
        _sub(root, "CPU", _number(float(self._opt(spec, "cpu_factor", 1.0)) * int(spec.cpus)))
        _sub(root, "MEMORY", int(spec.memory_mb))
        network = spec.network or self.config.get("network")
        if network:
            nic = ET.SubElement(root, "NIC")
            net = str(network)
            _sub(nic, "NETWORK_ID" if net.isdigit() else "NETWORK", net)
            owner = self._opt(spec, "network_owner")
            if owner and not net.isdigit():
                _sub(nic, "NETWORK_UNAME", owner)
            if spec.address:
                _sub(nic, "IP", spec.address)
        ctx = ET.SubElement(root, "CONTEXT")
        context = {"NETWORK": "YES", "SET_HOSTNAME": spec.name}
        for source in (self.config.get("context"), spec.extra.get("context")):
            context.update({str(k).upper(): v for k, v in (source or {}).items()})
        for key, value in context.items():
            _sub(ctx, key, value)
        start_command = self._opt(spec, "start_command", DEFAULT_START_COMMAND)
        if self._opt(spec, "boot", "start_script") == "cloud_init":
            _sub(ctx, "USER_DATA", _b64(bootstrap.cloud_config(spec.boot_files, start_command=start_command)))
            _sub(ctx, "USERDATA_ENCODING", "base64")
        else:
            _sub(ctx, "START_SCRIPT_BASE64", _b64(start_script(spec.boot_files, start_command)))
        requirements = self._opt(spec, "sched_requirements")
        if requirements:
            _sub(root, "SCHED_REQUIREMENTS", requirements)
        for key, value in spec.tags.items():
            _sub(root, TAG_PREFIX + str(key).upper(), value)
        return ET.tostring(root, encoding="unicode")

    def _cleanup(self, created, specs, sweep=False):
        """Terminate what this create made (with ``sweep``, also VMs whose id we never saw)."""
        ids = [vid for vid, _ in created]
        if sweep:
            try:
                names = {s.name for s in specs}
                batch = {s.tags.get("registry_id") for s in specs}
                for vm in self._pool():
                    tags = _tags(vm)
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
        strangers = [f"{vm.ID} ({vm.NAME})" for vm in found if not _tags(vm).get("cluster")]
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
        except _NotFound:
            return
        except ProviderStateError as first:
            try:
                self._call("delete", "vm.recover", vid, RECOVER_DELETE)
            except _NotFound:
                return
            except ProviderError as exc:
                raise ProviderStateError(
                    f"VM {vid} cannot be terminated now ({first}) and recover --delete failed ({exc})"
                ) from None

    # -- suspend / resume / migrate -------------------------------------------

    def suspend(self, instance_id, mode="suspend"):
        """``suspend`` (memory on the host), ``stop`` (memory to the system
        datastore, host freed), ``poweroff``[-hard] or ``undeploy``[-hard]."""
        if mode not in SUSPEND_MODES:
            raise ProviderError(f"OpenNebula suspend mode must be one of {', '.join(SUSPEND_MODES)}, got {mode!r}")
        action, targets = SUSPEND_MODES[mode]
        vm = self._vm(instance_id)
        sname, lname = state_names(vm.STATE, vm.LCM_STATE)
        if sname in targets:
            return  # already there: nothing to do
        self._refuse_failed(vm, mode)
        if not _allowed(action, sname, lname):
            raise ProviderStateError(self._refusal(vm, mode, action))
        self._call("suspend", "vm.action", action, int(vm.ID))

    def resume(self, instance_id):
        """Resume a SUSPENDED, STOPPED, POWEROFF, UNDEPLOYED (or UNKNOWN) VM."""
        vm = self._vm(instance_id)
        sname, lname = state_names(vm.STATE, vm.LCM_STATE)
        if sname == "ACTIVE" and lname == "RUNNING":
            return  # already running
        self._refuse_failed(vm, "resume")
        if not _allowed("resume", sname, lname):
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
        if not _allowed("migrate", sname, lname):
            raise ProviderStateError(self._refusal(vm, "migrate", "migrate"))
        if host is None:
            if not _allowed("resched", sname, lname):
                raise ProviderStateError(self._refusal(vm, "reschedule", "resched"))
            self._call("migrate", "vm.action", "resched", int(vm.ID))
            return
        hid, hname = self._host_id(host)
        current = _history(vm)
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
            reason = _error_of(vm) or "no reason recorded"
            raise ProviderError(
                f"cannot {what} VM {vm.ID} ({vm.NAME}): it failed in "
                f"{state_label(vm.STATE, vm.LCM_STATE)}: {reason}"
            )

    @staticmethod
    def _refusal(vm, what, action):
        label = state_label(vm.STATE, vm.LCM_STATE)
        allowed = ", ".join(ALLOWED_LABELS[action])
        return f"cannot {what} VM {vm.ID} ({vm.NAME}) in state {label}; OpenNebula allows it in {allowed}"

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
        close = getattr(self._transport, "close", None)
        if close:
            close()


# -- which action OpenNebula accepts in which state (DispatchManager rules) ----

def _allowed(action, sname, lname):
    running = sname == "ACTIVE" and lname == "RUNNING"
    unknown = sname == "ACTIVE" and lname == "UNKNOWN"
    if action == "suspend":
        return running
    if action == "stop":
        return running or sname == "SUSPENDED"
    if action in ("poweroff", "poweroff-hard"):
        return running or unknown or (action == "poweroff-hard" and lname == "SHUTDOWN_POWEROFF")
    if action in ("undeploy", "undeploy-hard"):
        return (running or unknown or sname == "POWEROFF"
                or (action == "undeploy-hard" and lname == "SHUTDOWN_UNDEPLOY"))
    if action == "resume":
        return sname in ("STOPPED", "UNDEPLOYED", "SUSPENDED", "POWEROFF") or unknown
    if action == "migrate":
        return running or unknown or sname in ("POWEROFF", "SUSPENDED")
    if action == "resched":
        return running or unknown or sname == "POWEROFF"
    return False


ALLOWED_LABELS = {
    "suspend": ["RUNNING"],
    "stop": ["RUNNING", "SUSPENDED"],
    "poweroff": ["RUNNING", "UNKNOWN"],
    "poweroff-hard": ["RUNNING", "UNKNOWN", "SHUTDOWN_POWEROFF"],
    "undeploy": ["RUNNING", "UNKNOWN", "POWEROFF"],
    "undeploy-hard": ["RUNNING", "UNKNOWN", "POWEROFF", "SHUTDOWN_UNDEPLOY"],
    "resume": ["SUSPENDED", "STOPPED", "POWEROFF", "UNDEPLOYED", "UNKNOWN"],
    "migrate": ["RUNNING", "UNKNOWN", "SUSPENDED", "POWEROFF"],
    "resched": ["RUNNING", "UNKNOWN", "POWEROFF"],
}


# -- boot files in the context ---------------------------------------------------

def start_script(files, start_command=DEFAULT_START_COMMAND):
    """POSIX sh that writes ``files`` atomically, then runs ``start_command``."""
    lines = [
        "#!/bin/sh",
        "# vcluster boot files, run by OpenNebula contextualization (START_SCRIPT_BASE64)",
        "set -eu",
        "umask 077",
        "put() {",
        '  mkdir -p "$(dirname "$1")"',
        "  printf '%s' \"$3\" | base64 -d > \"$1.vcluster-new\"",
        '  chmod "$2" "$1.vcluster-new"',
        '  mv -f "$1.vcluster-new" "$1"',
        "}",
    ]
    for f in files:
        content = base64.b64encode(f.content.encode("utf-8")).decode("ascii")
        lines.append(f"put {shlex.quote(f.path)} {int(f.mode):o} '{content}'")
    if start_command:
        lines.append(start_command)
    return "\n".join(lines) + "\n"


# -- small helpers ---------------------------------------------------------------

class _NotFound(ProviderError):
    """OpenNebula answered NO_EXISTS."""


class _Unreachable(ProviderError):
    """The endpoint could not be reached (the call may or may not have run)."""


def _is_quota(message):
    text = message.lower()
    return "quota" in text and ("limit" in text or "exceed" in text)


def _safe_url(url):
    """The endpoint without any user:password@ part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts)


def _sub(parent, tag, value):
    ET.SubElement(parent, tag).text = str(value)


def _number(value):
    return int(value) if float(value).is_integer() else round(value, 2)


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _attrs(section):
    return dict(section) if section else {}


def _tags(vm):
    """vcluster tags from USER_TEMPLATE (TEMPLATE as a fallback)."""
    tags = {}
    for section in (_attrs(getattr(vm, "TEMPLATE", None)), _attrs(getattr(vm, "USER_TEMPLATE", None))):
        for key, value in section.items():
            if key.startswith(TAG_PREFIX) and isinstance(value, str):
                tags[key[len(TAG_PREFIX):].lower()] = value
    return tags


def _error_of(vm):
    error = _attrs(getattr(vm, "USER_TEMPLATE", None)).get("ERROR")
    if isinstance(error, dict):
        error = error.get("MESSAGE") or json.dumps(error, sort_keys=True)
    return _BASE64_RUN.sub("<redacted>", str(error))[:500] if error else None


def _address_of(vm):
    nics = _attrs(getattr(vm, "TEMPLATE", None)).get("NIC")
    if isinstance(nics, dict):
        nics = [nics]
    for nic in nics or []:
        if isinstance(nic, dict) and nic.get("IP"):
            return nic["IP"]
    return None


def _history(vm):
    records = getattr(vm, "HISTORY_RECORDS", None)
    history = getattr(records, "HISTORY", None) if records is not None else None
    return history[-1] if history else None


def _host_of(vm):
    sname = VM_STATES[int(vm.STATE)] if 0 <= int(vm.STATE) < len(VM_STATES) else ""
    if sname in ("PENDING", "HOLD", "INIT", "CLONING", "CLONING_FAILURE", "DONE", "STOPPED", "UNDEPLOYED"):
        return None
    last = _history(vm)
    return str(last.HOSTNAME) if last is not None and last.HOSTNAME else None


__all__ = ["OpenNebulaProvider", "status_of", "state_names", "start_script"]
