"""Periodic state in the registry's SQLite file (vcluster.taskstate), on real SQLite files.

Locks are taken by real processes (multiprocessing, fork): several at
once, one that exits or is killed while it holds the lock.
"""

import json
import multiprocessing
import os
import signal
import sqlite3
import threading

import pytest

from vcluster import autoscale, taskstate
from vcluster.errors import RegistryError
from vcluster.registry import Registry

CTX = multiprocessing.get_context("fork")


@pytest.fixture
def path(tmp_path):
    """A registry file, as the master has one: created and migrated by the registry."""
    p = tmp_path / "registry.sqlite"
    Registry(p).close()
    return str(p)


# -- values and last runs -----------------------------------------------------------------


def test_values_live_in_the_registry_file_beside_its_tables(path):
    with taskstate.TaskState(path) as store:
        assert store.values("autoscale") == {} and store.last_run("reconcile") is None
        store.put("autoscale", idle_since={"vn1": 1.5}, jobs={"7": ["vn2"]})
        store.mark_run("reconcile", 1234.5)
    with taskstate.TaskState(path) as store:
        assert store.values("autoscale") == {"idle_since": {"vn1": 1.5}, "jobs": {"7": ["vn2"]}}
        assert store.get("autoscale", "nothing", "dflt") == "dflt"
        assert store.last_run("reconcile") == 1234.5
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"nodes", "audit", "task_values", "task_locks"} <= tables
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    # the registry opens the file as before (its schema version is its own)
    with Registry(path) as reg:
        assert reg.nodes() == []
    # no side file: the registry's own (its WAL files while open, its writers' queue lock)
    assert set(os.listdir(os.path.dirname(path))) <= {"registry.sqlite", "registry.sqlite-shm",
                                                      "registry.sqlite-wal", "registry.sqlite.lock"}


def test_a_path_with_uri_characters(tmp_path):
    odd = tmp_path / "a%20b?c#d"
    odd.mkdir()
    Registry(odd / "r.sqlite").close()
    with taskstate.TaskState(odd / "r.sqlite") as store:
        store.mark_run("autoscale", 5.0)
    assert taskstate.last_run(odd / "r.sqlite", "autoscale") == 5.0


