"""Test harness: an LXD container plays the guest of each Nova server of one cluster.

Why this exists: the testbed's Nova runs the in-tree *fake* virt driver
(``fake.FakeDriverWithoutFakeNodes``). It keeps Nova's whole control plane
real (API, conductor, scheduler, Placement, quotas, state machine) but boots
nothing: an ACTIVE server has no kernel, no cloud-init, no salt-minion. The
node flow of vcluster (minion start -> reactor -> highstate -> slurmd joins)
needs a guest, so this harness plays the hypervisor's part for the servers
of one cluster tag, watching Nova only through its public API:

* Nova says ``ACTIVE`` and the server has ``vcluster_address`` metadata
  (the node's pool address; the testbed has no Neutron, so the harness also
  plays the network): start an LXD container from the node image on the test
  bridge with that address, holding the files cloud-init would write. They
  come from the server's user data as Nova stores it: the single
  ``#cloud-config``, or, for a multi-create, the part of the MIME archive
  whose ``Launch-Index`` is the server's ``launch_index`` (what cloud-init
  does). The container is named after the part's ``hostname``.
* ``SUSPENDED`` / ``PAUSED``: freeze the container; ``ACTIVE`` again: thaw it.
* ``SHUTOFF`` / ``SHELVED(_OFFLOADED)``: stop it; ``ACTIVE`` again: start it.
* Nova deleting the server (task ``deleting``), or the server gone: force-stop
  and delete the container, as a hypervisor destroys the domain.

What it does not play: cloud-init's ``runcmd`` is not executed. The node
image enables ``salt-minion.service``, which starts at boot with the files
already in place, so the minion comes up exactly as ``runcmd`` would start it.
The container is sized from the node's grains (``vcluster:cpus``,
``vcluster:memory``), not from the Nova flavor (m1.tiny has 64 MiB, too small
for a real minion and slurmd).

Where it is less than a hypervisor: a real guest boots as soon as Nova
starts it, before the provider's post-ACTIVE rename and metadata; this one
waits for ``vcluster_address``, so its minion never starts before
``create()`` has returned. And a real hypervisor has destroyed the domain when
Nova reports the server gone; here the container lives on for the harness's
reaction time: one poll round plus a freeze (well under a second; the
force-stop and delete that follow take seconds). Retire deletes the node's
minion key right after Nova reports the server gone; a guest still running
then re-authenticates and leaves a pending key (seen here before the freeze
was added).

One background thread polls Nova (one list call per round, filtered by the
cluster tag) until :meth:`NovaGuests.stop` or its own deadline. Everything it
did is in :attr:`NovaGuests.actions`; anything that went wrong is in
:attr:`NovaGuests.errors` (tests assert it stays empty).
"""

import base64
import logging
import threading
import time

import yaml

from vcluster.errors import ProviderError
from vcluster.providers.base import BootFile, InstanceSpec
from vcluster.providers.lxd import LxdProvider
from vcluster.providers.openstack import META_PREFIX, nova_status, parse_user_data, tag_cluster

log = logging.getLogger(__name__)

#: Nova statuses in which the guest is frozen / powered off.
FROZEN = ("SUSPENDED", "PAUSED")
OFF = ("SHUTOFF", "SHELVED", "SHELVED_OFFLOADED")
GRAINS = "/etc/salt/grains"


def own_cloud_config(user_data, launch_index):
    """The ``#cloud-config`` dict cloud-init would apply on a server with ``launch_index``."""
    parts = parse_user_data(user_data)
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    for index, doc in parts:
        if index == launch_index:
            return doc
    raise ProviderError(f"user data has no part for launch index {launch_index}")


def boot_files(cloud_config):
    """``write_files`` of a cloud-config as :class:`BootFile` (base64 decoded, modes kept)."""
    files = []
    for entry in cloud_config.get("write_files", []):
        content = entry.get("content", "")
        if entry.get("encoding") in ("b64", "base64"):
            content = base64.b64decode(content).decode()
        files.append(BootFile(entry["path"], content, int(str(entry.get("permissions", "0644")), 8)))
    return files


def guest_size(files):
    """(cpus, memory MiB) from the node's grains file, else (1, 1024)."""
    for f in files:
        if f.path == GRAINS:
            node = (yaml.safe_load(f.content) or {}).get("vcluster", {})
            return int(node.get("cpus") or 1), int(node.get("memory") or 1024)
    return 1, 1024


