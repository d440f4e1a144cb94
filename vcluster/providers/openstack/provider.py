"""The OpenStack provider class: Nova servers as virtual nodes (see the package docstring).

The class itself holds configuration, delete/list/get, suspend/resume/migrate
and capacity; API calls and their error mapping come from
:class:`~vcluster.providers.openstack.api.ApiCalls`, server creation from
:class:`~vcluster.providers.openstack.create.CreateServers`.
"""

import threading
import time

from vcluster.errors import PolicyError, ProviderError, ProviderStateError, ProviderTimeout
from vcluster.providers.base import Host, Provider, SuspendModes
from vcluster.providers.openstack import userdata
from vcluster.providers.openstack.api import ApiCalls
from vcluster.providers.openstack.create import CreateServers
from vcluster.providers.openstack.servers import (
    META_PREFIX,
    TAG_ALL,
    fault_message,
    nova_status,
    tag_cluster,
    to_instance,
)

SUSPEND_MODES = {
    # mode (vcluster.providers.base.SUSPEND_MODES): (Nova's action, openstacksdk proxy method,
    # Nova statuses that mean done)
    "save": ("suspend", "suspend_server", ("SUSPENDED",)),
    "pause": ("pause", "pause_server", ("PAUSED",)),
    "shelve": ("shelve", "shelve_server", ("SHELVED_OFFLOADED", "SHELVED")),
}
RESUME_ACTIONS = {
    # Nova status: (action kind, openstacksdk proxy method)
    "SUSPENDED": ("resume", "resume_server"),
    "PAUSED": ("unpause", "unpause_server"),
    "SHELVED": ("unshelve", "unshelve_server"),
    "SHELVED_OFFLOADED": ("unshelve", "unshelve_server"),
    "SHUTOFF": ("start", "start_server"),
}
_SECRET_KEYS = ("password", "secret", "token", "application_credential_secret", "key")


