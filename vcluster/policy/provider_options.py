"""Provider option tables, loaded from the providers.

Each driver owns its table: one :class:`~vcluster.policy.schema.DriverOptions`
named ``OPTIONS`` in the option module that :data:`vcluster.providers.DRIVERS`
names (``vcluster/providers/<driver>_options.py``). Those modules import the
policy schema, so they are loaded on first use, not when
:mod:`vcluster.policy` is imported; they import no client library.
"""

import functools

from vcluster import providers


@functools.cache
def driver_options():
    """driver name -> its :class:`~vcluster.policy.schema.DriverOptions`, in :data:`DRIVERS` order."""
    return {driver: providers.option_table(driver) for driver in providers.DRIVERS}


def provider_keys(driver):
    """The keys of ``vcluster:providers:<name>`` besides ``driver`` for ``driver``."""
    return driver_options()[driver].options


def extra_keys(driver):
    """The keys a profile's ``extra`` mapping may hold under ``driver``."""
    return driver_options()[driver].extra
