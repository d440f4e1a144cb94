"""vcluster.registry: allocation, lifecycle, audit, job map, concurrency."""

import collections
import multiprocessing
import sqlite3

import pytest

from vcluster.errors import InvalidTransition, PoolExhausted, RegistryError
from vcluster.policy import Pool
from vcluster.registry import ACTIVE_STATES, SCHEMA_VERSION, TRANSITIONS, Registry

POOL = Pool(
    name="p",
    names=("n1", "n2", "n3", "n4"),
    addresses=("10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13"),
)


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "state" / "registry.sqlite") as registry:
        yield registry


def walk(reg, name, *states):
    """Move ``name`` through ``states`` in order; return the last node."""
    node = reg.get(name)
    for state in states:
        node = reg.transition(name, state)
    return node


def test_file_settings(tmp_path):
    path = tmp_path / "r.sqlite"
    Registry(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    Registry(path).close()  # reopening does not migrate again


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    Registry(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RegistryError, match="newer than this vcluster"):
        Registry(path)


def test_allocate_lowest_names_and_addresses(reg):
    nodes = reg.allocate(POOL, "htc", "lxd", 2, "req-1", membership="dynamic")
    assert [(n.name, n.address, n.state) for n in nodes] == [
        ("n1", "10.0.0.10", "allocated"),
        ("n2", "10.0.0.11", "allocated"),
    ]
    node = reg.get("n1")
    assert node == nodes[0]
    assert (node.pool, node.profile, node.provider, node.request_id, node.membership) == (
        "p", "htc", "lxd", "req-1", "dynamic"
    )
    assert reg.audit("n1")[0]["from_state"] is None and reg.audit("n1")[0]["to_state"] == "allocated"
    assert [n.name for n in reg.allocate(POOL, "htc", "lxd", 1, "req-2")] == ["n3"]
    assert reg.counts() == {"htc": 3}


def test_full_lifecycle_and_audit(reg):
    (node,) = reg.allocate(POOL, "htc", "lxd", 1, "r")
    node = reg.transition("n1", "booting", instance_id="i-1", host="hv1", actor="test")
    assert (node.state, node.instance_id, node.host) == ("booting", "i-1", "hv1")
    walk(reg, "n1", "joining", "ready", "draining")
    reg.transition("n1", "ready")
    reg.transition("n1", "draining", reason="retire")
    reg.transition("n1", "retiring", expect="draining")
    released = reg.transition("n1", "released", reason="retired")
    assert released.state == "released" and released.reason == "retired"
    assert reg.get("n1") is None
    assert reg.get("n1", include_released=True).state == "released"
    trail = [(a["from_state"], a["to_state"]) for a in reversed(reg.audit("n1"))]
    assert trail == [
        (None, "allocated"), ("allocated", "booting"), ("booting", "joining"), ("joining", "ready"),
        ("ready", "draining"), ("draining", "ready"), ("ready", "draining"), ("draining", "retiring"),
        ("retiring", "released"),
    ]
    assert reg.audit("n1")[-2]["actor"] == "test"
    assert reg.audit("n1")[0]["ts"].endswith("+00:00")
    assert reg.counts() == {}


def test_suspend_resume_migrate(reg):
    reg.allocate(POOL, "htc", "lxd", 1, "r")
    walk(reg, "n1", "booting", "joining", "ready", "suspending", "suspended", "migrating")
    node = reg.transition("n1", "suspended", host="hv2")
    assert node.host == "hv2"
    walk(reg, "n1", "resuming", "ready", "migrating")
    assert reg.transition("n1", "ready", host="hv3").host == "hv3"
    # undo of an interrupted suspend / resume
    walk(reg, "n1", "suspending", "ready", "suspending", "suspended", "resuming", "suspended")


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((), "ready"),
        ((), "released"),
        (("booting",), "released"),
        (("booting", "joining", "ready"), "released"),
        (("booting", "joining", "ready"), "failed"),
        (("booting", "joining", "ready"), "booting"),
        (("booting", "joining", "ready", "suspending", "suspended"), "draining"),
        (("failed",), "ready"),
        (("booting", "joining", "ready", "draining"), "suspending"),
        ((), "allocated"),
    ],
)
def test_invalid_transitions(reg, path, target):
    reg.allocate(POOL, "htc", "lxd", 1, "r")
    walk(reg, "n1", *path)
    before = reg.get("n1")
    audit = reg.audit()
    with pytest.raises(InvalidTransition) as err:
        reg.transition("n1", target)
    assert f"from {before.state} to {target}" in str(err.value)
    assert reg.get("n1") == before and reg.audit() == audit


