"""Slurm hostlist expressions (``vn[001-004,010]``), via the python-hostlist library."""

import hostlist as _hostlist

from vcluster.errors import SlurmError


def expand(expr):
    """Names in a hostlist expression, in order, without duplicates.

    ``expr`` may also be a list of expressions or names; ``None`` and ``""``
    give ``[]``. Raises SlurmError on a malformed expression.
    """
    if not expr:
        return []
    if not isinstance(expr, str):
        expr = ",".join(str(e) for e in expr)
    try:
        return _hostlist.expand_hostlist(expr)
    except _hostlist.BadHostlist as exc:
        raise SlurmError(f"bad hostlist {expr!r}: {exc}") from exc


def collect(names):
    """The shortest hostlist expression of ``names`` (``['vn1', 'vn2']`` -> ``vn[1-2]``)."""
    if isinstance(names, str):
        names = expand(names)
    try:
        return _hostlist.collect_hostlist(list(names))
    except _hostlist.BadHostlist as exc:
        raise SlurmError(f"cannot collect hostnames {list(names)!r}: {exc}") from exc


def sort(names):
    """``names`` sorted the way people count (``vn2`` before ``vn10``)."""
    return _hostlist.numerically_sorted(list(names))
