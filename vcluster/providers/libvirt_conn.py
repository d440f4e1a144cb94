"""The libvirt provider's connection: opening it, one call, and libvirt's errors as vcluster's.

A mixin of :class:`vcluster.providers.libvirt.LibvirtProvider`: it uses
the provider's ``uri``, ``calls``, ``_conn`` and ``_lock``.
"""

import libvirt

from vcluster import retry
from vcluster.errors import ProviderError, ProviderStateError

# libvirt prints every error to stderr unless a handler takes it; ours are raised.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class _Missing(ProviderError):
    """Internal: the libvirt object does not exist."""


_MISSING_CODES = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_NETWORK,
                  libvirt.VIR_ERR_NO_STORAGE_POOL}
_STATE_CODES = {libvirt.VIR_ERR_OPERATION_INVALID}


def _unreached(exc):
    """True for libvirt's "Failed to connect socket": the daemon was not reached at all."""
    return (isinstance(exc, libvirt.libvirtError) and exc.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR
            and exc.get_error_domain() == libvirt.VIR_FROM_RPC)


def _connection_lost(exc):
    """True when a call failed because the connection to libvirtd is gone (not because of the call)."""
    return (exc.get_error_code() in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT)
            and exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE))


class Connection:
    """libvirt connection and calls of a provider (see the module docstring)."""

    @property
    def conn(self):
        """The libvirt connection, opened on first use.

        Opening goes through :func:`vcluster.retry.api_call` (the product's
        one retry loop): "Failed to connect socket" (libvirtd restarting, or
        not yet up) is tried again; it changes nothing on the host.
        """
        with self._lock:
            if self._conn is None:
                self.calls["connect"] += 1

                def counted_retry(*_):
                    self.calls["retry"] += 1

                try:
                    self._conn = retry.api_call(lambda: libvirt.open(self.uri), is_transient=_unreached,
                                                on_retry=counted_retry)
                except libvirt.libvirtError as exc:
                    raise ProviderError(f"cannot reach libvirt at {self.uri}: {exc.get_error_message()}") from exc
            return self._conn

    def _call(self, kind, what, fn, *args):
        """One libvirt call counted under ``kind``; libvirt errors -> vcluster errors.

        A call that finds the connection gone (libvirtd restarted since it
        was opened) is not sent again, since it may have acted; the
        connection is dropped so that the next call opens a new one.
        """
        with self._lock:
            self.calls[kind] += 1
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            code, message = exc.get_error_code(), exc.get_error_message()
            if _connection_lost(exc):
                self._drop_connection()
            if code in _MISSING_CODES:
                raise _Missing(f"{what}: {message}") from exc
            if code in _STATE_CODES:
                raise ProviderStateError(f"{what}: {message}") from exc
            raise ProviderError(f"{what}: {message}") from exc

    def close(self):
        """Close the libvirt connection."""
        self._drop_connection()

    def _drop_connection(self):
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