def test_unknown_state_node_and_field(reg):
    reg.allocate(POOL, "htc", "lxd", 1, "r")
    with pytest.raises(InvalidTransition, match="'sleeping' is not a node state"):
        reg.transition("n1", "sleeping")
    with pytest.raises(RegistryError, match="'nope' is not an active node"):
        reg.transition("nope", "booting")
    with pytest.raises(RegistryError, match="cannot set profile"):
        reg.transition("n1", "booting", profile="mem")


def test_expect_is_compare_and_set(reg):
    reg.allocate(POOL, "htc", "lxd", 1, "r")
    with pytest.raises(InvalidTransition, match="node n1 is allocated, not joining"):
        reg.transition("n1", "ready", expect="joining")
    assert reg.transition("n1", "booting", expect=("allocated", "booting")).state == "booting"
    with pytest.raises(InvalidTransition):
        reg.transition("n1", "joining", expect="allocated")
    assert reg.get("n1").state == "booting"


def test_transitions_table():
    assert set(TRANSITIONS) == ACTIVE_STATES | {"released"}
    for targets in TRANSITIONS.values():
        assert targets <= set(TRANSITIONS)
    assert "released" not in ACTIVE_STATES and "failed" in ACTIVE_STATES


def test_fail_keeps_resources_until_release_then_reuse(reg):
    reg.allocate(POOL, "htc", "lxd", 3, "r1")
    reg.transition("n2", "booting")
    failed = reg.transition("n2", "failed", reason="did not join within 300 s")
    assert failed.state == "failed" and failed.reason == "did not join within 300 s"
    assert reg.counts() == {"htc": 3}  # a failed node still holds its name and address
    assert [n.name for n in reg.allocate(POOL, "htc", "lxd", 1, "r2")] == ["n4"]
    released = reg.transition("n2", "released", reason="cleaned up")
    assert released.reason == "cleaned up"
    (again,) = reg.allocate(POOL, "mem", "lxd", 1, "r3")
    assert (again.name, again.address, again.profile) == ("n2", "10.0.0.11", "mem")
    assert again.id != released.id
    history = reg.nodes(states="released")
    assert [(n.name, n.id, n.reason) for n in history] == [("n2", released.id, "cleaned up")]
    reasons = [a["reason"] for a in reg.audit("n2", limit=10)][:3]
    assert reasons == ["request r3", "cleaned up", "did not join within 300 s"]
    assert reg.counts() == {"htc": 3, "mem": 1}


def test_reason_cleared_when_ready(reg):
    reg.allocate(POOL, "htc", "lxd", 1, "r")
    walk(reg, "n1", "booting", "joining", "ready")
    assert reg.transition("n1", "draining", reason="maintenance").reason == "maintenance"
    assert reg.transition("n1", "ready").reason is None


def test_pool_exhaustion_allocates_nothing(reg):
    reg.allocate(POOL, "htc", "lxd", 3, "r1")
    before = (reg.nodes(), reg.audit(), reg.counts())
    with pytest.raises(PoolExhausted) as err:
        reg.allocate(POOL, "htc", "lxd", 2, "r2")
    assert str(err.value) == "pool 'p' has 1 free nodes, wanted 2"
    assert (reg.nodes(), reg.audit(), reg.counts()) == before
    assert [n.name for n in reg.allocate(POOL, "htc", "lxd", 1, "r3")] == ["n4"]
    with pytest.raises(PoolExhausted, match="has 0 free nodes, wanted 1"):
        reg.allocate(POOL, "htc", "lxd", 1, "r4")


@pytest.mark.parametrize("count", [0, -1, "2", True, None])
def test_allocate_bad_count(reg, count):
    with pytest.raises(RegistryError, match="count must be a positive integer"):
        reg.allocate(POOL, "htc", "lxd", count, "r")
    assert reg.nodes() == []


def test_pool_without_addresses(reg):
    pool = Pool(name="cloud", names=("c1", "c2", "c3"), addresses=())
    nodes = reg.allocate(pool, "burst", "nova", 3, "r")
    assert [n.address for n in nodes] == [None, None, None]
    reg.transition("c1", "booting", address="192.0.2.7")  # the cloud picked it
    assert reg.get("c1").address == "192.0.2.7"


def test_address_change_frees_and_holds(reg):
    reg.allocate(POOL, "htc", "lxd", 2, "r")
    with pytest.raises(RegistryError, match="address 10.0.0.11 is already held"):
        reg.update("n1", address="10.0.0.11")
    reg.update("n1", address="10.0.0.13", host="hv9")
    assert (reg.get("n1").address, reg.get("n1").host) == ("10.0.0.13", "hv9")
    nodes = reg.allocate(POOL, "htc", "lxd", 2, "r2")
    assert [(n.name, n.address) for n in nodes] == [("n3", "10.0.0.10"), ("n4", "10.0.0.12")]


