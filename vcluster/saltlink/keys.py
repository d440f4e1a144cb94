"""Minion keys on the master: listed and deleted through the wheel client, generated here."""

import threading
import time

import salt.cache
import salt.crypt
import salt.utils.verify
import salt.wheel

from vcluster import retry
from vcluster.errors import VclusterError, sentence

#: Tries per wheel (key) call, the first wait between them (doubling) and the deadline, in seconds.
WHEEL_ATTEMPTS = 4
WHEEL_BACKOFF = 1.0
WHEEL_DEADLINE = 30


#: Smallest RSA key size of a generated minion key (Salt's own minimum and default).
KEY_SIZE = 2048


#: Salt's key directories (as ``key.list_all`` names them) and their states.
KEY_STATES = {
    "minions": "accepted",
    "minions_pre": "pending",
    "minions_rejected": "rejected",
    "minions_denied": "denied",
}


class WheelKeys:
    """Minion keys: listed and deleted through the wheel client, generated here.

    A new node's key pair is generated in this process (Salt's own
    :func:`salt.crypt.gen_keys`) and its public key written to the master's
    key store through Salt's ``keys`` cache with the master's
    ``keys.cache_driver`` (``localfs_key``: ``<pki_dir>/minions/<id>``, owned
    by the master's user), exactly what ``wheel.key.gen_accept`` stores. The
    private key goes only to the caller (the node's boot files): Salt's wheel
    client publishes every return on the master event bus
    (``salt/wheel/<jid>/ret``), where ``key.gen_accept`` would show it to
    every subscriber.

    A wheel call can fail for a moment while the master is busy (seen under
    load: an exception inside the client before the call even ran); each
    call is tried :data:`WHEEL_ATTEMPTS` times with a short backoff, then
    refused with one sentence. Key material is never logged.
    """

    def __init__(self, opts):
        self.opts = opts
        self.wheel = salt.wheel.WheelClient(opts)
        self._master_pub = None
        self._cache = None
        # expand generates keys in several threads (lifecycle._specs): one
        # wheel call and one cache store at a time; the generation runs free
        self._lock = threading.Lock()

    def _cmd(self, fun, arg=(), kwarg=None):
        def once():
            with self._lock:
                return self.wheel.cmd(fun, list(arg), kwarg or {}, print_event=False)

        try:
            return retry.call(once, WHEEL_ATTEMPTS, WHEEL_BACKOFF, time.monotonic() + WHEEL_DEADLINE,
                              is_transient=lambda exc: True)
        except Exception as exc:  # noqa: BLE001 - one clear error after the retries
            raise VclusterError(f"the master's key store did not complete {fun}: "
                                f"{type(exc).__name__}: {sentence(exc)}") from exc

    def gen_accept(self, name, clear=True):
        """Generate ``name``'s key pair here, accept its public key: ``{"pub", "priv"}``.

        No wheel, runner or event carries the pair; only the public key is
        stored on the master.
        """
        # A pending or rejected key left by an earlier guest of this name
        # (one that re-authenticated after its key was deleted) goes first:
        # the store below only writes the accepted key. clear=False: the
        # caller listed the keys just now and this name has none.
        if clear:
            self.delete(name)
        priv, pub = self._generate(name)
        self._store_accepted(name, pub)
        return {"pub": pub, "priv": priv}

    def _generate(self, name):
        if not isinstance(name, str) or not salt.utils.verify.valid_id(self.opts, name):
            raise VclusterError(f"{name!r} is not a valid minion id for a key")
        keysize = max(KEY_SIZE, int(self.opts.get("keysize") or KEY_SIZE))
        try:
            priv, pub = salt.crypt.gen_keys(keysize)
        except Exception as exc:  # noqa: BLE001 - one sentence, never the key
            raise VclusterError(f"could not generate a minion key for {name}: {type(exc).__name__}") from None
        return priv, pub

    def _store_accepted(self, name, pub):
        """Write ``pub`` as ``name``'s accepted key, as Salt's own key store does."""
        try:
            with self._lock:
                if self._cache is None:
                    self._cache = salt.cache.Cache(self.opts, driver=self.opts["keys.cache_driver"])
                self._cache.store("keys", name, {"pub": pub, "state": "accepted"})
        except Exception as exc:  # noqa: BLE001 - one sentence, never the key
            raise VclusterError(f"could not accept a minion key for {name} in the master's key store "
                                f"({self.opts.get('keys.cache_driver')}): {sentence(exc)}") from None

    def delete(self, name):
        self._cmd("key.delete", [name])

    def accepted(self):
        listing = self._cmd("key.list", ["accepted"]) or {}
        return set(listing.get("minions", []))

    def all(self):
        """Every minion key the master holds: ``{name: state}``.

        ``state`` is one of :data:`KEY_STATES`' values; a name found in two
        directories reports the first (accepted before pending).
        """
        listing = self._cmd("key.list_all") or {}
        found = {}
        for directory, state in KEY_STATES.items():
            for name in listing.get(directory) or []:
                found.setdefault(name, state)
        return found

    def close(self):
        self.wheel.destroy()
        # Salt's WheelClient.destroy leaves the MasterMinion its first cmd()
        # made (client/mixins.py ``mminion``), and MasterMinion.destroy
        # leaves ``{}`` where its __del__ looks for ``None``: every context
        # logged "unclosed MasterMinion" when collected, each engine tick
        # included. Its loaders are released here, then marked torn down.
        mminion = self.wheel.__dict__.pop("_mminion", None)
        if mminion is not None:
            mminion.destroy()
            mminion.returners = mminion.functions = mminion.utils = None

    def master_pub(self):
        """The master's public key, asked once per runner call (not per node)."""
        if self._master_pub is None:
            # {"local": {"<master key name>.pub": PEM}}: one entry, name varies.
            local = self._cmd("key.master_key_str")["local"]
            self._master_pub = next(iter(local.values()))
        return self._master_pub
