"""vcluster.slurm.hostlist: expand / collect / sort over python-hostlist."""

import pytest

from vcluster.errors import SlurmError
from vcluster.slurm import hostlist


@pytest.mark.parametrize("expr, names", [
    ("vn[1-3]", ["vn1", "vn2", "vn3"]),
    ("vn[001-002],ctl", ["vn001", "vn002", "ctl"]),
    ("vn[8-9]", ["vn8", "vn9"]),
    ("vn1,vn1", ["vn1"]),
    ("", []),
    (None, []),
    (["vn[1-2]", "x"], ["vn1", "vn2", "x"]),
])
def test_expand(expr, names):
    assert hostlist.expand(expr) == names


def test_expand_bad_expression_names_it():
    with pytest.raises(SlurmError, match=r"bad hostlist 'vn\[1-'"):
        hostlist.expand("vn[1-")


@pytest.mark.parametrize("names, expr", [
    (["vn1", "vn2", "vn3", "vn5"], "vn[1-3,5]"),
    (["vn001", "vn002"], "vn[001-002]"),
    (["b", "a"], "a,b"),
    ([], ""),
    ("vn[1-2]", "vn[1-2]"),
])
def test_collect(names, expr):
    assert hostlist.collect(names) == expr


def test_roundtrip():
    names = [f"vnode{i:03d}" for i in (1, 2, 3, 10, 11, 64)]
    assert hostlist.expand(hostlist.collect(names)) == names


def test_sort_counts_like_people():
    assert hostlist.sort(["vn10", "vn2", "vn1"]) == ["vn1", "vn2", "vn10"]