def test_pool_redefined(reg):
    reg.allocate(POOL, "htc", "lxd", 2, "r")
    # the admin adds names in front and moves n2 to another pool
    bigger = Pool(name="p", names=("n0", "n1", "n3"), addresses=("10.0.0.9", "10.0.0.10", "10.0.0.12"))
    other = Pool(name="q", names=("n2", "n5"), addresses=("10.0.0.11", "10.0.0.15"))
    assert [(n.name, n.address) for n in reg.allocate(bigger, "htc", "lxd", 2, "r2")] == [
        ("n0", "10.0.0.9"), ("n3", "10.0.0.12"),
    ]
    assert [(n.name, n.address) for n in reg.allocate(other, "htc", "lxd", 1, "r3")] == [("n5", "10.0.0.15")]
    with pytest.raises(PoolExhausted):
        reg.allocate(bigger, "htc", "lxd", 1, "r4")
    reg.transition("n1", "failed", reason="gone")
    reg.transition("n1", "released", reason="gone")
    assert reg.allocate(bigger, "htc", "lxd", 1, "r5")[0].name == "n1"


def test_queries(reg):
    reg.allocate(POOL, "htc", "lxd", 2, "r1")
    reg.allocate(Pool(name="q", names=("m1",), addresses=("10.0.1.10",)), "mem", "lxd", 1, "r2")
    walk(reg, "n2", "booting", "joining", "ready")
    assert [n.name for n in reg.nodes()] == ["m1", "n1", "n2"]
    assert [n.name for n in reg.nodes(states="ready")] == ["n2"]
    assert [n.name for n in reg.nodes(states=["allocated"], profile="htc")] == ["n1"]
    assert [n.name for n in reg.nodes(pool="q")] == ["m1"]
    assert [n.name for n in reg.nodes(request_id="r1")] == ["n1", "n2"]
    assert reg.counts() == {"htc": 2, "mem": 1}
    assert reg.counts(by="pool") == {"p": 2, "q": 1}
    assert reg.counts(by="state") == {"allocated": 2, "ready": 1}
    assert len(reg.audit(limit=2)) == 2
    data = reg.get("n2").as_dict()
    assert data["state"] == "ready" and data["created"].endswith("+00:00") and data["id"] == reg.get("n2").id


def test_job_map(reg):
    reg.allocate(POOL, "htc", "lxd", 2, "r")
    assert reg.map_jobs("n1", [101, "102"]) == {"added": ["101", "102"], "removed": []}
    assert reg.map_jobs("n2", ["200_1"], replace=False) == {"added": ["200_1"], "removed": []}
    assert reg.jobs_on("n1") == ["101", "102"]
    assert reg.map_jobs("n1", ["102", "103"]) == {"added": ["103"], "removed": ["101"]}
    assert reg.jobs_on("n1") == ["102", "103"]
    assert reg.map_jobs("n1", ["102"]) == {"added": [], "removed": ["103"]}
    assert reg.jobs_on("n1") == ["102"]
    with pytest.raises(RegistryError, match="'n9' is not an active node"):
        reg.map_jobs("n9", ["1"])
    reg.transition("n1", "failed", reason="lost")
    reg.transition("n1", "released", reason="lost")
    assert reg.jobs_on("n1") == []
    assert reg.jobs_on("n2") == ["200_1"]


# -- concurrency ------------------------------------------------------------------

BIG = Pool(
    name="big",
    names=tuple(f"b{i:04d}" for i in range(1000)),
    addresses=tuple(f"10.1.{i // 250}.{i % 250 + 1}" for i in range(1000)),
    prefix=16,
)
PROCESSES = 8
ROUNDS = 30


def _worker(path, worker, barrier, out):
    """Allocate 1-3 nodes per round; fail and release every fourth batch."""
    reg = Registry(path)  # opened concurrently with the others: schema creation races too
    barrier.wait()
    allocated = released = 0
    for i in range(ROUNDS):
        nodes = reg.allocate(BIG, f"prof{worker % 2}", "lxd", 1 + i % 3, f"w{worker}-{i}")
        allocated += len(nodes)
        if i % 4 == 3:
            for node in nodes:
                reg.transition(node.name, "failed", reason="test")
                reg.transition(node.name, "released", reason="test")
                released += 1
    out.put((worker, allocated, released))
    reg.close()


