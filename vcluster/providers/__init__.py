"""Provider back-ends, chosen by the ``driver`` of a provider in policy.

:data:`DRIVERS` is the one list of drivers: for each, the provider class
and the module holding its option table (an ``OPTIONS``
:class:`~vcluster.policy.schema.DriverOptions`: the keys of
``vcluster:providers:<name>`` and of a profile's ``extra``, their checks,
defaults and reference text). Option modules import nothing but the
policy schema, so validating a policy never loads a cloud SDK; the
provider class is imported only by :func:`get`.
"""

import dataclasses
import importlib

from vcluster.errors import PolicyError


@dataclasses.dataclass(frozen=True)
class Driver:
    """Where one driver's code lives: ``provider`` as ``module:Class``, ``options`` a module."""

    provider: str
    options: str


#: driver name -> its modules, in the order error messages and the reference list the drivers.
DRIVERS = {
    "lxd": Driver("vcluster.providers.lxd:LxdProvider", "vcluster.providers.lxd_options"),
    "openstack": Driver("vcluster.providers.openstack:OpenStackProvider", "vcluster.providers.openstack_options"),
    "opennebula": Driver("vcluster.providers.opennebula:OpenNebulaProvider",
                         "vcluster.providers.opennebula_options"),
    "libvirt": Driver("vcluster.providers.libvirt:LibvirtProvider", "vcluster.providers.libvirt_options"),
}


def option_table(driver):
    """The :class:`~vcluster.policy.schema.DriverOptions` of ``driver`` (imports only its option module)."""
    table = importlib.import_module(DRIVERS[driver].options).OPTIONS
    if table.driver != driver:
        raise ValueError(f"{DRIVERS[driver].options}.OPTIONS is for driver {table.driver!r}, not {driver!r}")
    return table


def get(name, driver, options):
    """Instantiate provider ``name`` of kind ``driver`` with its ``options``."""
    try:
        target = DRIVERS[driver].provider
    except KeyError:
        raise PolicyError(
            f"vcluster:providers:{name}:driver must be one of {', '.join(sorted(DRIVERS))}, got {driver!r}"
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(name, options)