class OpenStackProvider(ApiCalls, CreateServers, Provider):
    """Nova servers as virtual nodes. See the module docstring for configuration."""

    driver = "openstack"
    suspend_modes = SuspendModes(SUSPEND_MODES)

    def __init__(self, name, config, connection=None):
        config = dict(config or {})
        self._auth = config.pop("auth", None)
        for key in list(config):
            if any(word in key.lower() for word in _SECRET_KEYS):
                config.pop(key)
        super().__init__(name, config)
        if not self._auth and not config.get("cloud"):
            raise PolicyError(f"vcluster:providers:{name} needs 'cloud' (a clouds.yaml entry) or 'auth'")
        if self._auth is not None and not isinstance(self._auth, dict):
            raise PolicyError(f"vcluster:providers:{name}:auth must be a mapping")
        self._conn = connection
        self._lock = threading.Lock()
        self._cache = {}
        self.boot_timeout = float(config.get("boot_timeout", 600))
        self.action_timeout = float(config.get("action_timeout", 300))
        self.poll_interval = float(config.get("poll_interval", 2))
        self.multi_create = bool(config.get("multi_create", True))
        self.max_batch = int(config.get("max_batch", 50))
        self.retries = int(config.get("api_retries", 4))
        self.retry_deadline = float(config.get("api_retry_deadline", 60))
        self.retry_backoff = float(config.get("api_retry_backoff", 0.5))
        self.concurrency = max(1, int(config.get("api_concurrency", 8)))
        self.default_networks = config.get("networks", "auto")
        self.minion_start = config.get("minion_start", userdata.DEFAULT_MINION_START)
        self.name_servers = bool(config.get("name_servers", True))

    def __repr__(self):
        where = f"cloud={self.config['cloud']!r}" if self.config.get("cloud") else "auth=<hidden>"
        return f"OpenStackProvider(name={self.name!r}, {where})"

    __str__ = __repr__

    # -- delete / list ---------------------------------------------------------------

    def _delete_servers(self, ids):
        self._map(lambda sid: self._call("delete", self.conn.compute.delete_server, sid, ignore_missing=True), ids)

    def _wait_gone(self, ids, lister, timeout=None):
        ids = set(ids)
        deadline = time.monotonic() + (self.action_timeout if timeout is None else timeout)
        while ids:
            present = {s.id for s in lister() if nova_status(s) not in ("DELETED", "SOFT_DELETED")}
            ids &= present
            if not ids:
                return
            if time.monotonic() >= deadline:
                raise ProviderTimeout(f"servers {', '.join(sorted(ids))} were not deleted before the deadline")
            time.sleep(self.poll_interval)

    def delete(self, instance_ids, wait=True):
        """Delete servers (missing ones are ignored); with ``wait`` poll until they are gone."""
        ids = [i for i in instance_ids if i]
        if not ids:
            return
        self._delete_servers(ids)
        if wait:
            self._wait_gone(ids, self._list_tagged)

    def _list_tagged(self, tag=TAG_ALL):
        return self._call("list", lambda: list(self.conn.compute.servers(details=True, tags=tag)))

    def list(self, cluster):
        """Servers of ``cluster``: one list call filtered by the cluster tag, checked against metadata."""
        servers = self._list_tagged(tag_cluster(cluster))
        return [to_instance(s) for s in servers if (s.metadata or {}).get(META_PREFIX + "cluster") == str(cluster)]

    def list_all(self):
        """Every server carrying the ``vcluster`` tag, in one list call."""
        return [to_instance(s) for s in self._list_tagged()]

    def get(self, instance_id):
        server = self._get_server(instance_id, missing_ok=True)
        return to_instance(server) if server is not None else None

    def _get_server(self, instance_id, missing_ok=False):
        try:
            return self._call("get", self.conn.compute.get_server, instance_id)
        except ProviderError as exc:
            if getattr(exc, "http_status", None) != 404:
                raise
            if missing_ok:
                return None
            raise ProviderError(f"server {instance_id} does not exist") from None

    # -- suspend / resume / migrate ------------------------------------------------------

    def _wait_server(self, instance_id, done, what, timeout=None):
        """Poll one server (one GET per round) until ``done(server)``; ERROR ends it with Nova's fault."""
        deadline = time.monotonic() + (self.action_timeout if timeout is None else timeout)
        while True:
            server = self._get_server(instance_id)
            if nova_status(server) == "ERROR":
                raise ProviderError(f"server {server.name} went to ERROR while it {what}: {fault_message(server) or 'no fault message'}")
            if done(server):
                return server
            if time.monotonic() >= deadline:
                raise ProviderTimeout(
                    f"server {server.name} {what} but is still {nova_status(server)}"
                    f" (task {getattr(server, 'task_state', None) or 'none'}) at the deadline"
                )
            time.sleep(self.poll_interval)

    @staticmethod
    def _settled(statuses):
        return lambda s: nova_status(s) in statuses and not getattr(s, "task_state", None)

    def _action(self, kind, method, server, **kwargs):
        try:
            return self._call(kind, getattr(self.conn.compute, method), server, retry=False, **kwargs)
        except ProviderStateError as exc:
            name = getattr(server, "name", None) or server
            raise ProviderStateError(
                f"cannot {kind.replace('_', ' ')} server {name}: Nova refuses it in its current state ({str(exc).split(': ', 1)[-1]})"
            ) from None

    def suspend(self, instance_id, mode="suspend"):
        """``save``: Nova suspend (memory to disk); ``pause``: Nova pause (memory kept); ``shelve``: Nova
        shelve (offloaded from the host). The old name ``suspend`` means ``save``."""
        resolved = self.suspend_mode(mode)
        if resolved is None:
            raise PolicyError(f"suspend mode must be one of {self.suspend_modes.described()}, got {mode!r}")
        action, method, statuses = SUSPEND_MODES[resolved]
        server = self._get_server(instance_id)
        self._action(action, method, server)
        return to_instance(self._wait_server(instance_id, self._settled(statuses), f"was asked to {action}"))

    def resume(self, instance_id, host=None):
        """Undo suspend, pause, shelve or stop, whichever the server is in.

        ``host`` only applies to a shelved server (unshelve onto that compute
        host, Nova API 2.91).
        """
        server = self._get_server(instance_id)
        status = nova_status(server)
        if status not in RESUME_ACTIONS or getattr(server, "task_state", None):
            raise ProviderStateError(
                f"cannot resume server {server.name}: it is {status}"
                + (f" (task {server.task_state})" if getattr(server, "task_state", None) else "")
                + ", not suspended, paused, shelved or stopped"
            )
        kind, method = RESUME_ACTIONS[status]
        kwargs = {"host": host} if (host and kind == "unshelve") else {}
        self._action(kind, method, server, **kwargs)
        return to_instance(self._wait_server(instance_id, self._settled(("ACTIVE",)), f"was asked to {kind}"))

    def migrate(self, instance_id, host=None, live=True):
        """Live-migrate (ACTIVE or PAUSED servers) or cold-migrate (ACTIVE or SHUTOFF, then confirmed)."""
        server = self._get_server(instance_id)
        source = getattr(server, "compute_host", None)
        status = nova_status(server)
        if host and source and host == source:
            raise ProviderStateError(f"cannot migrate server {server.name}: it already runs on {host}")
        moved = (lambda s: s.compute_host == host) if host else (lambda s: s.compute_host != source)
        if live:
            self._action("live_migrate", "live_migrate_server", server, host=host, block_migration="auto")
            final = self._wait_server(instance_id, self._settled((status,)), "was live-migrating")
        else:
            self._action("migrate", "migrate_server", server, host=host)
            self._wait_server(instance_id, self._settled(("VERIFY_RESIZE",)), "was cold-migrating")
            self._action("confirm_resize", "confirm_server_resize", server)
            final = self._wait_server(instance_id, self._settled((status,)), "was confirming its migration")
        if source and not moved(final):
            raise ProviderError(
                f"migration of server {final.name} did not move it: it is still on {final.compute_host}"
                " (see nova-compute's log for the reason)"
            )
        return to_instance(final)

    # -- capacity ---------------------------------------------------------------------------

    def hosts(self):
        """Compute hosts with free vCPUs and memory as Placement computes them (allocation ratios, reservations)."""
        placement = self.conn.placement
        providers = self._call("hosts", lambda: placement.get("/resource_providers").json()["resource_providers"])
        states = {}
        try:
            for hyp in self._call("hosts", lambda: list(self.conn.compute.hypervisors(details=True))):
                states[hyp.name] = "up" if (hyp.state == "up" and hyp.status == "enabled") else f"{hyp.state}/{hyp.status}"
        except ProviderError:
            pass  # hypervisor states need admin; capacity does not
        counts = {}
        try:
            for inst in self.list_all():
                if inst.host:
                    counts[inst.host] = counts.get(inst.host, 0) + 1
        except ProviderError:
            pass
        hosts = []
        for rp in providers:
            inv = self._call("hosts", lambda rp=rp: placement.get(f"/resource_providers/{rp['uuid']}/inventories").json()["inventories"])
            if "VCPU" not in inv:
                continue
            usage = self._call("hosts", lambda rp=rp: placement.get(f"/resource_providers/{rp['uuid']}/usages").json()["usages"])

            def free(rc, inv=inv, usage=usage):
                item = inv.get(rc)
                if not item:
                    return 0
                capacity = int((item["total"] - item.get("reserved", 0)) * item.get("allocation_ratio", 1.0))
                return max(0, capacity - usage.get(rc, 0))

            hosts.append(
                Host(
                    name=rp["name"],
                    cpus_free=free("VCPU"),
                    memory_free_mb=free("MEMORY_MB"),
                    instances=counts.get(rp["name"], 0),
                    state=states.get(rp["name"], "up"),
                )
            )
        return sorted(hosts, key=lambda h: h.name)
