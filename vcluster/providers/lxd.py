"""LXD provider: virtual nodes as system containers, driven through pylxd.

Config keys (pillar ``vcluster:providers:<name>``):

``network``       managed bridge the nic joins; its dnsmasq hands out the
                  spec's address as a static lease (``ipv4.address``).
``storage_pool``  pool of the root disk.
``endpoint``      unix socket path or ``https://host:8443`` (default: local socket).
``cert``/``key``/``verify``  client certificate pair and CA for https.
``project``       LXD project (default: ``default``).
``profiles``      profiles applied before vcluster's own devices (default ``[default]``).
``privileged``    ``security.privileged`` (default ``False``). Measured here:
                  an unprivileged container boots systemd, runs munged and
                  slurmd (cgroup/v1 loads; use proctrack/linuxproc, task/none)
                  and is frozen by LXD from the host, so root in a node need
                  not be root on the host. Privileged is needed for kernel
                  mounts (NFS) and for writable host directories shared by
                  disk devices: this LXD cannot idmap them (``shift`` fails),
                  so an unprivileged node sees them owned by nobody unless
                  the host side is owned by the shifted ids (100000 + id).
``timeout``       seconds for one LXD operation (default 120).
``parallel``      instances created or deleted at once (default 4).

Instance ids are LXD instance names (the node names). Tags are config keys
``user.vcluster.<key>``. Boot files are pushed into the stopped container
before its first start; note that the image renders ``/etc/hostname`` and
``/etc/hosts`` from templates at first start, overwriting pushed copies.
``spec.extra`` may hold ``config`` and ``devices`` dicts merged into the
instance (for example a disk device sharing a host directory).
"""

import concurrent.futures
import logging
import re
import secrets
import threading

import pylxd
import pylxd.exceptions
import requests

from vcluster.errors import PolicyError, ProviderError, ProviderStateError, ProviderTimeout
from vcluster.providers.base import Host, Instance, Provider, Status, spec_names

TAG_PREFIX = "user.vcluster."
#: Config key marking the create() call that made an instance: a rollback
#: deletes only instances carrying its own mark, never a namesake.
REQUEST_KEY = "user.vcluster_request"

#: LXD status words -> vcluster status.
STATUS_MAP = {
    "Running": Status.RUNNING,
    "Ready": Status.RUNNING,
    "Thawed": Status.RUNNING,
    "Freezing": Status.RUNNING,
    "Frozen": Status.SUSPENDED,
    "Stopped": Status.STOPPED,
    "Stopping": Status.STOPPED,
    "Aborting": Status.STOPPED,
    "Starting": Status.BUILDING,
    "Pending": Status.BUILDING,
    "Created": Status.BUILDING,
    "Started": Status.BUILDING,
    "Error": Status.ERROR,
}

SUSPEND_MODES = ("suspend", "pause")
_FINGERPRINT = re.compile(r"^[0-9a-f]{12,64}$")
_STATE_WORDS = ("running", "stopped", "frozen", "not running", "already")


class _QuietUnixPoolOverflow(logging.Filter):
    """Drop urllib3's "Connection pool is full" for pylxd's unix socket.

    pylxd keeps one pooled connection to the local socket (host
    ``localhost``); our parallel create and delete threads open more, which
    urllib3 closes after use and reports at WARNING, on every ``salt-run``
    console. Harmless, so not shown; other hosts' pools still report.
    """

    def filter(self, record):
        return not (str(record.msg).startswith("Connection pool is full")
                    and record.args and record.args[0] == "localhost")


logging.getLogger("urllib3.connectionpool").addFilter(_QuietUnixPoolOverflow())


class _Missing(ProviderError):
    """Internal: the LXD object does not exist (HTTP 404)."""