class NovaGuests:
    """Plays the guest of every Nova server tagged with ``cluster``.

    ``conn`` is an openstacksdk connection that sees ``launch_index`` and
    ``user_data`` (the testbed's user has the admin role); ``lxd`` a dict
    with ``network`` (the test bridge), ``storage_pool`` and ``image``.
    """

    def __init__(self, conn, cluster, lxd, poll_interval=0.2, deadline_seconds=3600):
        self.conn = conn
        self.cluster = cluster
        self.tag = tag_cluster(cluster)
        self.image = lxd.get("image", "vcluster-node")
        self.guest_cluster = f"nova-guest-{cluster}"  # never the cluster's own tag: reconcile must not see guests
        self.lxd = LxdProvider("nova-guests", {"network": lxd["network"], "storage_pool": lxd["storage_pool"]})
        self.poll_interval = poll_interval
        self.deadline_seconds = deadline_seconds
        self.guests = {}  # server id -> {"name", "state": running|frozen|stopped}
        self.actions = []  # (monotonic time, server id, node name, action)
        self.errors = []
        self._stop = threading.Event()
        self._thread = None

    # -- lifecycle ------------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._run, name="nova-guests", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=120):
        """End the loop and delete every container it started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        leftovers = [i.id for i in self.lxd.list(self.guest_cluster)]
        if leftovers:
            self.lxd.delete(leftovers)
        self.lxd.close()

    def containers(self):
        """Names of the containers playing guests now."""
        return sorted(i.name for i in self.lxd.list(self.guest_cluster))

    def wait_for(self, check, timeout, what):
        """Poll ``check()`` (harness state) until true; fail with ``what`` at ``timeout``."""
        deadline = time.monotonic() + timeout
        while not check():
            if self.errors:
                raise AssertionError(f"guest harness failed: {self.errors}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what} not true after {timeout} s (guests {self.guests})")
            self._stop.wait(self.poll_interval)

    def _run(self):
        deadline = time.monotonic() + self.deadline_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - recorded for the test, the loop goes on
                log.exception("guest harness round failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_interval)

    # -- one poll round ---------------------------------------------------------

    def step(self):
        servers = {s.id: s for s in self.conn.compute.servers(details=True, tags=self.tag)}
        boot, gone = [], []
        for sid, server in servers.items():
            status = nova_status(server)
            task = getattr(server, "task_state", None)
            guest = self.guests.get(sid)
            if task == "deleting" or status in ("DELETED", "SOFT_DELETED"):
                if guest is not None:
                    gone.append(sid)
                continue
            if guest is None:
                if status == "ACTIVE" and not task and (server.metadata or {}).get(META_PREFIX + "address"):
                    boot.append(server)
                continue
            if status == "ACTIVE" and not task:
                if guest["state"] == "frozen":
                    self._act(sid, "thaw", self.lxd.resume, guest["name"])
                    guest["state"] = "running"
                elif guest["state"] == "stopped":
                    self._act(sid, "start", self._lxd_state, guest["name"], "start")
                    guest["state"] = "running"
            elif status in FROZEN and guest["state"] == "running":
                self._act(sid, "freeze", self.lxd.suspend, guest["name"])
                guest["state"] = "frozen"
            elif status in OFF and guest["state"] != "stopped":
                self._act(sid, "stop", self._lxd_state, guest["name"], "stop")
                guest["state"] = "stopped"
        gone += [sid for sid in self.guests if sid not in servers]
        if gone:
            self._destroy(gone)
        if boot:
            self._boot(boot)

    def _boot(self, servers):
        specs = []
        for listed in servers:
            server = self.conn.compute.get_server(listed.id)  # user_data is in the detail of one server
            doc = own_cloud_config(server.user_data, getattr(server, "launch_index", None))
            files = boot_files(doc)
            cpus, memory = guest_size(files)
            name = doc["hostname"]
            meta = server.metadata or {}
            said = meta.get(META_PREFIX + "node")
            if said not in (None, name):
                raise ProviderError(f"server {server.id}: user data is for {name}, metadata says {said}")
            specs.append((server.id, InstanceSpec(
                name=name,
                address=meta[META_PREFIX + "address"],
                image=self.image,
                cpus=cpus,
                memory_mb=memory,
                boot_files=files,
                tags={"cluster": self.guest_cluster, "node": name},
                extra={"config": {"user.nova_server": server.id}},
            )))
        self.lxd.create([spec for _, spec in specs])
        for sid, spec in specs:
            self.guests[sid] = {"name": spec.name, "state": "running", "address": spec.address}
            self._record(sid, spec.name, "boot")

    def _destroy(self, sids):
        """Freeze at once, then force-stop and delete the guests of ``sids``.

        Nova reports a server gone only after the hypervisor destroyed the
        guest, and retire deletes the node's minion key right after that: a
        guest still running then would re-authenticate and leave a pending
        key. Freezing takes a fraction of a second (the LXD delete several),
        so the guest is dead to the world almost as soon as Nova says so.
        """
        for sid in sids:
            guest = self.guests[sid]
            self._record(sid, guest["name"], "destroying")  # when the harness saw Nova delete it
            if guest["state"] == "running":
                try:
                    self.lxd.suspend(guest["name"])
                    guest["state"] = "frozen"
                except ProviderError as exc:  # stopping anyway; the delete below is what counts
                    log.info("freezing %s before its delete failed: %s", guest["name"], exc)
        self.lxd.delete([self.guests[sid]["name"] for sid in sids])
        for sid in sids:
            guest = self.guests.pop(sid)  # only once the container is gone: tests wait on this
            self._record(sid, guest["name"], "delete")

    def _act(self, sid, action, fn, *args):
        fn(*args)
        self._record(sid, self.guests[sid]["name"], action)

    def _lxd_state(self, name, action):
        """Power the container off (forcefully, like a destroyed domain) or on."""
        extra = {"force": True} if action == "stop" else {}
        self.lxd._set_state(name, action, f"{action} {name}", **extra)

    def _record(self, sid, name, action):
        log.info("guest harness: %s %s (server %s)", action, name, sid)
        self.actions.append((time.monotonic(), sid, name, action))
