"""Runner and state arguments, coerced and checked before anything is touched.

``salt-run vcluster.retire nodes=vnode01 wait=30 force=true`` hands every
value over as a string (or as YAML-typed scalars); these helpers accept both
and refuse anything else with one sentence naming the argument and the value.
"""

import hostlist

from vcluster.errors import PolicyError

TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off", "none", "")


def flag(value, what):
    """``True``/``False`` from a bool or a yes/no word."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise PolicyError(f"{what} must be true or false, got {value!r}")


def positive_int(value, what):
    """A whole number >= 1 (``"3"`` yes, ``"3.5"``, ``"0"`` and ``True`` no)."""
    return _whole(value, what, 1, "a positive integer")


def whole_seconds(value, what):
    """A whole number of seconds >= 0."""
    return _whole(value, what, 0, "a whole number of seconds")


def _whole(value, what, minimum, kind):
    number = None
    if not isinstance(value, bool):
        try:
            number = int(str(value).strip())
        except (TypeError, ValueError):
            pass
    if number is None or number < minimum or str(number) != str(value).strip().lstrip("+"):
        raise PolicyError(f"{what} must be {kind}, got {value!r}")
    return number


def seconds(value, what):
    """A finite number of seconds >= 0, fractions allowed."""
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        raise PolicyError(f"{what} must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not number >= 0 or number == float("inf"):
        raise PolicyError(f"{what} must be a number of seconds, got {value!r}")
    return number


def node_names(spec, what="nodes"):
    """Expand a Slurm hostlist argument (string or list) into node names."""
    if isinstance(spec, (list, tuple)):
        spec = ",".join(str(s) for s in spec)
    if not isinstance(spec, str) or not spec.strip():
        raise PolicyError(f"{what} must be a Slurm hostlist such as vnode[001-004], got {spec!r}")
    try:
        names = hostlist.expand_hostlist(spec.strip())
    except hostlist.BadHostlist:
        raise PolicyError(f"{what} must be a Slurm hostlist such as vnode[001-004], got {spec!r}") from None
    if not names:
        raise PolicyError(f"{what} must name at least one node, got {spec!r}")
    return names
