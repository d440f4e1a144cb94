"""Provider back-ends, chosen by the ``driver`` of a provider in policy."""

import importlib

from vcluster.errors import PolicyError

DRIVERS = {
    "lxd": "vcluster.providers.lxd:LxdProvider",
    "openstack": "vcluster.providers.openstack:OpenStackProvider",
    "opennebula": "vcluster.providers.opennebula:OpenNebulaProvider",
    "libvirt": "vcluster.providers.libvirt:LibvirtProvider",
}


def get(name, driver, options):
    """Instantiate provider ``name`` of kind ``driver`` with its ``options``."""
    try:
        target = DRIVERS[driver]
    except KeyError:
        raise PolicyError(
            f"vcluster:providers:{name}:driver must be one of {', '.join(sorted(DRIVERS))}, got {driver!r}"
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(name, options)
