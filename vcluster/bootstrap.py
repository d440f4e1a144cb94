"""Files a new virtual node needs before its first boot.

The node's minion must come up already knowing its master, its id and its
pre-accepted key pair, and it must trust only our master's public key. Its
grains say what it is (a virtual compute node of a given profile), so the
same top.sls and states that configure bare metal configure it too.

Providers deliver these files their own way: LXD pushes them before the first
start, OpenStack writes them with cloud-init, OpenNebula with its context.
"""

import base64

import yaml

from vcluster.providers.base import BootFile

MINION_CONF = "/etc/salt/minion.d/vcluster.conf"
GRAINS = "/etc/salt/grains"
PKI_DIR = "/etc/salt/pki/minion"


def grains_for(node, profile, membership):
    """Grains that identify a virtual node to the state tree."""
    return {
        "roles": ["slurm-compute", "vcluster-virtual"],
        "vcluster": {
            "node": node,
            "profile": profile.name,
            "cpus": profile.cpus,
            "memory": profile.memory,
            "features": list(profile.features),
            "partition": profile.partition,
            "membership": membership,
        },
    }


def minion_config(node, master, master_port=4506, publish_port=4505, sync_modules=False, salt_mine=False):
    """The minion.d drop-in of a virtual node.

    ``sync_modules`` (the profile's) is Salt's ``autoload_dynamic_modules``:
    when true, every highstate first syncs each ``_<type>`` directory of
    file_roots (about 20 master round trips, 1.5 s on a node's first one).
    vcluster's node states use only Salt's own modules, so it is off unless a
    site's states need its custom ones there.

    ``salt_mine`` (the profile's) is Salt's ``mine_enabled``: when true, the
    minion runs a ``mine.update`` job right at its start, alongside the
    join's highstate, and every ``mine_interval`` after. vcluster's states
    read no mine data, so it is off unless a site's states use the mine.

    ``recon_max`` 2000 ms: a publish connection that dropped (a resumed
    VM's, reset by its provider) is reopened 1-3 s later instead of Salt's
    1-11 s (``recon_default`` plus a random share of ``recon_max``), the
    time a resumed node's minion takes to hear publishes again. Still
    randomised, so a master restart is met by a 2 s spread of reconnects.
    """
    return {
        "id": node,
        "master": master,
        "master_port": int(master_port),
        "publish_port": int(publish_port),
        "acceptance_wait_time": 2,
        "random_reauth_delay": 0,
        "recon_default": 1000,
        "recon_max": 2000,
        "recon_randomize": True,
        "startup_states": "",
        "autoload_dynamic_modules": bool(sync_modules),
        "mine_enabled": bool(salt_mine),
        "log_level_logfile": "info",
    }


def boot_files(node, profile, membership, master, key_pair, master_pub,
               master_port=4506, publish_port=4505):
    """Return the :class:`BootFile` list for ``node``.

    ``key_pair`` is ``{"pub": ..., "priv": ...}`` as generated and
    pre-accepted on the master; ``master_pub`` is the master's public key,
    cached as ``minion_master.pub`` so the minion refuses any other master
    instead of trusting the first one that answers.
    """
    dump = lambda data: yaml.safe_dump(data, default_flow_style=False, sort_keys=True)  # noqa: E731
    return [
        BootFile(MINION_CONF, dump(minion_config(node, master, master_port, publish_port,
                                                 sync_modules=profile.sync_modules,
                                                 salt_mine=profile.salt_mine)), 0o644),
        BootFile(GRAINS, dump(grains_for(node, profile, membership)), 0o644),
        BootFile(f"{PKI_DIR}/minion.pem", key_pair["priv"], 0o400),
        BootFile(f"{PKI_DIR}/minion.pub", key_pair["pub"], 0o644),
        BootFile(f"{PKI_DIR}/minion_master.pub", master_pub, 0o644),
    ]


def cloud_config(files, hostname=None, launch_index=None, runcmd=(), start_command=None):
    """Boot files as cloud-init user-data (``#cloud-config``): the one writer every provider uses.

    ``files`` are written base64-encoded with their modes (keys, configs);
    ``hostname`` sets the guest's name; ``launch_index`` marks the part of a
    multi-part archive meant for that instance of a Nova multi-create;
    ``runcmd`` entries (argv lists, or shell lines as cloud-init takes
    them) run first, then ``start_command`` (a shell line, e.g. the
    minion's start) as ``sh -c``.
    """
    doc = {}
    if launch_index is not None:
        doc["launch-index"] = launch_index
    if hostname is not None:
        doc["hostname"] = hostname
        doc["preserve_hostname"] = False
    doc["write_files"] = [
        {
            "path": f.path,
            "encoding": "b64",
            "content": base64.b64encode(f.content.encode("utf-8")).decode("ascii"),
            "permissions": f"0{int(f.mode):o}",
            "owner": "root:root",
        }
        for f in files
    ]
    commands = [list(cmd) if isinstance(cmd, (list, tuple)) else cmd for cmd in runcmd]
    if start_command:
        commands.append(["sh", "-c", start_command])
    if commands:
        doc["runcmd"] = commands
    return "#cloud-config\n" + yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
