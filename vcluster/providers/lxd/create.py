"""Creating containers: image lookup, the instance body, boot files pushed before the first start, rollback.

:class:`CreateContainers` is mixed into
:class:`~vcluster.providers.lxd.provider.LxdProvider`; its requests go
through :class:`~vcluster.providers.lxd.api.LxdApi` and a rollback through
the provider's ``delete``.
"""

import concurrent.futures
import re
import secrets

from vcluster.errors import ProviderError
from vcluster.providers.base import Instance, Status, spec_names
from vcluster.providers.lxd.api import Missing
from vcluster.providers.lxd.data import TAG_PREFIX

#: Config key marking the create() call that made an instance: a rollback
#: deletes only instances carrying its own mark, never a namesake.
REQUEST_KEY = "user.vcluster_request"
_FINGERPRINT = re.compile(r"^[0-9a-f]{12,64}$")


class CreateContainers:
    """``create`` and what it needs: parallel creation, boot files, the all-or-nothing rollback."""

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
        except Missing:
            pass
        if _FINGERPRINT.match(image):
            try:
                return self._request("get", "get", api[image], f"image {image}")["fingerprint"]
            except Missing:
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

        def accepted():
            with self._lock:
                created.append(spec.name)

        # Sent again only after LXD's 503 or when it never left (api.py); a
        # POST lost after it went out may still have made the container, so
        # the rollback looks at it too (it deletes only what carries
        # REQUEST_KEY = this call's mark, never a namesake).
        try:
            self._request("create", "post", self.client.api.instances, what, accepted=accepted, json=body)
        except ProviderError as exc:
            if spec.name not in created:
                accepted()
            if isinstance(exc, Missing):  # an answer about the request (image, pool), not the instance
                raise ProviderError(str(exc)) from exc
            raise
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
            self._request("file", "post", node, what, idempotent=True,  # overwrites: may be sent twice
                          params={"path": boot_file.path}, data=data, headers=headers)
        except Missing:
            self._make_parents(name, boot_file.path)
            self._request("file", "post", node, what, idempotent=True,
                          params={"path": boot_file.path}, data=data, headers=headers)

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
