"""Value checkers of the policy schema: ``check(value, path) -> normalised value``.

Each checker raises :class:`~vcluster.errors.PolicyError` with one sentence
naming the key path and the value, and carries ``kind``: the type as the
generated reference (docs/policy.md) shows it.
"""

import collections.abc
import ipaddress
import re

import hostlist

from vcluster.errors import PolicyError

ROOT = "vcluster"

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MINION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FEATURE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

HOSTLIST_HINT = "must be a Slurm hostlist such as 'vnode[001-064]'"


# -- error helpers --------------------------------------------------------------


def show(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(path, what, value):
    return PolicyError(f"{path} {what}, got {show(value)}")


def join(path, key):
    return f"{path}:{key}"


def kind(text):
    """Decorator: the type of a checker's values, as the reference shows it."""

    def mark(check):
        check.kind = text
        return check

    return mark


# -- checkers ---------------------------------------------------------------------


@kind("positive int")
def positive_int(value, path):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail(path, "must be a positive integer", value)
    return value


@kind("int")
def integer(value, path):
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, "must be an integer", value)
    return value


@kind("bool")
def boolean(value, path):
    if not isinstance(value, bool):
        raise fail(path, "must be true or false", value)
    return value


@kind("positive number")
def positive_number(value, path):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise fail(path, "must be a positive number", value)
    if value == float("inf"):
        raise fail(path, "must be a finite number", value)
    return value


@kind("number ≥ 0")
def non_negative_number(value, path):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise fail(path, "must be a number of seconds, zero or more", value)
    if value == float("inf"):
        raise fail(path, "must be a finite number", value)
    return value


@kind("int ≥ 0")
def non_negative_int(value, path):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(path, "must be a whole number, zero or more", value)
    return value


@kind("string")
def string(value, path):
    if not isinstance(value, str) or not value.strip():
        raise fail(path, "must be a non-empty string", value)
    return value


@kind("bool or CA file path")
def bool_or_string(value, path):
    if isinstance(value, bool):
        return value
    return string(value, path)


@kind("name (`[A-Za-z0-9][A-Za-z0-9_-]*`, ≤ 63)")
def slug(value, path):
    if not isinstance(value, str) or not SLUG.match(value):
        raise fail(path, "must be a name of letters, digits, '-' or '_' (at most 63 characters)", value)
    return value


@kind("name (`[A-Za-z0-9][A-Za-z0-9_.-]*`, ≤ 63)")
def name(value, path):
    if not isinstance(value, str) or not NAME.match(value):
        raise fail(path, "must be a name of letters, digits, '.', '-' or '_' (at most 63 characters)", value)
    return value


@kind("word (`[A-Za-z0-9][A-Za-z0-9_-]*`, ≤ 63)")
def flag_word(value, path):
    if not isinstance(value, str) or not SLUG.match(value):
        raise fail(path, "must be a word of letters, digits, '-' or '_'", value)
    return value


@kind("Salt minion id")
def minion_id(value, path):
    if not isinstance(value, str) or not _MINION_ID.match(value):
        raise fail(path, "must be a Salt minion id (letters, digits, '.', '-', '_')", value)
    return value


@kind("IPv4 address or DNS name")
def host_or_address(value, path):
    if isinstance(value, str):
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            pass
        labels = value.rstrip(".").split(".")
        if len(value) <= 253 and not value.replace(".", "").isdigit() and all(_DNS_LABEL.match(x) for x in labels):
            return value
    raise fail(path, "must be an IPv4 address or a DNS name", value)


@kind("IPv4 address")
def ipv4(value, path):
    if isinstance(value, str):
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            pass
    raise fail(path, "must be an IPv4 address", value)


@kind("absolute path")
def abs_path(value, path):
    if not isinstance(value, str) or not value.startswith("/"):
        raise fail(path, "must be an absolute path", value)
    return value


@kind("absolute path ending in `.prom`")
def prom_path(value, path):
    if not isinstance(value, str) or not value.startswith("/"):
        raise fail(path, "must be an absolute file path ending in .prom", value)
    base = value.rsplit("/", 1)[1]
    if not base.endswith(".prom") or base == ".prom":
        raise fail(path, "must end in .prom (node_exporter's textfile collector reads only those)", value)
    return value


def choice(options):
    """A checker accepting one of ``options``."""

    @kind(" \\| ".join(f"`{o}`" for o in options))
    def check(value, path):
        if value not in options:
            raise fail(path, "must be one of {}".format(" | ".join(options)), value)
        return value

    return check


@kind("list of strings")
def string_list(value, path):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise fail(path, "must be a list of strings", value)
    for i, item in enumerate(value):
        string(item, f"{path}[{i}]")
    return tuple(value)


@kind("mapping")
def mapping(value, path):
    if not isinstance(value, collections.abc.Mapping):
        raise fail(path, "must be a mapping", value)
    return dict(value)


@kind("list of Slurm feature words")
def features(value, path):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise fail(path, "must be a list of Slurm feature words", value)
    seen = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _FEATURE.match(item):
            raise fail(f"{path}[{i}]", "must be a Slurm feature word (letters, digits, '_', '.', '-')", item)
        if item in seen:
            raise fail(f"{path}[{i}]", "repeats a feature already listed", item)
        seen.add(item)
    return tuple(value)


@kind("Slurm partition name")
def slurm_word(value, path):
    if not isinstance(value, str) or not _FEATURE.match(value):
        raise fail(path, "must be a Slurm partition name (letters, digits, '_', '.', '-')", value)
    return value


@kind("list of Slurm partition names")
def partition_list(value, path):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise fail(path, "must be a list of Slurm partition names", value)
    return tuple(slurm_word(v, f"{path}[{i}]") for i, v in enumerate(value))


@kind("int 1–32")
def prefix(value, path):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise fail(path, "must be an integer netmask length from 1 to 32", value)
    return value


@kind("Slurm hostlist string (or a list of them)")
def hostnames(value, path):
    """A hostlist (or list of them) -> tuple of distinct valid hostnames."""
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, (list, tuple)) or not specs:
        raise fail(path, HOSTLIST_HINT, value)
    names = []
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise fail(path, HOSTLIST_HINT, spec)
        try:
            names.extend(hostlist.expand_hostlist(spec, allow_duplicates=True))
        except hostlist.BadHostlist:
            raise fail(path, "is not a valid Slurm hostlist", spec) from None
    if not names:
        raise fail(path, "must name at least one node", value)
    seen = set()
    for host in names:
        if not _HOSTNAME.match(host) or host.isdigit():
            raise fail(
                path,
                "must expand to hostnames of lowercase letters, digits and '-' (at most 63 characters)",
                host,
            )
        if host in seen:
            raise fail(path, "lists a node name twice", host)
        seen.add(host)
    return tuple(names)


@kind("mapping Slurm node → provider host")
def hypervisors(value, path):
    if not isinstance(value, collections.abc.Mapping):
        raise fail(path, "must be a mapping of Slurm node name to provider host name", value)
    for node, host in value.items():
        name(node, path)
        string(host, f"{path}:{node}")
    return dict(value)