class LxdProvider(Provider):
    """Virtual nodes as LXD system containers."""

    driver = "lxd"
    suspend_modes = SUSPEND_MODES

    def __init__(self, name, config):
        super().__init__(name, config)
        for key in ("network", "storage_pool"):
            if not self.config.get(key):
                raise PolicyError(f"vcluster:providers:{name}:{key} is required by the lxd driver")
        self.network = self.config["network"]
        self.storage_pool = self.config["storage_pool"]
        self.endpoint = self.config.get("endpoint")
        self.project = self.config.get("project")
        self.profiles = list(self.config.get("profiles") or ["default"])
        self.privileged = bool(self.config.get("privileged"))
        self.timeout = float(self.config.get("timeout") or 120)
        self.parallel = max(1, int(self.config.get("parallel") or 4))
        self._client = None
        self._lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------

    def _count(self, kind):
        with self._lock:
            self.calls[kind] += 1

    @property
    def client(self):
        """The pylxd client, connected on first use."""
        with self._lock:
            if self._client is None:
                self.calls["connect"] += 1
                kwargs = {"endpoint": self.endpoint, "project": self.project}
                if self.config.get("cert") and self.config.get("key"):
                    kwargs["cert"] = (self.config["cert"], self.config["key"])
                if self.config.get("verify") is not None:
                    kwargs["verify"] = self.config["verify"]
                try:
                    self._client = pylxd.Client(**kwargs)
                except (pylxd.exceptions.ClientConnectionFailed, requests.RequestException) as exc:
                    where = self.endpoint or "the local unix socket"
                    raise ProviderError(f"cannot reach the LXD server at {where}: {exc}") from exc
            return self._client

    @property
    def server_name(self):
        """Name of the LXD server (its hostname when not clustered)."""
        return self.client.host_info.get("environment", {}).get("server_name") or "lxd"

    def _request(self, kind, method, node, what, state=False, **kwargs):
        """One API request, counted under ``kind``; LXD errors -> vcluster errors.

        ``state`` marks a state change, whose refusals become ProviderStateError.
        """
        self._count(kind)
        try:
            response = getattr(node, method)(**kwargs)
        except pylxd.exceptions.NotFound as exc:
            raise _Missing(f"{what}: {exc}") from exc
        except pylxd.exceptions.LXDAPIException as exc:
            raise _translate(what, str(exc), state) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"{what}: LXD did not answer ({exc})") from exc
        if response.status_code == 202:
            return self._wait_operation(response.json()["operation"], what, state)
        return response.json().get("metadata")

    def _wait_operation(self, operation, what, state=False):
        """Block on an LXD background operation until it ends or times out."""
        op_id = operation.rstrip("/").rsplit("/", 1)[-1]
        node = self.client.api.operations[op_id].wait
        self._count("operation")
        try:
            meta = node.get(params={"timeout": int(self.timeout)}).json()["metadata"]
        except pylxd.exceptions.LXDAPIException as exc:
            raise _translate(what, str(exc), state) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"{what}: LXD did not answer ({exc})") from exc
        if meta.get("status") == "Success":
            return meta.get("metadata")
        if meta.get("status") in ("Running", "Pending"):
            raise ProviderTimeout(f"{what}: LXD operation still running after {self.timeout:.0f} s")
        raise _translate(what, meta.get("err") or meta.get("status", "unknown failure"), state)

    def _set_state(self, name, action, what, **extra):
        node = self.client.api.instances[name].state
        body = {"action": action, "timeout": int(self.timeout), **extra}
        return self._request(action, "put", node, what, state=True, json=body)

    # -- lifecycle -----------------------------------------------------------

    def create(self, specs):
        """Create, provision and start one container per spec, in parallel.

        All or nothing: every container created by this call is deleted again
        when any of them fails. Returns the instances in spec order.
        """
        specs = list(specs)
        if not specs:
            return []
        names = spec_names(specs)
        taken = sorted(set(names) & set(self._names()))
        if taken:
            raise ProviderError(f"LXD already has instances named {', '.join(taken)}: delete them or use other names")
        images = {image: self._resolve_image(image) for image in {s.image for s in specs}}
        request = secrets.token_hex(8)
        created = []
        results, errors = {}, []
        workers = min(self.parallel, len(specs))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="lxd-create") as pool:
            futures = {pool.submit(self._create_one, s, images[s.image], request, created): s for s in specs}
            for future in concurrent.futures.as_completed(futures):
                try:
                    results[futures[future].name] = future.result()
                except Exception as exc:  # noqa: BLE001 - every failure triggers the rollback
                    errors.append(exc)
        if errors:
            self._rollback(created, request)
            first = errors[0]
            if isinstance(first, ProviderError):
                raise type(first)(str(first)) from first
            raise ProviderError(f"creating LXD containers failed: {first}") from first
        return [results[n] for n in names]

    def _names(self):
        """Names of all instances (one call, no recursion)."""
        urls = self._request("list", "get", self.client.api.instances, "list instances") or []
        return [url.rstrip("/").rsplit("/", 1)[-1] for url in urls]

    def _resolve_image(self, image):
        """Fingerprint of the image named by alias or fingerprint, before anything is created."""
        api = self.client.api.images
        try:
            return self._request("get", "get", api.aliases[image], f"image {image}")["target"]
        except _Missing:
            pass
        if _FINGERPRINT.match(image):
            try:
                return self._request("get", "get", api[image], f"image {image}")["fingerprint"]
            except _Missing:
                pass
        raise ProviderError(f"LXD has no image with alias or fingerprint '{image}' (run image/build.sh)")

    def _instance_body(self, spec, fingerprint, request):
        """The POST /1.0/instances body for one spec."""
        config = {
            REQUEST_KEY: request,
            "limits.cpu": str(spec.cpus),
            "limits.memory": f"{spec.memory_mb}MiB",
            "security.privileged": "true" if self.privileged else "false",
        }
        config.update({TAG_PREFIX + k: str(v) for k, v in spec.tags.items()})
        config.update(spec.extra.get("config", {}))
        nic = {"type": "nic", "name": "eth0", "network": spec.network or self.network}
        if spec.address:
            nic["ipv4.address"] = spec.address
        devices = {"root": {"type": "disk", "path": "/", "pool": self.storage_pool}, "eth0": nic}
        devices.update(spec.extra.get("devices", {}))
        return {
            "name": spec.name,
            "type": "container",
            "source": {"type": "image", "fingerprint": fingerprint},
            "profiles": self.profiles,
            "config": config,
            "devices": devices,
        }

    def _create_one(self, spec, fingerprint, request, created):
        what = f"create {spec.name}"
        body = self._instance_body(spec, fingerprint, request)
        self._count("create")
        try:
            response = self.client.api.instances.post(json=body)
        except pylxd.exceptions.LXDAPIException as exc:
            raise _translate(what, str(exc)) from exc
        except requests.RequestException as exc:
            raise ProviderError(f"{what}: LXD did not answer ({exc})") from exc
        with self._lock:
            created.append(spec.name)  # accepted; the rollback still checks REQUEST_KEY
        self._wait_operation(response.json()["operation"], what)
        for boot_file in spec.boot_files:
            self._push_file(spec.name, boot_file)
        self._set_state(spec.name, "start", f"start {spec.name}")
        return Instance(
            id=spec.name,
            name=spec.name,
            status=Status.RUNNING,
            address=spec.address,
            host=self.server_name,
            tags={k: str(v) for k, v in spec.tags.items()},
        )

    def _push_file(self, name, boot_file):
        """Write one boot file (creating missing parent directories)."""
        node = self.client.api.instances[name].files
        headers = {
            "X-LXD-type": "file",
            "X-LXD-mode": f"{boot_file.mode:04o}",
            "X-LXD-uid": "0",
            "X-LXD-gid": "0",
            "X-LXD-write": "overwrite",
        }
        what = f"push {boot_file.path} into {name}"
        data = boot_file.content.encode() if isinstance(boot_file.content, str) else boot_file.content
        try:
            self._request("file", "post", node, what, params={"path": boot_file.path}, data=data, headers=headers)
        except _Missing:
            self._make_parents(name, boot_file.path)
            self._request("file", "post", node, what, params={"path": boot_file.path}, data=data, headers=headers)

    def _make_parents(self, name, path):
        node = self.client.api.instances[name].files
        parts = [p for p in path.split("/")[:-1] if p]
        for i in range(1, len(parts) + 1):
            directory = "/" + "/".join(parts[:i])
            headers = {"X-LXD-type": "directory", "X-LXD-mode": "0755", "X-LXD-uid": "0", "X-LXD-gid": "0"}
            try:
                self._request(
                    "file", "post", node, f"mkdir {directory} in {name}", params={"path": directory}, headers=headers
                )
            except ProviderError as exc:
                if "exists" not in str(exc):
                    raise

    def _rollback(self, names, request):
        """Delete what this create() call made (instances marked with ``request``)."""
        ours = []
        for name in names:
            try:
                data = self._request("get", "get", self.client.api.instances[name], f"get {name}")
            except ProviderError:
                continue  # gone, or unreadable: not provably ours
            if (data or {}).get("config", {}).get(REQUEST_KEY) == request:
                ours.append(name)
        try:
            self.delete(ours)
        except ProviderError:
            pass  # the original error is the one worth reporting

    def delete(self, instance_ids):
        """Stop (forcefully) and delete instances; missing ones are ignored.

        Returns the ids that existed and are now gone.
        """
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return []
        deleted, errors = [], []
        workers = min(self.parallel, len(ids))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="lxd-delete") as pool:
            for iid, future in [(i, pool.submit(self._delete_one, i)) for i in ids]:
                try:
                    if future.result():
                        deleted.append(iid)
                except ProviderError as exc:
                    errors.append(str(exc))
        if errors:
            raise ProviderError("; ".join(errors))
        return deleted

    def _delete_one(self, name):
        try:
            self._set_state(name, "stop", f"stop {name}", force=True)
        except _Missing:
            return False
        except ProviderStateError:
            pass  # already stopped
        try:
            self._request("delete", "delete", self.client.api.instances[name], f"delete {name}")
        except _Missing:
            return False
        return True

    # -- queries ---------------------------------------------------------------

    def list(self, cluster):
        """Instances tagged ``cluster``: one recursive, server-filtered API call."""
        params = {"recursion": 2}
        if re.match(r"^[A-Za-z0-9_.:-]+$", cluster):  # LXD's filter takes no quoted values
            params["filter"] = f"config.{TAG_PREFIX}cluster eq {cluster}"
        found = self._request("list", "get", self.client.api.instances, "list instances", params=params)
        return [self._to_instance(d) for d in found or [] if d.get("config", {}).get(TAG_PREFIX + "cluster") == cluster]

    def list_all(self):
        """Every instance carrying vcluster tags, whatever its cluster."""
        found = self._request("list", "get", self.client.api.instances, "list instances", params={"recursion": 2})
        return [self._to_instance(d) for d in found or [] if TAG_PREFIX + "cluster" in d.get("config", {})]

    def get(self, instance_id):
        """One instance (tagged or not), or ``None`` when it does not exist."""
        node = self.client.api.instances[instance_id]
        try:
            data = self._request("get", "get", node, f"get {instance_id}", params={"recursion": 1})
        except _Missing:
            return None
        return self._to_instance(data)

    def _to_instance(self, data):
        config = data.get("config", {})
        tags = {k[len(TAG_PREFIX) :]: v for k, v in config.items() if k.startswith(TAG_PREFIX)}
        status = STATUS_MAP.get(data.get("status"), Status.UNKNOWN)
        location = data.get("location")
        host = location if location and location != "none" else self.server_name
        return Instance(
            id=data["name"],
            name=data["name"],
            status=status,
            address=_address(data),
            host=host,
            tags=tags,
            fault=data.get("status") if status is Status.ERROR else None,
        )

    # -- suspend / resume / migrate ---------------------------------------------

    def _status_word(self, name, what):
        try:
            state = self._request("get", "get", self.client.api.instances[name].state, what)
        except _Missing as exc:
            raise ProviderError(f"{what}: LXD has no instance named {name}") from exc
        return state.get("status")

    def suspend(self, instance_id, mode="suspend"):
        """Freeze the container (cgroup freezer); a frozen one is left as is."""
        if mode not in SUSPEND_MODES:
            raise ProviderError(
                f"LXD can only freeze a container: suspend mode '{mode}' is not one of {', '.join(SUSPEND_MODES)}"
            )
        what = f"suspend {instance_id}"
        word = self._status_word(instance_id, what)
        if word == "Frozen":
            return
        if word != "Running":
            raise ProviderStateError(f"cannot suspend {instance_id}: it is {word}, not Running")
        self._set_state(instance_id, "freeze", what)

    def resume(self, instance_id):
        """Thaw a frozen container; a running one is left as is."""
        what = f"resume {instance_id}"
        word = self._status_word(instance_id, what)
        if word == "Running":
            return
        if word != "Frozen":
            raise ProviderStateError(f"cannot resume {instance_id}: it is {word}, not Frozen")
        self._set_state(instance_id, "unfreeze", what)

    def migrate(self, instance_id, host=None, live=True):
        """Not available: LXD moves a running container only with CRIU."""
        raise ProviderError(
            f"cannot migrate {instance_id}: LXD needs CRIU to move a running container, and CRIU "
            "does not work on this kernel (vcluster does not drive LXD clusters either)"
        )

    def hosts(self):
        """The LXD server with its CPUs and memory minus the limits of non-stopped containers."""
        resources = self._request("resources", "get", self.client.api.resources, "read LXD resources")
        found = self._request("list", "get", self.client.api.instances, "list instances", params={"recursion": 1})
        cpus = int(resources["cpu"]["total"])
        memory_mb = int(resources["memory"]["total"]) // (1024 * 1024)
        used_cpus = used_mb = active = 0
        for data in found or []:
            if data.get("status") == "Stopped":
                continue
            active += 1
            config = data.get("expanded_config") or data.get("config", {})
            used_cpus += _cpu_count(config.get("limits.cpu"), cpus)
            used_mb += _memory_mb(config.get("limits.memory"), memory_mb)
        return [
            Host(
                name=self.server_name,
                cpus_free=max(0, cpus - used_cpus),
                memory_free_mb=max(0, memory_mb - used_mb),
                instances=active,
            )
        ]

    def close(self):
        """Drop the HTTP session."""
        if self._client is not None:
            self._client.api.session.close()
            self._client = None


