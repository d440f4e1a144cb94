"""A small in-process simulator of the OpenNebula XML-RPC API subset vcluster uses.

It is a simulator, not OpenNebula, because no OpenNebula server can run on
this machine. It exists so the provider contract (``tests/provider_contract.py``)
can exercise create, list, wait, suspend, resume, migrate and delete against
something that keeps VM state and enforces OpenNebula's state rules.

Built from OpenNebula's documentation, not from its code: the XML-RPC
reference (signatures, ``[success, value, code]`` replies, error codes), the
VM states reference (STATE/LCM_STATE numbers and the transitions of the
life-cycle diagram), the ``onevm`` command reference (which action is valid
in which state) and the VM/HOST/VMTEMPLATE XML schemas.

Methods: ``one.template.instantiate``, ``one.templatepool.info``,
``one.vm.info``, ``one.vm.action`` (suspend, stop, poweroff[-hard],
undeploy[-hard], resume, terminate[-hard], resched), ``one.vm.migrate``,
``one.vm.recover`` (delete), ``one.vmpool.info``/``infoextended``,
``one.hostpool.info``. Templates are accepted in XML form only.

Time is simulated: a VM in a transitional state moves one step after each
read (``steps_per_query`` steps per ``vm.info``/``vmpool`` call), so every
state is seen at least once and tests never sleep to let a VM progress. Not simulated: images, datastores,
ACLs beyond "a user sees and acts on its own VMs", group quotas, monitoring.
"""

import collections
import contextlib
import itertools
import threading
import xml.etree.ElementTree as ET
import xmlrpc.client
import xmlrpc.server

from vcluster.providers.opennebula import LCM_STATES, VM_STATES

AUTHENTICATION, AUTHORIZATION, NO_EXISTS, ACTION, XML_RPC_API, INTERNAL, ALLOCATE = (
    0x0100, 0x0200, 0x0400, 0x0800, 0x1000, 0x2000, 0x4000)

#: attributes OpenNebula keeps in the VM template; anything else stays in USER_TEMPLATE
SYSTEM_ATTRS = {"CPU", "VCPU", "MEMORY", "NIC", "NIC_ALIAS", "CONTEXT", "DISK", "OS", "GRAPHICS",
                "FEATURES", "INPUT", "RAW", "TEMPLATE_ID", "VMID", "AUTOMATIC_REQUIREMENTS"}


