"""Read-only mappings the frozen policy objects hold, and which keys are secrets."""

import collections.abc

#: Provider keys whose values are credentials: kept out of repr/str/as_dict.
SECRET_KEYS = frozenset({"password", "token", "key", "secret", "auth", "session", "trust_password"})
_SECRET_SUFFIXES = ("_password", "_token", "_secret", "_key")


def is_secret(key):
    """True for provider keys holding credentials."""
    return key in SECRET_KEYS or key.endswith(_SECRET_SUFFIXES)


class FrozenMap(collections.abc.Mapping):
    """A read-only dict (frozen dataclasses hold these instead of dicts)."""

    def __init__(self, data=()):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return repr(self._data)


class Settings(FrozenMap):
    """Provider settings: values of secret keys never appear in repr or str."""

    def redacted(self):
        """A plain dict with every secret value replaced by ``<hidden>``."""
        return {k: "<hidden>" if is_secret(k) else v for k, v in self._data.items()}

    def __repr__(self):
        return repr(self.redacted())

    __str__ = __repr__
