"""The ext_pillar's ``vcluster_self``: what a virtual node's states read about itself.

Real registry (SQLite in a temporary directory) and the real
:func:`vcluster.lifecycle.allocate`; the ext_pillar module is loaded from
``_pillar/vcluster.py`` as Salt's loader would find it (Salt's loader
itself is exercised by the functional and integration tests).
"""

import importlib.util
import pathlib

import pytest

from tests.unit.test_reconcile import ctx  # noqa: F401 - the fixture
from vcluster import lifecycle

PILLAR_MODULE = pathlib.Path(__file__).resolve().parents[2] / "_pillar" / "vcluster.py"


@pytest.fixture
def ext_pillar():
    spec = importlib.util.spec_from_file_location("vcluster_ext_pillar", PILLAR_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ext_pillar


def test_a_node_gets_its_instance_id_and_type_for_slurmd(ctx, ext_pillar):  # noqa: F811
    prof = ctx.policy.profiles["htc"]
    (node,) = lifecycle.allocate(ctx, prof, "req1", count=1)
    path = str(ctx.registry.path)
    # before the provider answered: no instance id yet, the type already known
    mine = ext_pillar(node.name, {}, registry=path)["vcluster_self"]
    assert "instance_id" not in mine
    assert mine["instance_type"] == f"{prof.cpus}cpu-{prof.memory}mb"
    ctx.registry.update(node.name, instance_id="vcluster-abc.1")
    mine = ext_pillar(node.name, {}, registry=path)["vcluster_self"]
    assert mine["instance_id"] == "vcluster-abc.1"
    assert mine["name"] == node.name and mine["profile"] == "htc"
    # another minion sees no vcluster_self
    assert "vcluster_self" not in ext_pillar("someone-else", {}, registry=path)
