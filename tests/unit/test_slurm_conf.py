"""vcluster.slurm.conf: node/nodeset/partition lines, the slurmd -Z --conf string, validation."""

import pytest

from vcluster.errors import SlurmError
from vcluster.slurm import conf


def spec(**kw):
    base = {"cpus": 2, "memory": 1000, "features": ["virtual", "htc"]}
    base.update(kw)
    return conf.NodeSpec(**base)


def test_dynamic_conf():
    assert conf.dynamic_conf(spec()) == "CPUs=2 RealMemory=1000 Feature=virtual,htc"


def test_dynamic_conf_with_gres_and_weight():
    s = spec(features="gpu", gres="gpu:a100:1", weight=10)
    assert conf.dynamic_conf(s) == "CPUs=2 RealMemory=1000 Feature=gpu Gres=gpu:a100:1 Weight=10"


def test_dynamic_conf_without_features():
    assert conf.dynamic_conf(spec(features=[])) == "CPUs=2 RealMemory=1000"


def test_features_deduplicated_and_split():
    assert spec(features="a, b,a").features == ["a", "b"]


def test_numbers_from_strings():
    assert spec(cpus="4").cpus == 4


@pytest.mark.parametrize("field, value, message", [
    ("cpus", 0, "cpus must be a positive integer, got 0"),
    ("cpus", "two", "cpus must be a positive integer, got 'two'"),
    ("cpus", True, "cpus must be a positive integer, got True"),
    ("memory", -1, r"memory \(MiB\) must be a positive integer, got -1"),
    ("features", ["ok", "bad feature"], "node feature 'bad feature' is invalid"),
    ("features", ["a,b=c"], "node feature 'a,b=c' is invalid"),
    ("gres", "gpu 2", "gres 'gpu 2' is invalid"),
])
def test_spec_validation_names_the_value(field, value, message):
    with pytest.raises(SlurmError, match=message):
        spec(**{field: value})


def test_from_dict():
    s = conf.NodeSpec.from_dict({"cpus": 1, "memory": 512, "features": "virtual"})
    assert (s.cpus, s.memory, s.features) == (1, 512, ["virtual"])


@pytest.mark.parametrize("data, message", [
    ({"cpus": 1}, "node resources need 'memory'"),
    ({"cpus": 1, "memory": 1, "disk": 3}, "unknown node resource 'disk'"),
])
def test_from_dict_errors(data, message):
    with pytest.raises(SlurmError, match=message):
        conf.NodeSpec.from_dict(data)


@pytest.mark.parametrize("name", ["vn[1-2]", "1node", "vn 1", "vn=1", "", "a" * 64, None, "vn.example"])
def test_bad_node_names(name):
    with pytest.raises(SlurmError, match="node name .* is invalid"):
        conf.create_args(name, spec())


@pytest.mark.parametrize("name", ["vn1", "vnode-001", "gpu_a", "a" * 63])
def test_good_node_names(name):
    assert conf.validate_name(name) == name


def test_bad_address():
    with pytest.raises(SlurmError, match="node address '10.0.0.1 x' is invalid"):
        conf.create_args("vn1", spec(), addr="10.0.0.1 x")


def test_create_args_default_future():
    assert conf.create_args("vn7", spec(features=["pre"]), addr="10.1.0.7") == [
        "NodeName=vn7", "NodeAddr=10.1.0.7", "CPUs=2", "RealMemory=1000", "Feature=pre", "State=FUTURE"]


def test_create_args_from_conf_string():
    assert conf.create_args("vn7", conf="CPUs=1 RealMemory=400 State=CLOUD") == [
        "NodeName=vn7", "CPUs=1", "RealMemory=400", "State=CLOUD"]


@pytest.mark.parametrize("text, message", [
    ("CPUs=1 State=IDLE", "state of a created node 'IDLE' is invalid: use one of FUTURE, CLOUD"),
    ("CPUs", "node conf item 'CPUs' is not Key=Value"),
    ("NodeName=x", "must not name the node"),
])
def test_create_args_rejects(text, message):
    with pytest.raises(SlurmError, match=message):
        conf.create_args("vn7", conf=text)