def test_concurrent_allocations_never_collide(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, w, barrier, out)) for w in range(PROCESSES)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    allocated = sum(r[1] for r in results)
    released = sum(r[2] for r in results)
    with Registry(path) as reg:
        active = reg.nodes()
        assert len(active) == allocated - released
        assert len({n.name for n in active}) == len(active)
        assert len({n.address for n in active}) == len(active)
        assert sum(reg.counts().values()) == allocated - released
        per_profile = collections.Counter(n.profile for n in active)
        assert reg.counts() == dict(per_profile)
        assert len(reg.nodes(states="released")) == released
        assert len(reg.audit(limit=100000)) == allocated + 2 * released
        assert {n.name for n in active} <= set(BIG.names)
        assert {n.address for n in active} <= set(BIG.addresses)
        # the slot table agrees with the nodes
        db = sqlite3.connect(path)
        held = dict(db.execute("SELECT value, node_id FROM slots WHERE kind = 'name' AND node_id IS NOT NULL"))
        db.close()
        assert held == {n.name: n.id for n in active}
        # exactly the rest of the pool is free
        rest = reg.allocate(BIG, "rest", "lxd", len(BIG.names) - len(active), "rest")
        assert {n.name for n in rest} | {n.name for n in active} == set(BIG.names)
        with pytest.raises(PoolExhausted, match="has 0 free nodes"):
            reg.allocate(BIG, "rest", "lxd", 1, "more")


@pytest.mark.parametrize("held", [None, 999], ids=["held-marked-free", "free-marked-held"])
def test_slots_out_of_step_are_rebuilt(reg, held):
    reg.allocate(POOL, "htc", "lxd", 3, "r")
    reg.transition("n2", "failed", reason="x")
    reg.transition("n2", "released", reason="x")
    # someone edits the file: n1 looks free, or the free n2 looks held
    value = "n1" if held is None else "n2"
    reg._db.execute("UPDATE slots SET node_id = ? WHERE value = ?", (held, value))
    nodes = reg.allocate(POOL, "htc", "lxd", 2, "r2")
    assert [n.name for n in nodes] == ["n2", "n4"]
    assert len({n.name for n in reg.nodes()}) == 4


def test_unopenable_file(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RegistryError, match=r"^registry .*file/r.sqlite cannot be opened"):
        Registry(tmp_path / "file" / "r.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="cannot be opened"):
        Registry(tmp_path / "junk.sqlite")


def test_attrs_kept_with_the_node(reg):
    attrs = {"cpus": 2, "memory": 2048, "features": ("virtual", "mem"), "partition": "htc"}
    (node,) = reg.allocate(POOL, "mem", "lxd", 1, "r", attrs=attrs)
    assert node.attrs["features"] == ["virtual", "mem"]
    assert reg.get("n1").attrs == node.attrs and reg.get("n1").as_dict()["attrs"]["cpus"] == 2
    with pytest.raises(RegistryError, match="attrs must be JSON data"):
        reg.allocate(POOL, "mem", "lxd", 1, "r", attrs={"x": object()})
    assert len(reg.nodes()) == 1


def test_memory_registry():
    with Registry(":memory:") as reg:
        assert [n.name for n in reg.allocate(POOL, "htc", "lxd", 2, "r")] == ["n1", "n2"]


def test_transition_many_moves_all_in_one_transaction_or_none(reg):
    reg.allocate(POOL, "htc", "lxd", 3, "r")
    moved = reg.transition_many(["n1", "n2"], "booting", expect="allocated", actor="test")
    assert [(n.name, n.state) for n in moved] == [("n1", "booting"), ("n2", "booting")]
    assert reg.audit("n2")[0]["to_state"] == "booting" and reg.audit("n2")[0]["actor"] == "test"
    # n1 is booting, not allocated: nothing moves, n3 included
    with pytest.raises(InvalidTransition, match="n1 is booting"):
        reg.transition_many(["n3", "n1"], "booting", expect="allocated")
    assert reg.get("n3").state == "allocated"
    with pytest.raises(RegistryError, match="each node once"):
        reg.transition_many(["n3", "n3"], "booting")


def test_update_many_skips_released_nodes_and_names_them(reg):
    reg.allocate(POOL, "htc", "lxd", 2, "r")
    reg.transition("n2", "failed", reason="gone meanwhile")
    reg.transition("n2", "released", reason="gone meanwhile")
    gone = reg.update_many({"n1": {"instance_id": "i-1", "host": "hv1"}, "n2": {"instance_id": "i-2"}})
    assert gone == {"n2"}
    assert (reg.get("n1").instance_id, reg.get("n1").host) == ("i-1", "hv1")
    with pytest.raises(RegistryError, match="cannot set profile"):
        reg.update_many({"n1": {"profile": "mem"}})