def test_a_missing_registry_file_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(RegistryError, match=r"^registry .*/nope\.sqlite cannot be opened for task state: "
                                            r"unable to open database file$"):
        taskstate.TaskState(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


def test_a_side_stamp_is_taken_over_once_and_deleted(path):
    stamp = path + ".reconcile-last"
    with open(stamp, "w", encoding="ascii") as fh:
        fh.write("1700000000.250\n")
    with taskstate.TaskState(path) as store:
        store.adopt_stamp("reconcile", stamp)
        assert store.last_run("reconcile") == 1700000000.25 and not os.path.exists(stamp)
        with open(stamp, "w", encoding="ascii") as fh:
            fh.write("5\n")
        store.adopt_stamp("reconcile", stamp)  # a run recorded here wins over an old file
        assert store.last_run("reconcile") == 1700000000.25 and not os.path.exists(stamp)


@pytest.mark.parametrize(("last", "now", "due"), [
    (None, 100.0, True), (100.0, 154.0, False), (100.0, 155.0, True), (100.0, 400.0, True)])
def test_due_keeps_half_a_tick_of_slack(last, now, due):
    ok, why = taskstate.due(last, 60, now, 10, "reconcile")
    assert ok is due
    assert why == ("due" if due else f"last reconcile {now - last:.0f} s ago, interval 60 s")


# -- autoscale's state ----------------------------------------------------------------------


def test_autoscale_state_round_trip(path):
    state = autoscale.load_state(path)
    assert state == {"last_run": None, "idle_since": {}, "jobs": {}}
    state.update(last_run=10.0, idle_since={"dn02": 3.0})
    state["jobs"]["5"] = ["dn01"]
    autoscale.save_state(path, state)
    assert autoscale.load_state(path) == {"last_run": 10.0, "idle_since": {"dn02": 3.0}, "jobs": {"5": ["dn01"]}}
    assert not os.path.exists(path + ".autoscale.json")


def test_an_old_autoscale_json_is_taken_over_once_then_deleted(path):
    legacy = autoscale.legacy_path(path)
    old = {"last_run": 99.5, "idle_since": {"dn03": 50.0}, "jobs": {"8": ["dn04", "dn05"]}}
    with open(legacy, "w", encoding="utf-8") as fh:
        json.dump(old, fh)
    assert autoscale.load_state(path) == old
    assert not os.path.exists(legacy)
    assert autoscale.load_state(path) == old  # from the registry now
    # a file that reappears (an old master still running) does not overwrite the registry's state
    with open(legacy, "w", encoding="utf-8") as fh:
        json.dump({"last_run": 1.0, "idle_since": {}, "jobs": {}}, fh)
    assert autoscale.load_state(path) == old and not os.path.exists(legacy)


def test_an_unreadable_autoscale_json_is_dropped(path):
    legacy = autoscale.legacy_path(path)
    with open(legacy, "w", encoding="utf-8") as fh:
        fh.write("{not json")
    assert autoscale.load_state(path) == {"last_run": None, "idle_since": {}, "jobs": {}}
    assert not os.path.exists(legacy)


# -- locks ------------------------------------------------------------------------------------


def _contend(path, barrier, results):
    with taskstate.lock(path, "reconcile") as held:
        barrier.wait(timeout=30)  # every process has tried before the holder lets go
        results.put((os.getpid(), held))


def test_of_processes_trying_at_once_exactly_one_gets_the_lock(path):
    n = 4
    barrier, results = CTX.Barrier(n), CTX.Queue()
    procs = [CTX.Process(target=_contend, args=(path, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(held for _, held in got) == [False] * (n - 1) + [True]
    with taskstate.lock(path, "reconcile") as held:  # given back by its holder
        assert held is True


def _hold_and_die(path, ready, how):
    with taskstate.TaskState(path) as store:
        assert store.acquire("reconcile") is not None
    ready.set()
    if how == "exit":
        os._exit(0)  # no release, no cleanup
    threading.Event().wait(60)  # until killed


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_holder_that_died_does_not_keep_the_lock(path, how):
    ready = CTX.Event()
    proc = CTX.Process(target=_hold_and_die, args=(path, ready, how))
    proc.start()
    assert ready.wait(30)
    with taskstate.lock(path, "reconcile") as held:
        assert held is False  # alive (or not yet reaped): its lock
    if how == "kill":
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    with taskstate.TaskState(path) as store:
        assert store.holder("reconcile")["pid"] == proc.pid  # the row is still there...
    with taskstate.lock(path, "reconcile") as held:
        assert held is True  # ...but its holder is gone
        with taskstate.TaskState(path) as store:
            assert store.holder("reconcile")["pid"] == os.getpid()
    with taskstate.TaskState(path) as store:
        assert store.holder("reconcile") is None


def test_a_live_holder_keeps_the_lock_past_its_lease_and_a_second_thread_is_refused(path):
    with taskstate.TaskState(path) as store:
        token = store.acquire("reconcile", lease=-1)  # "expired" at once: only other hosts look at that
        assert token is not None
        assert store.acquire("reconcile") is None  # this process is alive
        refused = []
        t = threading.Thread(target=lambda: refused.append(taskstate.TaskState(path).acquire("reconcile")))
        t.start()
        t.join()
        assert refused == [None]
        store.release("reconcile", "someone else's token")
        assert store.holder("reconcile") is not None
        store.release("reconcile", token)
        assert store.holder("reconcile") is None


def test_a_reused_pid_and_other_hosts(path):
    db = sqlite3.connect(path, isolation_level=None)

    def holder(host, pid, started, expires):
        db.execute("INSERT OR REPLACE INTO task_locks VALUES ('reconcile', 'x', ?, ?, ?, ?)",
                   (host, pid, started, expires))

    with taskstate.TaskState(path) as store:
        holder(taskstate.socket.gethostname(), os.getpid(), "1", 0)  # this pid, but started at another time
        assert store.acquire("reconcile") is not None
        holder("elsewhere", 1, "1", taskstate.time.time() + 600)
        assert store.acquire("reconcile") is None  # another host's holder: its lease runs
        holder("elsewhere", 1, "1", taskstate.time.time() - 1)
        assert store.acquire("reconcile") is not None  # its lease ran out
    db.close()


def test_an_in_memory_registry_needs_no_lock():
    with taskstate.lock(":memory:", "reconcile") as held:
        assert held is True
    assert autoscale.load_state(":memory:") == {"last_run": None, "idle_since": {}, "jobs": {}}


def test_the_one_call_helpers_as_reconcile_uses_them(path):
    """last_run / mark_run / lock with the side files of older releases (``.reconcile-last``, ``.reconcile.lock``)."""
    stamp, old_lock = path + ".reconcile-last", path + ".reconcile.lock"
    with open(stamp, "w", encoding="ascii") as fh:
        fh.write("1700000000.000\n")
    open(old_lock, "w").close()
    assert taskstate.last_run(path, "reconcile", stamp=stamp) == 1700000000.0
    assert not os.path.exists(stamp)
    taskstate.mark_run(path, "reconcile", 1700000100.0)
    assert taskstate.last_run(path, "reconcile", stamp=stamp) == 1700000100.0
    with taskstate.lock(path, "reconcile", legacy=old_lock) as held:
        assert held is True and not os.path.exists(old_lock)
    assert taskstate.last_run(":memory:", "reconcile") is None
    taskstate.mark_run(":memory:", "reconcile")
