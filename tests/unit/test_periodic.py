"""vcluster.periodic: the master engine's task loop (liveness, autoscale, reconcile)."""

import threading

import pytest

from vcluster import autoscale, liveness, masterconf, periodic, reconcile
from vcluster.errors import VclusterError


class FakeTime:
    """A clock and a stop event in one: ``wait`` advances the clock instead of sleeping.

    The first ``waits`` waits time out (the loop runs its task); the next one
    sees the stop.
    """

    def __init__(self, waits):
        self.now = 1000.0
        self.waits = []
        self.left = waits

    def clock(self):
        return self.now

    def wait(self, timeout):
        self.waits.append(timeout)
        self.now += timeout
        if self.left == 0:
            return True
        self.left -= 1
        return False


class Ctx:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def test_master_config_runs_the_engine_not_schedule_entries():
    conf = masterconf.master_config("/repo", "/site", "/r.sqlite", "10.0.0.1", "m", "ctl", ["vn*"])
    assert conf["engines"] == [{"vcluster_tasks": {}}]
    assert "schedule" not in conf


def test_tasks_call_each_module_as_its_runner_would(monkeypatch):
    called = []
    monkeypatch.setattr(liveness, "check", lambda ctx: called.append(("liveness", ctx)) or {})
    monkeypatch.setattr(autoscale, "run", lambda ctx, scheduled: called.append(("autoscale", scheduled)) or {})
    monkeypatch.setattr(reconcile, "run", lambda ctx, scheduled: called.append(("reconcile", scheduled)) or {})
    tasks = {t.name: t for t in periodic.TASKS}
    assert {n: t.interval for n, t in tasks.items()} == {
        "liveness": liveness.SCHEDULE_TICK,
        "autoscale": autoscale.SCHEDULE_TICK,
        "reconcile": reconcile.SCHEDULE_TICK,
        "metrics": periodic.METRICS_TICK,
    }
    for task in periodic.TASKS[:3]:
        task.call("ctx")
    assert called == [("liveness", "ctx"), ("autoscale", True), ("reconcile", True)]


def test_run_once_closes_its_context_and_survives_failures(caplog):
    made = []

    def make(actor):
        made.append((actor, Ctx()))
        return made[-1][1]

    ok = periodic.Task("tester", 10, lambda ctx: {"result": True, "comment": "fine"})
    assert periodic.run_once(ok, make) == {"result": True, "comment": "fine"}
    refused = periodic.Task("tester", 10, lambda ctx: (_ for _ in ()).throw(VclusterError("no controller")))
    assert periodic.run_once(refused, make) is None
    broken = periodic.Task("tester", 10, lambda ctx: 1 / 0)
    assert periodic.run_once(broken, make) is None
    assert [a for a, _ in made] == ["tester"] * 3 and all(c.closed for _, c in made)
    assert "no controller" in caplog.text and "ZeroDivisionError" in caplog.text


def test_run_once_without_a_context_reports_why():
    def make(actor):
        raise VclusterError("pillar vcluster is missing for the master")

    assert periodic.run_once(periodic.Task("t", 10, lambda ctx: {}), make) is None


def test_loop_runs_every_interval_from_one_interval_after_start():
    fake = FakeTime(waits=3)
    runs = []
    task = periodic.Task("t", 10, lambda ctx: runs.append(fake.now))
    periodic.loop(task, lambda actor: Ctx(), fake, clock=fake.clock)
    assert runs == [1010.0, 1020.0, 1030.0]
    assert fake.waits == [10.0, 10.0, 10.0, 10.0]


def test_a_long_run_skips_the_ticks_it_overran():
    fake = FakeTime(waits=2)
    runs = []

    def slow(ctx):
        runs.append(fake.now)
        fake.now += 25  # 2.5 intervals

    periodic.loop(periodic.Task("t", 10, slow), lambda actor: Ctx(), fake, clock=fake.clock)
    # started at 1010, ended at 1035: next tick 1040, not a burst at 1020 and 1030
    assert runs == [1010.0, 1040.0]
    assert fake.waits[1] == pytest.approx(5.0)


def test_serve_runs_each_task_in_its_own_thread_until_stopped():
    stop = threading.Event()
    seen = {}
    both = threading.Barrier(3, timeout=30)

    def task(name):
        def call(ctx):
            seen[name] = threading.current_thread().name
            both.wait()  # each blocks until the other ran: they run at once
            stop.set()
        return periodic.Task(name, 0.001, call)

    runner = threading.Thread(target=periodic.serve, args=(lambda actor: Ctx(), stop, [task("a"), task("b")]))
    runner.start()
    both.wait()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert seen == {"a": "vcluster-a", "b": "vcluster-b"}
