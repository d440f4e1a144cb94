"""OpenStack API calls of the provider: the connection, counting, retries and the errors they map to.

:class:`ApiCalls` is mixed into :class:`~vcluster.providers.openstack.provider.OpenStackProvider`;
it reads the provider's ``config``, ``_auth``, ``_conn``, ``_lock``,
``calls`` and retry settings. openstacksdk and keystoneauth are imported
when the first call is made, not with this module.
"""

import concurrent.futures
import logging
import time

from vcluster.errors import ProviderError, ProviderStateError, QuotaExceeded
from vcluster.retry import call as retry_call

log = logging.getLogger(__name__)


class _Failed(Exception):
    """An API call that failed with an HTTP status (0: no answer); only its status goes into messages."""

    def __init__(self, error, status, transient):
        super().__init__(status or type(error).__name__)
        self.error, self.status, self.transient = error, status, transient


class ApiCalls:
    """Connection and calls: every OpenStack request of the provider goes through :meth:`_call`."""

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self):
        import openstack
        import openstack.config

        options = {
            k: self.config[k]
            for k in ("region_name", "interface", "verify", "cacert", "auth_type", "identity_api_version")
            if k in self.config
        }
        try:
            if self._auth:
                return openstack.connect(auth=dict(self._auth), app_name="vcluster", **options)
            if self.config.get("clouds_yaml"):
                region = openstack.config.OpenStackConfig(config_files=[self.config["clouds_yaml"]]).get_one(
                    cloud=self.config["cloud"], **options
                )
                return openstack.connection.Connection(config=region, app_name="vcluster")
            return openstack.connect(cloud=self.config["cloud"], app_name="vcluster", **options)
        except Exception as exc:  # openstacksdk raises several kinds here
            raise ProviderError(f"cannot configure OpenStack provider {self.name}: {type(exc).__name__}") from None

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _count(self, kind):
        with self._lock:
            self.calls[kind] += 1

    def _call(self, kind, fn, *args, retry=True, **kwargs):
        """Run one API call, counted under ``kind``.

        5xx answers and connection failures are retried (``retry=False`` for
        calls that are not idempotent) with exponential backoff, at most
        ``api_retries`` times and within ``api_retry_deadline`` seconds. Other
        errors are translated into :mod:`vcluster.errors` exceptions.
        """
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as os_exc

        def once():
            self._count(kind)
            try:
                return fn(*args, **kwargs)
            except os_exc.HttpException as exc:
                status = exc.status_code or 0
                raise _Failed(exc, status, transient=status >= 500) from None
            except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.RetriableConnectionFailure) as exc:
                raise _Failed(exc, 0, transient=True) from None
            except ks_exc.Unauthorized:
                raise ProviderError(f"the cloud of provider {self.name} rejected its credentials") from None
            except ks_exc.ClientException as exc:
                raise ProviderError(f"OpenStack {kind} call failed: {type(exc).__name__}") from None
            except os_exc.SDKException as exc:  # endpoint missing, bad config... (no HTTP status)
                raise ProviderError(f"OpenStack {kind} call failed: {type(exc).__name__}: {str(exc)[:300]}") from None

        def on_retry(attempt, failed, delay):
            self._count("retry")
            log.info("OpenStack %s call failed (%s), retry %d in %.1f s", kind, failed, attempt, delay)

        try:
            return retry_call(once, self.retries + 1 if retry else 1, self.retry_backoff,
                              time.monotonic() + self.retry_deadline,
                              is_transient=lambda exc: isinstance(exc, _Failed) and exc.transient,
                              on_retry=on_retry, wait=time.sleep, quiet=True)
        except _Failed as failed:
            translated = self._translate(kind, failed.error, failed.status)
            translated.http_status = failed.status
            raise translated from None

    @staticmethod
    def _detail(exc):
        detail = getattr(exc, "details", None) or getattr(exc, "message", None) or str(exc)
        return str(detail).strip().rstrip(".")

    def _translate(self, kind, exc, status):
        detail = self._detail(exc)
        if status in (403, 413) and "quota" in detail.lower():
            return QuotaExceeded(f"OpenStack quota exceeded: {detail}")
        if status == 409:
            return ProviderStateError(f"Nova refuses to {kind.replace('_', ' ')} in the server's current state: {detail}")
        if status == 0:
            return ProviderError(f"OpenStack {kind} call failed: cannot reach the cloud ({type(exc).__name__})")
        if status >= 500:
            return ProviderError(f"OpenStack {kind} call failed with HTTP {status} after retries: {detail}")
        return ProviderError(f"OpenStack refused {kind.replace('_', ' ')} (HTTP {status}): {detail}")

    def _map(self, fn, items):
        """Run ``fn`` on every item with up to ``api_concurrency`` threads; re-raise the first error."""
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(item) for item in items]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))
