"""Exceptions raised by the vcluster library.

Every message is one sentence that names the offending key or value, because
it ends up verbatim in the return of a runner or state.
"""


def sentence(exc):
    """The first line of an exception's message (its type name if it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class VclusterError(Exception):
    """Base class of every error the library raises on purpose."""


class PolicyError(VclusterError):
    """The pillar policy or a request does not validate."""


class RegistryError(VclusterError):
    """The registry refused an operation (unknown node, bad transition...)."""


class PoolExhausted(RegistryError):
    """Not enough free names or addresses in a pool."""


class InvalidTransition(RegistryError):
    """A node lifecycle transition that the state machine does not allow."""


class ProviderError(VclusterError):
    """A provider (LXD, OpenStack, OpenNebula) call failed."""


class ProviderStateError(ProviderError):
    """The provider refuses an action in the instance's current state."""


class QuotaExceeded(ProviderError):
    """The provider refused to create instances over quota."""


class ProviderTimeout(ProviderError):
    """An instance did not reach the wanted status before the deadline."""


class SlurmError(VclusterError):
    """A Slurm command failed or returned output that could not be parsed."""
