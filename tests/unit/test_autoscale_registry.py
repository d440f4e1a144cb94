"""Registry.allocate_named: the specific names Slurm's power saving resumes."""

import multiprocessing

import pytest

from vcluster.errors import PoolExhausted, RegistryError
from vcluster.policy import Pool
from vcluster.registry import Registry

POOL = Pool(
    name="p",
    names=("n1", "n2", "n3", "n4"),
    addresses=("10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13"),
)


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "registry.sqlite") as registry:
        yield registry


def test_takes_exactly_the_names_and_lowest_addresses(reg):
    nodes = reg.allocate_named(POOL, "htc", "lxd", ["n3", "n1"], "r1", membership="cloud", attrs={"cpus": 1})
    assert [(n.name, n.address, n.state) for n in nodes] == [
        ("n3", "10.0.0.10", "allocated"), ("n1", "10.0.0.11", "allocated")]
    assert nodes[0].membership == "cloud" and nodes[0].attrs == {"cpus": 1}
    # lowest-free allocation skips the named ones
    (other,) = reg.allocate(POOL, "htc", "lxd", 1, "r2")
    assert (other.name, other.address) == ("n2", "10.0.0.12")
    assert "named" in reg.audit("n3")[0]["reason"]


def test_all_or_nothing_when_one_name_is_held(reg):
    reg.allocate_named(POOL, "htc", "lxd", ["n2"], "r1")
    with pytest.raises(PoolExhausted, match="'n2'"):
        reg.allocate_named(POOL, "htc", "lxd", ["n1", "n2"], "r2")
    assert [n.name for n in reg.nodes()] == ["n2"]
    assert reg.get("n1") is None


def test_released_name_can_be_taken_again(reg):
    reg.allocate_named(POOL, "htc", "lxd", ["n4"], "r1")
    reg.transition("n4", "failed", reason="boom")
    reg.transition("n4", "released", reason="gone")
    (node,) = reg.allocate_named(POOL, "htc", "lxd", ["n4"], "r2")
    assert node.name == "n4" and node.state == "allocated"


@pytest.mark.parametrize("names, match", [
    (["x9"], "not in pool"),
    (["n1", "n1"], "repeat"),
    ([], "non-empty"),
    ("n1", "non-empty list"),
])
def test_bad_names_refused(reg, names, match):
    with pytest.raises(RegistryError, match=match):
        reg.allocate_named(POOL, "htc", "lxd", names, "r")
    assert reg.nodes() == []


def test_addresses_exhausted():
    pool = Pool(name="q", names=("a1", "a2", "a3"), addresses=("10.1.0.1", "10.1.0.2", "10.1.0.3"))
    with Registry(":memory:") as reg:
        reg.allocate(pool, "htc", "lxd", 2, "r1")
        bigger = Pool(name="q", names=pool.names + ("a4",), addresses=pool.addresses)
        with pytest.raises(PoolExhausted, match="1 free addresses, wanted 2"):
            reg.allocate_named(bigger, "htc", "lxd", ["a3", "a4"], "r2")
        assert len(reg.nodes()) == 2


def _grab(path, names, queue):
    with Registry(path) as reg:
        try:
            reg.allocate_named(POOL, "htc", "lxd", names, f"r-{names[0]}")
            queue.put(("ok", names))
        except PoolExhausted:
            queue.put(("held", names))


def test_concurrent_requests_for_the_same_name_one_wins(tmp_path):
    path = tmp_path / "r.sqlite"
    Registry(path).close()
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_grab, args=(path, names, queue))
             for names in (["n1", "n2"], ["n2", "n3"], ["n2"], ["n4"])]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    results = [queue.get(timeout=5) for _ in procs]
    winners = [names for what, names in results if what == "ok"]
    assert sum("n2" in names for names in winners) == 1
    assert ["n4"] in winners
    with Registry(path) as reg:
        held = [n.name for n in reg.nodes()]
    assert sorted(held) == sorted(n for names in winners for n in names)
