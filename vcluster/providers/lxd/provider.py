"""The LXD provider class: configuration, delete, list/get, suspend/resume and capacity.

Requests and their error mapping come from :class:`~vcluster.providers.lxd.api.LxdApi`,
container creation from :class:`~vcluster.providers.lxd.create.CreateContainers`;
the package docstring lists the options.
"""

import concurrent.futures
import re
import threading
import time

from vcluster import retry
from vcluster.errors import PolicyError, ProviderError, ProviderStateError
from vcluster.providers.base import Host, Instance, Provider, Status, SuspendModes
from vcluster.providers.lxd.api import LxdApi, Missing
from vcluster.providers.lxd.create import CreateContainers
from vcluster.providers.lxd.data import STATUS_MAP, TAG_PREFIX, ipv4_of, limit_cpus, limit_memory_mb

#: A container can only be frozen (the old names ``suspend`` and ``pause`` mean this too).
SUSPEND_MODES = SuspendModes(("freeze",))


class LxdProvider(LxdApi, CreateContainers, Provider):
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
        # retries of one request (api.py): the product's defaults, as OpenStack's api_retry_* have
        self.retries = retry.API_RETRIES
        self.retry_deadline = retry.API_RETRY_DEADLINE
        self.retry_backoff = retry.API_RETRY_BACKOFF
        self._wait = time.sleep  # between two tries
        self._client = None
        self._lock = threading.RLock()  # re-entered: a retry of the first connect is counted under it

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
        except Missing:
            return False
        except ProviderStateError:
            pass  # already stopped
        try:
            self._request("delete", "delete", self.client.api.instances[name], f"delete {name}")
        except Missing:
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
        except Missing:
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
            address=ipv4_of(data),
            host=host,
            tags=tags,
            fault=data.get("status") if status is Status.ERROR else None,
        )

    # -- suspend / resume / migrate ---------------------------------------------

    def _status_word(self, name, what):
        try:
            state = self._request("get", "get", self.client.api.instances[name].state, what)
        except Missing as exc:
            raise ProviderError(f"{what}: LXD has no instance named {name}") from exc
        return state.get("status")

    def suspend(self, instance_id, mode="suspend"):
        """Freeze the container (cgroup freezer): mode ``freeze``; a frozen one is left as is."""
        if self.suspend_mode(mode) is None:
            raise ProviderError(
                f"LXD can only freeze a container: suspend mode '{mode}' is not one of {SUSPEND_MODES.described()}"
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
            used_cpus += limit_cpus(config.get("limits.cpu"), cpus)
            used_mb += limit_memory_mb(config.get("limits.memory"), memory_mb)
        return [
            Host(
                name=self.server_name,
                cpus_free=max(0, cpus - used_cpus),
                memory_free_mb=max(0, memory_mb - used_mb),
                instances=active,
            )
        ]
