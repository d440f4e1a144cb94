"""Events and repairs arriving at once: compare-and-set transitions decide, nothing happens twice.

Each thread has its own registry connection to one file (as separate runner
processes do); the provider, keys and Slurm are shared in-memory views that
count what is done to them.
"""

import threading
import types

from tests.unit.test_reconcile import PILLAR, Bus, MemoryKeys, MemoryProvider, MemorySlurm
from vcluster import expand as vexpand
from vcluster import lifecycle, reconcile
from vcluster.context import Context
from vcluster.errors import RegistryError
from vcluster.policy import load
from vcluster.registry import Registry


class CountingSalt:
    def __init__(self, barrier=None):
        self.runs = []
        self.barrier = barrier

    def highstate(self, minion, timeout):
        self.runs.append(minion)
        return True, "1 minion(s) succeeded"

    def apply(self, target, sls, timeout, tgt_type="glob"):
        return True, "ok"


class ReadySlurm(MemorySlurm):
    def wait_node_state(self, name, states, timeout):
        self.add(name)
        return ["IDLE"]

    def watch_node_state(self, name, states, timeout, interval=0.5):
        return types.SimpleNamespace(result=lambda: self.wait_node_state(name, states, timeout),
                                     cancel=lambda: None)


def maker(tmp_path, shared):
    """A function making a context with its own registry connection (call it in the thread that uses it)."""
    def make():
        c = Context(policy=load(PILLAR), registry=Registry(tmp_path / "r.sqlite"), keys=shared["keys"],
                    slurm=shared["slurm"], salt=shared["salt"], events=Bus())
        c._providers["lxd"] = shared["prov"]
        return c
    return make


def shared_views():
    return {"keys": MemoryKeys(), "slurm": ReadySlurm(), "salt": CountingSalt(), "prov": MemoryProvider()}


def run_together(make, funcs, tolerate=()):
    """Run each ``func(ctx)`` in its own thread, all released at once."""
    barrier = threading.Barrier(len(funcs))
    results = [None] * len(funcs)
    errors = []

    def go(i, f):
        ctx = make()
        try:
            barrier.wait()
            results[i] = f(ctx)
        except tolerate as exc:
            results[i] = exc
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            ctx.registry.close()

    threads = [threading.Thread(target=go, args=(i, f)) for i, f in enumerate(funcs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_duplicate_minion_start_events_join_once(tmp_path):
    views = shared_views()
    make = maker(tmp_path, views)
    ctx = make()
    ret = vexpand.expand(ctx, "htc", 1, wait=False)
    (name,) = ret["nodes"]
    results = run_together(make, [lambda c: vexpand.join(c, name)] * 6)
    assert views["salt"].runs == [name]  # one highstate
    assert sum(1 for r in results if not r.get("ignored")) == 1
    assert ctx.registry.get(name).state == "ready"


def test_reconciles_racing_a_failing_join_release_once(tmp_path):
    views = shared_views()
    make = maker(tmp_path, views)
    ctx = make()
    ret = vexpand.expand(ctx, "htc", 2, wait=False)
    names = sorted(ret["nodes"])
    # the join handler gives up on the nodes while three reconciles (grace=0) undo them
    calls = [lambda c, n=n: lifecycle.fail(c, n, "gave up") for n in names]
    calls += [lambda c: reconcile.reconcile(c, apply=True, grace=0)] * 3
    results = run_together(make, calls, tolerate=(RegistryError,))
    for r in results[len(names):]:
        assert not [x for x in r.get("repairs", []) if "error" in x], r
    for n in names:
        released = ctx.registry._db.execute(
            "SELECT COUNT(*) FROM audit WHERE node = ? AND to_state = 'released'", (n,)).fetchone()
        assert released[0] == 1, n
    assert views["prov"].instances == {} and views["keys"].keys == set()
    assert ctx.registry.nodes() == []


def test_fail_node_reported_twice_at_once_does_not_raise(tmp_path):
    views = shared_views()
    make = maker(tmp_path, views)
    ctx = make()
    (name,) = vexpand.expand(ctx, "htc", 1, wait=False)["nodes"]
    for _ in range(20):  # the window is small: try a few times
        run_together(make, [lambda c, name=name: lifecycle.fail(c, name, "gave up")] * 4)
        (name,) = vexpand.expand(ctx, "htc", 1, wait=False)["nodes"]


def test_concurrent_expands_never_share_a_name_or_address(tmp_path):
    views = shared_views()
    make = maker(tmp_path, views)
    results = run_together(make, [lambda c: vexpand.expand(c, "htc", 2, wait=False)] * 4)
    names = [n for r in results for n in r["nodes"]]
    addrs = [v["address"] for r in results for v in r["nodes"].values()]
    assert len(names) == len(set(names)) == 8
    assert len(set(addrs)) == 8
