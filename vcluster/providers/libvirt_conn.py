"""The libvirt provider's connection: opening it, one call, and libvirt's errors as vcluster's.

A mixin of :class:`vcluster.providers.libvirt.LibvirtProvider`: it uses
the provider's ``hypervisors`` (hypervisor key -> ``{"uri", ...}``),
``default_host``, ``calls``, ``_conns`` and ``_lock``. One connection per
hypervisor, each opened on first use.
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
        """The connection to the provider's first (or only) hypervisor; see :meth:`conn_to`."""
        return self.conn_to(self.default_host)

    def conn_to(self, host):
        """The libvirt connection to hypervisor ``host`` (a key of ``hypervisors``), opened on first use.

        Opening goes through :func:`vcluster.retry.api_call` (the product's
        one retry loop): "Failed to connect socket" (libvirtd restarting, or
        not yet up) is tried again; it changes nothing on the host.
        """
        with self._lock:
            conn = self._conns.get(host)
            if conn is None:
                uri = self.hypervisors[host]["uri"]
                self.calls["connect"] += 1

                def counted_retry(*_):
                    self.calls["retry"] += 1

                try:
                    conn = retry.api_call(lambda: libvirt.open(uri), is_transient=_unreached,
                                          on_retry=counted_retry)
                except libvirt.libvirtError as exc:
                    raise ProviderError(f"cannot reach libvirt at {uri}: {exc.get_error_message()}") from exc
                self._conns[host] = conn
            return conn

    def _call(self, kind, what, fn, *args):
        """One libvirt call counted under ``kind``; libvirt errors -> vcluster errors.

        A call that finds a connection gone (a libvirtd restarted since it
        was opened) is not sent again, since it may have acted; the
        connections are dropped so that the next call opens new ones.
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
        """Close the libvirt connections."""
        self._drop_connection()

    def _drop_connection(self):
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