def _translate(what, message, state=False):
    """An LXD error message -> the vcluster exception that fits it."""
    lowered = message.lower()
    if state and any(word in lowered for word in _STATE_WORDS):
        return ProviderStateError(f"{what}: {message}")
    return ProviderError(f"{what}: {message}")


def _address(data):
    """The container's global IPv4 on eth0, else the address reserved on its nic."""
    network = (data.get("state") or {}).get("network") or {}
    for addr in network.get("eth0", {}).get("addresses", []):
        if addr.get("family") == "inet" and addr.get("scope") == "global":
            return addr["address"]
    nic = (data.get("expanded_devices") or data.get("devices") or {}).get("eth0", {})
    return nic.get("ipv4.address")


def _cpu_count(value, total):
    """CPUs taken by ``limits.cpu`` ("2", "0-1", "0,2"); unset counts as none reserved."""
    if not value:
        return 0
    if value.isdigit():
        return int(value)
    count = 0
    for part in value.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return min(count, total)


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def _memory_mb(value, total_mb):
    """MiB taken by ``limits.memory`` ("1024MiB", "1GB", "50%"); unset counts as none reserved."""
    if not value:
        return 0
    value = value.strip()
    if value.endswith("%"):
        return int(total_mb * float(value[:-1]) / 100)
    match = re.match(r"^([0-9.]+)\s*([a-zA-Z]*)$", value)
    if not match or match.group(2).lower() not in _UNITS:
        return 0
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()] // (1024 * 1024))
