"""A create request names each instance once (providers.base.spec_names, used by LXD and libvirt)."""

import collections

import pytest

from vcluster.errors import ProviderError
from vcluster.providers.base import spec_names

Spec = collections.namedtuple("Spec", "name")


def test_names_in_request_order():
    assert spec_names([Spec("vn2"), Spec("vn1")]) == ["vn2", "vn1"]


def test_a_name_given_twice_is_refused_in_one_sentence():
    with pytest.raises(ProviderError, match=r"^duplicate instance names in one create request: vn1, vn1$"):
        spec_names([Spec("vn1"), Spec("vn1")])
