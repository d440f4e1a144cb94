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

Requests LXD could not take are tried again through
:func:`vcluster.retry.api_call` (the defaults OpenStack's ``api_retry_*``
have): a refused, missing or reset socket and LXD's 503 while it starts or
shuts down; a request that changes something only when it never left or was
answered 503. Not found, already exists and failed operations are answers.

Modules: :mod:`.provider` (the class), :mod:`.api` (client, requests,
retries, error mapping, the urllib3 log filter), :mod:`.create` (container
creation and rollback), :mod:`.data` (status words, tags, addresses,
limits read from LXD's answers). The driver's options are in
:mod:`vcluster.providers.lxd_options`.
"""

from vcluster.providers.lxd.create import REQUEST_KEY
from vcluster.providers.lxd.data import STATUS_MAP, TAG_PREFIX
from vcluster.providers.lxd.provider import SUSPEND_MODES, LxdProvider

__all__ = ["REQUEST_KEY", "STATUS_MAP", "SUSPEND_MODES", "TAG_PREFIX", "LxdProvider"]
