"""Creating servers: lookups, Nova multi-create batches, polling until ACTIVE, naming and cleanup.

:class:`CreateServers` is mixed into
:class:`~vcluster.providers.openstack.provider.OpenStackProvider`; it calls
the API through :class:`~vcluster.providers.openstack.api.ApiCalls` and
deletes through the provider's ``_delete_servers``/``_wait_gone``. How a
batch is planned and mapped is in the package docstring.
"""

import base64
import concurrent.futures
import logging
import time
import uuid

from vcluster.errors import PolicyError, ProviderError, ProviderTimeout
from vcluster.providers.base import TAG_KEYS
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


class CreateServers:
    """``create`` and what it needs: cached lookups, batch requests, the poll, the cleanup."""

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
        the batch exists it goes on with it, otherwise it asks again (at most
        ``api_retries`` more times, through :func:`vcluster.retry.call`).
        """

        def once():
            try:
                return self._call("create", self.conn.compute.create_server, retry=False, **args)
            except ProviderError as exc:
                status = getattr(exc, "http_status", None)
                if status is None or not (status == 0 or status >= 500):
                    raise
                existing = [
                    s for s in self._list_request(request_id)
                    if (s.metadata or {}).get(META_PREFIX + "batch") == str(batch_no)
                ]
                if existing:
                    return existing[0]
                exc.unsent_batch = True  # Nova made nothing: asking again cannot double it
                raise

        return retry_call(once, self.retries + 1, self.retry_backoff, time.monotonic() + self.retry_deadline,
                          is_transient=lambda exc: getattr(exc, "unsent_batch", False),
                          on_retry=lambda *_: self._count("retry"), wait=time.sleep, quiet=True)

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
