"""The OpenStack provider class: Nova servers as virtual nodes (see the package docstring)."""

import base64
import concurrent.futures
import logging
import threading
import time
import uuid

from vcluster.errors import (
    PolicyError,
    ProviderError,
    ProviderStateError,
    ProviderTimeout,
    QuotaExceeded,
)
from vcluster.providers.base import TAG_KEYS, Host, Provider
from vcluster.providers.openstack import userdata
from vcluster.providers.openstack.batching import batch_key, map_batch, plan_batches
from vcluster.providers.openstack.servers import (
    BATCH_IDENTITY_MAX,
    META_PREFIX,
    TAG_ALL,
    batch_identity,
    fault_message,
    nova_status,
    spec_metadata,
    tag_cluster,
    tag_request,
    to_instance,
)
from vcluster.retry import call as retry_call

log = logging.getLogger(__name__)

SERVER_GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
SUSPEND_MODES = {
    # mode: (openstacksdk proxy method, Nova statuses that mean done)
    "suspend": ("suspend_server", ("SUSPENDED",)),
    "pause": ("pause_server", ("PAUSED",)),
    "shelve": ("shelve_server", ("SHELVED_OFFLOADED", "SHELVED")),
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


class _Failed(Exception):
    """An API call that failed with an HTTP status (0: no answer); only its status goes into messages."""

    def __init__(self, error, status, transient):
        super().__init__(status or type(error).__name__)
        self.error, self.status, self.transient = error, status, transient


class OpenStackProvider(Provider):
    """Nova servers as virtual nodes. See the module docstring for configuration."""

    driver = "openstack"
    suspend_modes = tuple(SUSPEND_MODES)

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

    # -- connection and calls ---------------------------------------------------

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self):
        import openstack
        import openstack.config

        options = {
            k: self.config[k]
            for k in ("region_name", "interface", "verify", "cacert", "auth_type", "identity_api_version")
            if k in self.config
        }
        try:
            if self._auth:
                return openstack.connect(auth=dict(self._auth), app_name="vcluster", **options)
            if self.config.get("clouds_yaml"):
                region = openstack.config.OpenStackConfig(config_files=[self.config["clouds_yaml"]]).get_one(
                    cloud=self.config["cloud"], **options
                )
                return openstack.connection.Connection(config=region, app_name="vcluster")
            return openstack.connect(cloud=self.config["cloud"], app_name="vcluster", **options)
        except Exception as exc:  # openstacksdk raises several kinds here
            raise ProviderError(f"cannot configure OpenStack provider {self.name}: {type(exc).__name__}") from None

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _count(self, kind):
        with self._lock:
            self.calls[kind] += 1

    def _call(self, kind, fn, *args, retry=True, **kwargs):
        """Run one API call, counted under ``kind``.

        5xx answers and connection failures are retried (``retry=False`` for
        calls that are not idempotent) with exponential backoff, at most
        ``api_retries`` times and within ``api_retry_deadline`` seconds. Other
        errors are translated into :mod:`vcluster.errors` exceptions.
        """
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as os_exc

        def once():
            self._count(kind)
            try:
                return fn(*args, **kwargs)
            except os_exc.HttpException as exc:
                status = exc.status_code or 0
                raise _Failed(exc, status, transient=status >= 500) from None
            except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.RetriableConnectionFailure) as exc:
                raise _Failed(exc, 0, transient=True) from None
            except ks_exc.Unauthorized:
                raise ProviderError(f"the cloud of provider {self.name} rejected its credentials") from None
            except ks_exc.ClientException as exc:
                raise ProviderError(f"OpenStack {kind} call failed: {type(exc).__name__}") from None
            except os_exc.SDKException as exc:  # endpoint missing, bad config... (no HTTP status)
                raise ProviderError(f"OpenStack {kind} call failed: {type(exc).__name__}: {str(exc)[:300]}") from None

        def on_retry(attempt, failed, delay):
            self._count("retry")
            log.info("OpenStack %s call failed (%s), retry %d in %.1f s", kind, failed, attempt, delay)

        try:
            return retry_call(once, self.retries + 1 if retry else 1, self.retry_backoff,
                              time.monotonic() + self.retry_deadline,
                              is_transient=lambda exc: isinstance(exc, _Failed) and exc.transient,
                              on_retry=on_retry, wait=time.sleep, quiet=True)
        except _Failed as failed:
            translated = self._translate(kind, failed.error, failed.status)
            translated.http_status = failed.status
            raise translated from None

    @staticmethod
    def _detail(exc):
        detail = getattr(exc, "details", None) or getattr(exc, "message", None) or str(exc)
        return str(detail).strip().rstrip(".")

    def _translate(self, kind, exc, status):
        detail = self._detail(exc)
        if status in (403, 413) and "quota" in detail.lower():
            return QuotaExceeded(f"OpenStack quota exceeded: {detail}")
        if status == 409:
            return ProviderStateError(f"Nova refuses to {kind.replace('_', ' ')} in the server's current state: {detail}")
        if status == 0:
            return ProviderError(f"OpenStack {kind} call failed: cannot reach the cloud ({type(exc).__name__})")
        if status >= 500:
            return ProviderError(f"OpenStack {kind} call failed with HTTP {status} after retries: {detail}")
        return ProviderError(f"OpenStack refused {kind.replace('_', ' ')} (HTTP {status}): {detail}")

    def _map(self, fn, items):
        """Run ``fn`` on every item with up to ``api_concurrency`` threads; re-raise the first error."""
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(item) for item in items]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- lookups (cached per provider) ---------------------------------------------

    def _cached(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _image_id(self, image):
        def find():
            found = self._call("lookup", self.conn.image.find_image, image, ignore_missing=True)
            if found is None:
                raise ProviderError(f"image {image!r} does not exist in the cloud")
            return found.id

        return self._cached(("image", image), find)

    def _flavor_id(self, spec):
        if spec.flavor:
            def find():
                found = self._call("lookup", self.conn.compute.find_flavor, spec.flavor, ignore_missing=True)
                if found is None:
                    raise ProviderError(f"flavor {spec.flavor!r} does not exist in the cloud")
                return found.id

            return self._cached(("flavor", spec.flavor), find)

        def smallest():
            flavors = self._call("lookup", lambda: list(self.conn.compute.flavors(details=True)))
            fits = [f for f in flavors if f.vcpus >= spec.cpus and f.ram >= spec.memory_mb]
            if not fits:
                raise ProviderError(
                    f"no flavor has {spec.cpus} vCPUs and {spec.memory_mb} MiB; set the profile's flavor"
                )
            return min(fits, key=lambda f: (f.vcpus, f.ram, f.disk or 0)).id

        return self._cached(("flavor-fit", spec.cpus, spec.memory_mb), smallest)

    def _network_id(self, network):
        def find():
            found = self._call("lookup", self.conn.network.find_network, network, ignore_missing=True)
            if found is None:
                raise ProviderError(f"network {network!r} does not exist in the cloud")
            return found.id

        return self._cached(("network", network), find)

    def _server_group_id(self, spec, groups_seen):
        extra = spec.extra or {}
        policy = extra.get("server_group_policy")
        name = extra.get("server_group")
        if not policy and not name:
            return None
        if policy and policy not in SERVER_GROUP_POLICIES:
            raise PolicyError(
                f"server_group_policy of {spec.name} must be one of {', '.join(SERVER_GROUP_POLICIES)}, got {policy!r}"
            )
        name = name or "vcluster-{}-{}-{}".format(spec.tags.get("cluster"), spec.tags.get("profile"), policy)
        if name in groups_seen:
            return groups_seen[name]
        if "" not in groups_seen:  # list the project's groups once per create call
            groups_seen[""] = {
                g.name: g.id for g in self._call("server_group", lambda: list(self.conn.compute.server_groups()))
            }
        existing = groups_seen[""]
        if name in existing:
            groups_seen[name] = existing[name]
        elif not policy:
            raise ProviderError(f"server group {name!r} does not exist and no server_group_policy says how to create it")
        else:
            group = self._call("server_group", self.conn.compute.create_server_group, name=name, policy=policy)
            existing[name] = groups_seen[name] = group.id
        return groups_seen[name]

    # -- create --------------------------------------------------------------------

    def _resolve(self, spec, groups_seen):
        if not spec.tags.get("cluster"):
            raise PolicyError(f"spec {spec.name} has no cluster tag")
        resolved = {"image": self._image_id(spec.image), "flavor": self._flavor_id(spec)}
        if spec.network:
            resolved["network"] = self._network_id(spec.network)
        resolved["server_group"] = self._server_group_id(spec, groups_seen)
        return resolved

    def _server_args(self, specs, resolved, request_id, batch_no, base_name):
        """Keyword arguments of ``create_server`` for one batch (``specs`` in launch-index order)."""
        first = specs[0]
        extra = first.extra or {}
        single = len(specs) == 1
        metadata = {
            META_PREFIX + "cluster": str(first.tags["cluster"]),
            META_PREFIX + "batch": str(batch_no),
        }
        if first.tags.get("profile") is not None:
            metadata[META_PREFIX + "profile"] = str(first.tags["profile"])
        if single:
            metadata.update(spec_metadata(first))
        elif not self.name_servers:
            metadata.update(batch_identity(specs))
        if resolved.get("network"):
            net = {"uuid": resolved["network"]}
            if single and first.address:
                net["fixed_ip"] = first.address
            networks = [net]
        else:
            networks = extra.get("networks", self.default_networks)
        user_data = userdata.batch_user_data(specs, self.minion_start)
        args = {
            "name": first.name if single else base_name,
            "image_id": resolved["image"],
            "flavor_id": resolved["flavor"],
            "networks": networks,
            "metadata": metadata,
            "tags": [TAG_ALL, tag_cluster(first.tags["cluster"]), tag_request(request_id)],
            "user_data": base64.b64encode(user_data).decode(),
        }
        if not single:
            args["min_count"] = args["max_count"] = len(specs)
        if resolved.get("server_group"):
            args["scheduler_hints"] = {"group": resolved["server_group"]}
        for key in ("availability_zone", "key_name"):
            if extra.get(key):
                args[key] = extra[key]
        if extra.get("security_groups"):
            args["security_groups"] = [{"name": g} for g in extra["security_groups"]]
        if extra.get("config_drive"):
            args["config_drive"] = True
        return args

    def create(self, specs):
        """Create one server per spec, batched with Nova multi-create; all or nothing.

        Returns the :class:`Instance` list in spec order, every server ACTIVE,
        named after its node and tagged. Raises :class:`QuotaExceeded`,
        :class:`ProviderError` (a server went to ERROR: Nova's fault message),
        :class:`ProviderTimeout`; in every case the servers of this call are
        deleted first.
        """
        specs = list(specs)
        if not specs:
            return []
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise PolicyError("instance names in one create call must be unique")
        groups_seen = {}
        resolved = [self._resolve(spec, groups_seen) for spec in specs]
        keys = [None if (spec.network and spec.address) else batch_key(spec, res, by_request=not self.name_servers)
                for spec, res in zip(specs, resolved, strict=True)]
        max_batch = self.max_batch if self.name_servers else min(self.max_batch, BATCH_IDENTITY_MAX)
        batches = plan_batches(specs, keys, max_batch, self.multi_create, self.minion_start)
        request_id = uuid.uuid4().hex[:12]
        timeout = max(float((s.extra or {}).get("boot_timeout", self.boot_timeout)) for s in specs)
        deadline = time.monotonic() + timeout
        plans = []  # (batch_no, [spec indexes], base_name)
        log.info("creating %d servers in %d requests (request %s)", len(specs), len(batches), request_id)
        try:
            for batch_no, indexes in enumerate(batches):
                base_name = f"vcluster-{request_id}-{batch_no}"
                batch_specs = [specs[i] for i in indexes]
                args = self._server_args(batch_specs, resolved[indexes[0]], request_id, batch_no, base_name)
                self._create_batch(args, request_id, batch_no)
                plans.append((batch_no, indexes, base_name))
            return self._finish_create(specs, plans, request_id, deadline)
        except BaseException as exc:
            log.warning("create request %s failed (%s); deleting its servers", request_id, type(exc).__name__)
            self._cleanup_request(request_id)
            raise

    def _create_batch(self, args, request_id, batch_no):
        """One POST /servers; not blindly retried, since a 5xx may still have created the servers.

        After a 5xx or a lost connection it lists the request's servers: when
        the batch exists it goes on with it, otherwise it asks again (bounded).
        """
        attempts = 0
        while True:
            try:
                return self._call("create", self.conn.compute.create_server, retry=False, **args)
            except ProviderError as exc:
                status = getattr(exc, "http_status", None)
                if status is None or not (status == 0 or status >= 500) or attempts >= self.retries:
                    raise
            existing = [
                s for s in self._list_request(request_id)
                if (s.metadata or {}).get(META_PREFIX + "batch") == str(batch_no)
            ]
            if existing:
                return existing[0]
            attempts += 1
            self._count("retry")
            time.sleep(self.retry_backoff * (2 ** (attempts - 1)))

    def _list_request(self, request_id):
        return self._call("list", lambda: list(self.conn.compute.servers(details=True, tags=tag_request(request_id))))

    def _finish_create(self, specs, plans, request_id, deadline):
        """Map, poll (one list call per round) until all ACTIVE; name and tag each server as it turns ACTIVE.

        Multi-created servers get their node name and per-node metadata once
        ACTIVE (Nova refuses metadata changes before, and a rename while the
        server is still a build request can be lost when the cell takes it
        over). That work runs in a thread pool while the poll goes on for the
        servers still building.
        """
        by_spec = {}  # spec index -> server id
        servers = {}
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency)
        finishing = {}  # server id -> future of its rename + metadata
        try:
            while True:
                listed = self._list_request(request_id)
                servers = {s.id: s for s in listed}
                if len(by_spec) < len(specs):
                    self._map_batches(plans, listed, by_spec)
                inverse = {sid: i for i, sid in by_spec.items()}
                failed = [servers[sid] for sid in by_spec.values() if sid in servers and nova_status(servers[sid]) == "ERROR"]
                if failed:
                    raise ProviderError(
                        "server {} went to ERROR: {}".format(
                            specs[inverse[failed[0].id]].name, fault_message(failed[0]) or "Nova gave no fault message"
                        )
                    )
                missing = [i for i, sid in by_spec.items() if sid not in servers]
                if missing:
                    raise ProviderError(f"server {specs[missing[0]].name} disappeared while it was being created")
                active = [sid for sid in by_spec.values() if self._settled(("ACTIVE",))(servers[sid])]
                for sid in active:
                    if sid not in finishing:
                        if self.name_servers:
                            finishing[sid] = pool.submit(self._name_and_tag, servers[sid], specs[inverse[sid]])
                        else:
                            finishing[sid] = None  # named by its batch's metadata (or created final): no call
                if len(active) == len(specs):
                    break
                for future in finishing.values():  # surface a failed rename early
                    if future is not None and future.done() and future.exception():
                        raise future.exception()
                if time.monotonic() >= deadline:
                    waiting = sorted(specs[i].name for i, sid in by_spec.items() if sid not in active)
                    raise ProviderTimeout(
                        "servers {} were not ACTIVE before the boot deadline".format(", ".join(waiting) or "of the request")
                    )
                time.sleep(self.poll_interval)
            for future in finishing.values():
                if future is not None:
                    future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        result = []
        for i, spec in enumerate(specs):
            inst = to_instance(servers[by_spec[i]])
            inst.name = spec.name
            inst.tags = {k: str(v) for k, v in spec.tags.items() if k in TAG_KEYS and v is not None}
            result.append(inst)
        return result

    def _name_and_tag(self, server, spec):
        """Rename a multi-created server to its node and set its per-node metadata (no-ops when done)."""
        if server.name != spec.name:
            self._call("rename", self.conn.compute.update_server, server.id, name=spec.name)
        wanted = spec_metadata(spec)
        if wanted.items() - (server.metadata or {}).items():
            self._call("metadata", self.conn.compute.set_server_metadata, server.id, **wanted)

    @staticmethod
    def _map_batches(plans, listed, by_spec):
        """Record spec index -> server id for every batch that the list shows."""
        for batch_no, indexes, base_name in plans:
            if indexes[0] in by_spec:
                continue
            members = [s for s in listed if (s.metadata or {}).get(META_PREFIX + "batch") == str(batch_no)]
            if not members:
                continue
            if len(indexes) == 1:
                by_spec[indexes[0]] = members[0].id
                continue
            for launch_index, server in map_batch(members, base_name, len(indexes)).items():
                by_spec[indexes[launch_index]] = server.id

    def _cleanup_request(self, request_id):
        """Delete every server of one create request and wait (bounded) until they are gone."""
        try:
            servers = self._list_request(request_id)
            self._delete_servers([s.id for s in servers])
            self._wait_gone({s.id for s in servers}, lambda: self._list_request(request_id))
        except Exception as exc:  # cleanup must not hide the original error
            log.error("cleanup of create request %s incomplete: %s", request_id, exc)

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
        """Nova suspend (memory to disk), pause (memory kept) or shelve (offloaded from the host)."""
        if mode not in SUSPEND_MODES:
            raise PolicyError(f"suspend mode must be one of {', '.join(SUSPEND_MODES)}, got {mode!r}")
        method, statuses = SUSPEND_MODES[mode]
        server = self._get_server(instance_id)
        self._action(mode, method, server)
        return to_instance(self._wait_server(instance_id, self._settled(statuses), f"was asked to {mode}"))

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