class Fail(Exception):
    """An OpenNebula error reply."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class _Vm:
    def __init__(self, vid, name, uid, uname, template, user_template):
        self.id, self.name, self.uid, self.uname = vid, name, uid, uname
        self.state, self.lcm = "PENDING", "LCM_INIT"
        self.template, self.user_template = template, user_template
        self.history = []  # (hid, hostname)
        self.plan = []  # steps: ("STATE", "LCM_STATE") or callables
        self.resched = 0

    @property
    def label(self):
        return self.lcm if self.state == "ACTIVE" else self.state

    @property
    def hid(self):
        return self.history[-1][0] if self.history else None

    def holds_host(self):
        return self.state in ("ACTIVE", "SUSPENDED", "POWEROFF") and self.history

    def go(self, state, lcm="LCM_INIT", then=()):
        self.state, self.lcm = state, lcm
        self.plan = list(then)


class OneSimulator:
    """OpenNebula's XML-RPC behaviour for one user, a few hosts and templates."""

    def __init__(self, users=None, templates=None, network=("vcnet", "10.99.0.", range(10, 250)),
                 hosts=(("hv1", 8, 16384), ("hv2", 8, 16384)), vms_quota=None, steps_per_query=1):
        self.users = dict(users or {"vcluster": "vcluster-password"})
        self.uids = {name: 5 + i for i, name in enumerate(self.users)}
        self.templates = dict(templates or {7: "vcluster-node"})
        self.net_name, prefix, hosts_range = network
        self.net_ips = [f"{prefix}{n}" for n in hosts_range]
        self.hosts = [{"id": i, "name": n, "cpu": c * 100, "mem": m * 1024, "state": 2}
                      for i, (n, c, m) in enumerate(hosts)]
        self.vms_quota = vms_quota
        self.steps_per_query = steps_per_query
        self.vms = {}
        self.calls = collections.Counter()
        self.failures = []  # (LCM failure state, reason) for the next boots
        self._ids = itertools.count(100)
        self._lock = threading.RLock()

    # -- test hooks -------------------------------------------------------------

    def fail_next_boot(self, reason="Error deploying virtual machine: could not create domain"):
        """The next VM that boots ends in BOOT_FAILURE with ``reason``."""
        self.failures.append(("BOOT_FAILURE", reason))

    def tick(self, steps=1):
        """Let simulated time pass: every transitional VM moves ``steps`` steps."""
        with self._lock:
            for _ in range(steps):
                for vm in list(self.vms.values()):
                    if vm.plan:
                        step = vm.plan.pop(0)
                        if callable(step):
                            step(vm)
                        else:
                            vm.state, vm.lcm = step

    def transport(self):
        """An xmlrpc transport that answers in-process (no socket)."""
        return _InProcess(self)

    @contextlib.contextmanager
    def serve(self, port=0, handler=xmlrpc.server.SimpleXMLRPCRequestHandler):
        """A loopback HTTP XML-RPC endpoint on ``port`` (0: any free one); yields its URL.

        ``handler``: the request handler class (tests/unit/opennebula/test_retries.py
        fails chosen requests at the HTTP level with one).
        """
        server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", port), requestHandler=handler,
                                                  logRequests=False, allow_none=False)
        server.register_instance(_Dispatcher(self))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/RPC2"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    # -- the API -----------------------------------------------------------------

    def dispatch(self, method, params):
        """Answer one XML-RPC call as ``[success, value, code]``."""
        with self._lock:
            self.calls[method] += 1
            try:
                if not params:
                    raise Fail(XML_RPC_API, f"[{method}] missing session")
                user = self._authenticate(method, params[0])
                handler = getattr(self, "_" + method.replace(".", "_"), None)
                if handler is None:
                    raise Fail(XML_RPC_API, f"[{method}] not simulated")
                value = handler(method, user, *params[1:])
                return [True, value, 0]
            except Fail as fail:
                return [False, str(fail), fail.code]
            except TypeError:
                return [False, f"[{method}] wrong parameters", XML_RPC_API]

    def _authenticate(self, method, session):
        user, _, password = str(session).partition(":")
        if self.users.get(user) != password:
            raise Fail(AUTHENTICATION, f"[{method}] User couldn't be authenticated, aborting call.")
        return user

    def _own(self, method, user, vid):
        vm = self.vms.get(int(vid))
        if vm is None:
            raise Fail(NO_EXISTS, f"[{method}] Error getting virtual machine [{vid}].")
        if vm.uname != user:
            raise Fail(AUTHORIZATION, f"[{method}] User [{self.uids[user]}] : Not authorized to perform "
                                      f"MANAGE VM [{vid}].")
        return vm

    # templates

    def _one_templatepool_info(self, method, user, flag, start, end):
        root = ET.Element("VMTEMPLATE_POOL")
        for tid, name in sorted(self.templates.items()):
            t = ET.SubElement(root, "VMTEMPLATE")
            for key, value in (("ID", tid), ("UID", 0), ("GID", 0), ("UNAME", "oneadmin"),
                               ("GNAME", "oneadmin"), ("NAME", name), ("REGTIME", 1700000000)):
                ET.SubElement(t, key).text = str(value)
            _perms(t)
            tmpl = ET.SubElement(t, "TEMPLATE")
            for key, value in (("CPU", "1"), ("MEMORY", "512")):
                ET.SubElement(tmpl, key).text = value
        return ET.tostring(root, encoding="unicode")

    def _one_template_instantiate(self, method, user, tid, name, hold, extra, persistent):
        if int(tid) not in self.templates:
            raise Fail(NO_EXISTS, f"[{method}] Error getting virtual machine template [{tid}].")
        if self.vms_quota is not None:
            used = sum(1 for vm in self.vms.values() if vm.uname == user and vm.state != "DONE")
            if used + 1 > self.vms_quota:
                raise Fail(AUTHORIZATION, f"[{method}] User [{self.uids[user]}] limit of "
                                          f"{self.vms_quota} reached for VMS quota in VM.")
        attrs = {"CPU": "1", "MEMORY": "512", "TEMPLATE_ID": str(tid)}
        if extra:
            try:
                root = ET.fromstring(extra)
            except ET.ParseError as exc:
                raise Fail(INTERNAL, f"[{method}] Parse error: {exc}") from None
            if root.tag != "TEMPLATE":
                raise Fail(INTERNAL, f"[{method}] Parse error: root element must be TEMPLATE")
            for child in root:  # merging replaces attributes of the same name
                attrs[child.tag] = {c.tag: c.text or "" for c in child} if len(child) else (child.text or "")
        name = name or attrs.get("NAME") or f"one-{next(self._ids)}"
        attrs.pop("NAME", None)
        if not _positive(attrs.get("MEMORY")) or not _positive(attrs.get("CPU")):
            raise Fail(ALLOCATE, f"[{method}] Error allocating a new virtual machine. "
                                 "CPU and MEMORY must be positive.")
        nic = attrs.get("NIC")
        if isinstance(nic, dict):
            nic = dict(nic)
            if nic.get("NETWORK", nic.get("NETWORK_ID")) not in (self.net_name, "0"):
                raise Fail(ALLOCATE, f"[{method}] Error allocating a new virtual machine. "
                                     f"Error getting virtual network [{nic.get('NETWORK')}].")
            used = {vm.template.get("NIC", {}).get("IP") for vm in self.vms.values() if vm.state != "DONE"}
            ip = nic.get("IP") or next((a for a in self.net_ips if a not in used), None)
            if ip not in self.net_ips or ip in used:
                raise Fail(ALLOCATE, f"[{method}] Error allocating a new virtual machine. "
                                     f"Cannot get IP/MAC lease from virtual network 0.")
            nic.update({"IP": ip, "NETWORK": self.net_name, "NETWORK_ID": "0", "NIC_ID": "0"})
            attrs["NIC"] = nic
            if isinstance(attrs.get("CONTEXT"), dict):
                attrs["CONTEXT"] = {**attrs["CONTEXT"], "ETH0_IP": ip}
        vid = next(self._ids)
        template = {k: v for k, v in attrs.items() if k in SYSTEM_ATTRS}
        template["VMID"] = str(vid)
        user_template = {k: v for k, v in attrs.items() if k not in SYSTEM_ATTRS}
        vm = _Vm(vid, name, self.uids[user], user, template, user_template)
        if hold:
            vm.go("HOLD")
        else:
            vm.go("PENDING", then=[self._schedule(("PROLOG", "BOOT"))])
        self.vms[vid] = vm
        return vid

    # reading VMs

    def _one_vm_info(self, method, user, vid, *decrypt):
        answer = ET.tostring(self._vm_xml(self._own(method, user, vid)), encoding="unicode")
        self.tick(self.steps_per_query)  # time passes after each read
        return answer

    def _one_vmpool_infoextended(self, method, user, flag, start, end, state=-1, *search):
        root = ET.Element("VM_POOL")
        for vm in sorted(self.vms.values(), key=lambda v: -v.id):  # newest first, like oned
            if flag in (-3, -1, -4) and vm.uname != user:
                continue
            if flag >= 0 and vm.uid != flag:
                continue
            if start >= 0 and vm.id < start or end >= 0 and vm.id > end:
                continue
            if state == -1 and vm.state == "DONE" or state >= 0 and VM_STATES[state] != vm.state:
                continue
            root.append(self._vm_xml(vm))
        self.tick(self.steps_per_query)  # time passes after each read
        return ET.tostring(root, encoding="unicode")

    _one_vmpool_info = _one_vmpool_infoextended

    def _one_hostpool_info(self, method, user):
        root = ET.Element("HOST_POOL")
        for h in self.hosts:
            on = [vm for vm in self.vms.values() if vm.holds_host() and vm.hid == h["id"]]
            e = ET.SubElement(root, "HOST")
            for key, value in (("ID", h["id"]), ("NAME", h["name"]), ("STATE", h["state"]),
                               ("PREV_STATE", h["state"]), ("IM_MAD", "kvm"), ("VM_MAD", "kvm"),
                               ("CLUSTER_ID", 0), ("CLUSTER", "default")):
                ET.SubElement(e, key).text = str(value)
            share = ET.SubElement(e, "HOST_SHARE")
            cpu = sum(int(float(vm.template["CPU"]) * 100) for vm in on)
            mem = sum(int(vm.template["MEMORY"]) * 1024 for vm in on)
            for key, value in (("MEM_USAGE", mem), ("CPU_USAGE", cpu), ("TOTAL_MEM", h["mem"] * 1024),
                               ("TOTAL_CPU", h["cpu"]), ("MAX_MEM", h["mem"] * 1024), ("MAX_CPU", h["cpu"]),
                               ("RUNNING_VMS", len(on)), ("VMS_THREAD", 1)):
                ET.SubElement(share, key).text = str(value)
            for key in ("DATASTORES", "PCI_DEVICES", "NUMA_NODES"):
                ET.SubElement(share, key)
            vms = ET.SubElement(e, "VMS")
            for vm in on:
                ET.SubElement(vms, "ID").text = str(vm.id)
            ET.SubElement(e, "TEMPLATE")
            ET.SubElement(e, "MONITORING")
        return ET.tostring(root, encoding="unicode")

    # actions (rules of the onevm reference / DispatchManager)

    def _one_vm_action(self, method, user, action, vid):
        vm = self._own(method, user, vid)
        state, lcm = vm.state, vm.lcm
        running = state == "ACTIVE" and lcm == "RUNNING"
        unknown = state == "ACTIVE" and lcm == "UNKNOWN"
        failure = state == "ACTIVE" and lcm.endswith("_FAILURE")

        def refuse(detail=None):
            detail = detail or f"This action is not available for state {vm.label}"
            raise Fail(ACTION, f'[{method}] Error performing action "{action}": {detail}')

        if action == "suspend":
            running or refuse()
            vm.go("ACTIVE", "SAVE_SUSPEND", [("SUSPENDED", "LCM_INIT")])
        elif action == "stop":
            (running or state == "SUSPENDED") or refuse()
            vm.go("ACTIVE", "SAVE_STOP", [("ACTIVE", "EPILOG_STOP"), ("STOPPED", "LCM_INIT")])
        elif action in ("poweroff", "poweroff-hard"):
            (running or unknown or action == "poweroff-hard" and lcm == "SHUTDOWN_POWEROFF") or refuse()
            vm.go("ACTIVE", "SHUTDOWN_POWEROFF", [("POWEROFF", "LCM_INIT")])
        elif action in ("undeploy", "undeploy-hard"):
            (running or unknown or state == "POWEROFF") or refuse()
            vm.go("ACTIVE", "SHUTDOWN_UNDEPLOY", [("ACTIVE", "EPILOG_UNDEPLOY"), ("UNDEPLOYED", "LCM_INIT")])
        elif action == "resume":
            if state == "SUSPENDED":
                vm.go("ACTIVE", "BOOT_SUSPENDED", [self._boot_done()])
            elif state == "POWEROFF":
                vm.go("ACTIVE", "BOOT_POWEROFF", [self._boot_done()])
            elif unknown:
                vm.go("ACTIVE", "BOOT_UNKNOWN", [self._boot_done()])
            elif state == "STOPPED":
                vm.go("PENDING", then=[self._schedule(("PROLOG_RESUME", "BOOT_STOPPED"))])
            elif state == "UNDEPLOYED":
                vm.go("PENDING", then=[self._schedule(("PROLOG_UNDEPLOY", "BOOT_UNDEPLOY"))])
            else:
                refuse()
        elif action in ("terminate", "terminate-hard"):
            if state in ("INIT", "PENDING", "HOLD", "CLONING", "CLONING_FAILURE"):
                vm.go("DONE")
            elif state in ("SUSPENDED", "POWEROFF", "STOPPED", "UNDEPLOYED"):
                vm.go("ACTIVE", "EPILOG", [("DONE", "LCM_INIT")])
            elif running or unknown or (lcm == "SHUTDOWN" and action == "terminate-hard"):
                vm.go("ACTIVE", "SHUTDOWN", [("ACTIVE", "EPILOG"), ("DONE", "LCM_INIT")])
            elif failure:
                vm.go("ACTIVE", "CLEANUP_DELETE", [("DONE", "LCM_INIT")])
            elif state == "DONE":
                pass
            else:
                refuse(f"Could not terminate VM {vm.id}, wrong state {vm.label}.")
        elif action == "resched":
            (running or unknown or state == "POWEROFF") or refuse()
            vm.resched = 1
            if running:
                others = [h for h in self.hosts if h["id"] != vm.hid and self._fits(h, vm)]
                if others:
                    vm.plan = [lambda v, h=others[0]: self._arrive(v, h, "MIGRATE"), ("ACTIVE", "RUNNING")]
        else:
            raise Fail(XML_RPC_API, f'[{method}] Virtual machine action "{action}" is not supported')
        return vm.id

    def _one_vm_migrate(self, method, user, vid, hid, live=False, enforce=False, ds_id=-1, mtype=0):
        vm = self._own(method, user, vid)
        ok = vm.state in ("POWEROFF", "SUSPENDED") or vm.state == "ACTIVE" and vm.lcm in ("RUNNING", "UNKNOWN")
        if not ok:
            raise Fail(ACTION, f"[{method}] Migrate action is not available for state {vm.label}")
        host = next((h for h in self.hosts if h["id"] == int(hid)), None)
        if host is None:
            raise Fail(NO_EXISTS, f"[{method}] Error getting host [{hid}].")
        if vm.hid == host["id"]:
            raise Fail(ACTION, f"[{method}] VM is already running on host [{hid}] and datastore [0]")
        if enforce and not self._fits(host, vm):
            raise Fail(ACTION, f"[{method}] Cannot migrate VM [{vm.id}] to host [{hid}]. Not enough capacity.")
        if vm.state == "SUSPENDED":
            vm.go("ACTIVE", "PROLOG_MIGRATE_SUSPEND", [lambda v: self._arrive(v, host, None, "SUSPENDED")])
        elif vm.state == "POWEROFF":
            vm.go("ACTIVE", "PROLOG_MIGRATE_POWEROFF", [lambda v: self._arrive(v, host, None, "POWEROFF")])
        elif live and vm.lcm == "RUNNING":
            vm.go("ACTIVE", "MIGRATE", [lambda v: self._arrive(v, host, "RUNNING")])
        else:
            vm.go("ACTIVE", "SAVE_MIGRATE", [lambda v: self._arrive(v, host, "PROLOG_MIGRATE"),
                                             ("ACTIVE", "BOOT_MIGRATE"), ("ACTIVE", "RUNNING")])
        return vm.id

    def _one_vm_recover(self, method, user, vid, operation):
        vm = self._own(method, user, vid)
        if int(operation) != 3:
            raise Fail(XML_RPC_API, f"[{method}] only recover --delete (3) is simulated")
        if vm.state != "DONE":
            vm.go("ACTIVE", "CLEANUP_DELETE", [("DONE", "LCM_INIT")])
        return vm.id

    # scheduling

    def _fits(self, host, vm):
        on = [v for v in self.vms.values() if v.holds_host() and v.hid == host["id"] and v is not vm]
        cpu = sum(float(v.template["CPU"]) * 100 for v in on) + float(vm.template["CPU"]) * 100
        mem = sum(int(v.template["MEMORY"]) for v in on) + int(vm.template["MEMORY"])
        return host["state"] == 2 and cpu <= host["cpu"] and mem <= host["mem"]

    def _schedule(self, lcm_steps):
        """A step that deploys a PENDING VM on the first host with room (or waits)."""
        prolog, boot = lcm_steps

        def step(vm):
            host = next((h for h in self.hosts if self._fits(h, vm)), None)
            if host is None:
                vm.plan.insert(0, step)  # stays PENDING until a host has room
                return
            vm.history.append((host["id"], host["name"]))
            vm.state, vm.lcm = "ACTIVE", prolog
            vm.plan = [("ACTIVE", boot), self._boot_done()]
        return step

    def _boot_done(self):
        def step(vm):
            if self.failures:
                lcm, reason = self.failures.pop(0)
                vm.state, vm.lcm = "ACTIVE", lcm
                vm.user_template["ERROR"] = f"Mon Nov 20 10:00:00 2023 : {reason}"
            else:
                vm.state, vm.lcm = "ACTIVE", "RUNNING"
        return step

    @staticmethod
    def _arrive(vm, host, lcm, state="ACTIVE"):
        vm.history.append((host["id"], host["name"]))
        vm.state, vm.lcm = state, lcm or "LCM_INIT"

    # XML of a VM (vm.xsd layout)

    def _vm_xml(self, vm):
        e = ET.Element("VM")
        for key, value in (("ID", vm.id), ("UID", vm.uid), ("GID", 100), ("UNAME", vm.uname),
                           ("GNAME", "hpc"), ("NAME", vm.name)):
            ET.SubElement(e, key).text = str(value)
        _perms(e)
        for key, value in (("LAST_POLL", 0), ("STATE", VM_STATES.index(vm.state)),
                           ("LCM_STATE", LCM_STATES.index(vm.lcm)), ("PREV_STATE", VM_STATES.index(vm.state)),
                           ("PREV_LCM_STATE", LCM_STATES.index(vm.lcm)), ("RESCHED", vm.resched),
                           ("STIME", 1700000000), ("ETIME", 0), ("DEPLOY_ID", f"one-{vm.id}" if vm.history else "")):
            ET.SubElement(e, key).text = str(value)
        ET.SubElement(e, "MONITORING")
        for tag, attrs in (("TEMPLATE", vm.template), ("USER_TEMPLATE", vm.user_template)):
            section = ET.SubElement(e, tag)
            for key, value in attrs.items():
                child = ET.SubElement(section, key)
                if isinstance(value, dict):
                    for k, v in value.items():
                        ET.SubElement(child, k).text = str(v)
                else:
                    child.text = str(value)
        records = ET.SubElement(e, "HISTORY_RECORDS")
        for seq, (hid, hostname) in enumerate(vm.history):
            h = ET.SubElement(records, "HISTORY")
            for key, value in (("OID", vm.id), ("SEQ", seq), ("HOSTNAME", hostname), ("HID", hid),
                               ("CID", 0), ("STIME", 1700000000), ("ETIME", 0), ("VM_MAD", "kvm"),
                               ("TM_MAD", "ssh"), ("DS_ID", 0), ("ACTION", 0)):
                ET.SubElement(h, key).text = str(value)
        return e


def _perms(parent):
    p = ET.SubElement(parent, "PERMISSIONS")
    for who in ("OWNER", "GROUP", "OTHER"):
        for what in ("U", "M", "A"):
            ET.SubElement(p, f"{who}_{what}").text = "1" if who == "OWNER" and what != "A" else "0"


def _positive(value):
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


class _Dispatcher:
    """SimpleXMLRPCServer front-end: every method name goes to the simulator."""

    def __init__(self, sim):
        self.sim = sim

    def _dispatch(self, method, params):
        return self.sim.dispatch(method, list(params))


class _InProcess(xmlrpc.client.Transport):
    """Marshal, dispatch to the simulator, unmarshal: like the wire, without a socket."""

    def __init__(self, sim):
        super().__init__()
        self.sim = sim

    def request(self, host, handler, request_body, verbose=False):
        params, method = xmlrpc.client.loads(request_body)
        reply = self.sim.dispatch(method, list(params))
        return xmlrpc.client.loads(xmlrpc.client.dumps((reply,), methodresponse=True))[0]
