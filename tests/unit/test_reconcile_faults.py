"""vcluster.retry: bounded retries of provider creates, pause of a failing profile."""

import time

import pytest

from tests.unit.test_reconcile import PILLAR, Bus, MemoryKeys, MemoryProvider, MemorySlurm
from vcluster import expand as vexpand
from vcluster import retry
from vcluster.context import Context
from vcluster.errors import PolicyError, ProviderError, ProviderTimeout, QuotaExceeded
from vcluster.policy import load
from vcluster.registry import Registry


class Flaky(MemoryProvider):
    """Fails the first ``failures`` creates (after creating one instance, as a half-done call would)."""

    def __init__(self, failures, error=None):
        super().__init__()
        self.failures = failures
        self.error = error or ProviderError("create tnode01: LXD did not answer (connection reset)")

    def create(self, specs):
        self.calls["create"] += 1
        if self.calls["create"] <= self.failures:
            super().create(specs[:1])  # a leftover the retry must clean up
            raise self.error
        return super().create(specs)


def make_ctx(tmp_path, provider, faults=None):
    pillar = dict(PILLAR, faults=dict({"create_backoff": 0.01}, **(faults or {})))
    c = Context(policy=load(pillar), registry=Registry(tmp_path / "r.sqlite"), keys=MemoryKeys(),
                slurm=MemorySlurm(), salt=None, events=Bus())
    c._providers["lxd"] = provider
    return c


def test_call_retries_with_backoff_until_success():
    waits, tries = [], []

    def func():
        tries.append(1)
        if len(tries) < 3:
            raise ProviderTimeout("slow")
        return "ok"

    assert retry.call(func, 5, 1.0, time.monotonic() + 100, wait=waits.append) == "ok"
    assert waits == [1.0, 2.0]


def test_call_stops_at_attempts_deadline_and_permanent_errors():
    def boom():
        raise ProviderError("LXD did not answer")

    with pytest.raises(ProviderError):
        retry.call(boom, 2, 0, time.monotonic() + 100, wait=lambda s: None)
    waits = []
    with pytest.raises(ProviderError):  # 3 s left, backoff 5 s: no second try
        retry.call(boom, 9, 5, time.monotonic() + 3, wait=waits.append)
    assert waits == []
    calls = []

    def quota():
        calls.append(1)
        raise QuotaExceeded("over quota")

    with pytest.raises(QuotaExceeded):
        retry.call(quota, 9, 0, time.monotonic() + 100)
    assert len(calls) == 1
    assert not retry.transient(ProviderError("LXD has no image with alias or fingerprint 'x'"))
    assert not retry.transient(ValueError("bug"))


def test_expand_survives_one_failed_create(tmp_path):
    prov = Flaky(1)
    ctx = make_ctx(tmp_path, prov)
    ret = vexpand.expand(ctx, "htc", 2, wait=False)
    assert ret["result"] is False  # wait=False: booting, not ready yet
    assert all(v["state"] == "booting" for v in ret["nodes"].values()), ret
    assert prov.calls["create"] == 2
    # the leftover of the failed try was deleted before the retry: one instance per node
    assert sorted(i.tags["node"] for i in prov.instances.values()) == sorted(ret["nodes"])
    retries = [t for t, _ in ctx.events.events if t == "vcluster/provider/lxd/retry"]
    assert len(retries) == 1


def test_create_failing_every_time_releases_everything(tmp_path):
    prov = Flaky(99)
    ctx = make_ctx(tmp_path, prov, {"create_attempts": 2})
    ret = vexpand.expand(ctx, "htc", 2)
    assert ret["result"] is False and "creating instances failed" in ret["comment"]
    assert prov.calls["create"] == 2 and prov.instances == {}
    assert ctx.registry.nodes() == [] and ctx.keys.keys == set()


def test_profile_paused_after_repeated_failures(tmp_path):
    prov = Flaky(99)
    ctx = make_ctx(tmp_path, prov, {"create_attempts": 1, "failures": 2, "window": 60, "pause": 120})
    for _ in range(2):
        assert vexpand.expand(ctx, "htc", 1)["result"] is False
    calls = prov.calls["create"]
    with pytest.raises(retry.ProfilePaused, match=r"profile htc is paused after 2 failed expands within 60 s"):
        retry.check_pause(ctx.registry, ctx.policy, "htc")
    # through the engine as well: refused without a provider call, and the refusal is no new failure
    ret = vexpand.expand(ctx, "htc", 1)
    assert ret["result"] is False and "is paused after" in ret["comment"]
    assert prov.calls["create"] == calls
    assert len(ctx.registry.failed_requests("htc", 0, exclude=retry.PAUSED_MARK)) == 2
    # the pause ends pause seconds after the last failure
    until, _ = retry.pause_state(ctx.registry, ctx.policy, "htc")
    assert 110 < until - time.time() <= 120
    assert retry.pause_state(ctx.registry, ctx.policy, "htc", now=until + 1)[0] is None
    # failures 0 turns the pause off
    off = load(dict(PILLAR, faults={"failures": 0}))
    retry.check_pause(ctx.registry, off, "htc")


def test_failures_far_apart_do_not_pause(tmp_path):
    ctx = make_ctx(tmp_path, Flaky(0), {"failures": 2, "window": 10, "pause": 100})
    pool = ctx.policy.pools["p"]
    for i, ago in enumerate((50, 20)):
        (n,) = ctx.registry.allocate(pool, "htc", "lxd", 1, f"r{i}")
        ctx.registry.transition(n.name, "failed", reason="boom")
        ctx.registry._db.execute("UPDATE audit SET ts = ? WHERE node_id = ? AND to_state = 'failed'",
                                 (time.time() - ago, n.id))
    assert retry.pause_state(ctx.registry, ctx.policy, "htc")[0] is None
    assert len(ctx.registry.failed_requests("htc", 0)) == 2
    assert ctx.registry.failed_requests("other", 0) == []


def test_faults_policy_is_validated():
    with pytest.raises(PolicyError, match="vcluster:faults:create_attempts must be a positive integer"):
        load(dict(PILLAR, faults={"create_attempts": 0}))
    with pytest.raises(PolicyError, match="vcluster:reconcile:interval must be a number of seconds"):
        load(dict(PILLAR, reconcile={"interval": "often"}))
    with pytest.raises(PolicyError, match="vcluster:faults:pauses is not a known key"):
        load(dict(PILLAR, faults={"pauses": 1}))
