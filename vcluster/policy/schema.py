"""The declarative schema of the ``vcluster:`` pillar.

A :class:`Section` is an ordered set of :class:`Key` objects: name, checker,
default, type and one line of meaning. The same objects drive validation
(:func:`vcluster.policy.load` reads every section through
:func:`Section.parse`), the frozen dataclasses of the flat sections
(:meth:`Section.dataclass`) and the generated reference in docs/policy.md
(``python -m vcluster.policy --reference``). Each driver's options are one
:class:`DriverOptions` object in its provider's options module
(``vcluster/providers/<driver>_options.py``), which
:mod:`vcluster.policy.provider_options` loads.
"""

import collections.abc
import copy
import dataclasses
import difflib
import functools
import typing

from vcluster.errors import PolicyError
from vcluster.policy import checks as c


class _Required:
    def __repr__(self):
        return "REQUIRED"


#: Default of a key that must be set.
REQUIRED = _Required()


@dataclasses.dataclass(frozen=True)
class Key:
    """One pillar key.

    ``check(value, path)`` normalises a value that is set (``None``: the
    section's parser handles the value); ``default`` applies when the key is
    missing or null. ``kind`` and ``shown_default`` override what the
    reference shows when the checker's ``kind`` or the literal default would
    not say it (a default computed from other keys, or applied by a driver).
    ``section`` is a nested section; with ``named`` the key holds a mapping of
    names to such sections.
    """

    name: str
    check: typing.Callable | None
    default: typing.Any = None
    meaning: str = ""
    kind: str | None = None
    shown_default: str | None = None
    section: "Section | None" = None
    named: bool = False

    @property
    def type_text(self):
        if self.kind:
            return self.kind
        if self.check is not None and getattr(self.check, "kind", None):
            return self.check.kind
        return "mapping" if self.section is not None else "any"


class Section(collections.abc.Mapping):
    """An ordered mapping key name -> :class:`Key`, with the path and doc of the section."""

    def __init__(self, path, doc, *keys):
        self.path = path  # as the reference shows it, e.g. "vcluster:pools:<name>"
        self.doc = doc
        self._keys = {}
        for key in keys:
            if key.name in self._keys:
                raise ValueError(f"{path}: key {key.name} declared twice")
            self._keys[key.name] = key

    def __getitem__(self, name):
        return self._keys[name]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def __repr__(self):
        return f"Section({self.path!r}, {list(self._keys)})"

    def parse(self, data, path):
        """Check ``data`` against the keys; return {key: checked value or default}."""
        return parse(data, path, self)

    def dataclass(self, cls_name, doc, lead=(), namespace=None, kw_only=False):
        """A frozen dataclass with ``lead`` fields, then one field per key (its default)."""
        fields = [(n, typing.Any) for n in lead]
        for key in self.values():
            if key.default is REQUIRED:
                fields.append((key.name, typing.Any))
            elif key.default.__class__.__hash__ is None:
                factory = functools.partial(copy.copy, key.default)
                fields.append((key.name, typing.Any, dataclasses.field(default_factory=factory)))
            else:
                fields.append((key.name, typing.Any, dataclasses.field(default=key.default)))
        body = dict(namespace or {}, __doc__=doc, __module__="vcluster.policy")
        return dataclasses.make_dataclass(cls_name, fields, namespace=body, frozen=True, kw_only=kw_only)


@dataclasses.dataclass(frozen=True)
class DriverOptions:
    """What ``vcluster:providers:<name>`` and ``profiles:<name>:extra`` accept for one driver.

    ``options`` are the keys of ``vcluster:providers:<name>`` besides
    ``driver``; ``extra`` the keys a profile's ``extra`` mapping may hold
    (passed to the provider as ``InstanceSpec.extra``, values unchecked
    here). A default of ``None`` leaves the value to the driver;
    ``shown_default`` says what the driver then uses. ``doc`` heads the
    driver's table in the reference. ``profile_requires`` are keys of
    ``vcluster:profiles:<name>`` a profile of this driver must set;
    ``label`` names the driver in that error.
    """

    driver: str
    doc: str
    options: Section
    extra: Section
    profile_requires: tuple = ()
    label: str = ""


def parse(data, path, spec):
    """Check the mapping ``data`` against ``spec`` (key name -> :class:`Key`)."""
    if data is None:
        data = {}
    if not isinstance(data, collections.abc.Mapping):
        raise c.fail(path, "must be a mapping", data)
    for key in data:
        if key not in spec:
            raise unknown(path, key, spec)
    out = {}
    for name, key in spec.items():
        value = data.get(name)
        if value is None:
            if key.default is REQUIRED:
                raise PolicyError(f"{c.join(path, name)} is required, got nothing")
            out[name] = key.default
        else:
            out[name] = key.check(value, c.join(path, name)) if key.check else value
    return out


def unknown(path, key, spec):
    """The error for a key ``spec`` does not accept, with the closest accepted one."""
    accepted = sorted(spec)
    hint = difflib.get_close_matches(str(key), accepted, n=1)
    hint = f" (did you mean {hint[0]!r}?)" if hint else ""
    return PolicyError(
        "{} is not a known key{}, accepted keys are {}".format(c.join(path, key), hint, ", ".join(accepted))
    )
