"""Expand's key handling: one listing per call, a delete only where a stale key is left."""

from tests.unit.test_reconcile import PILLAR, Bus, MemoryKeys, MemoryProvider, MemorySlurm
from vcluster import engine
from vcluster.context import Context
from vcluster.policy import load
from vcluster.registry import Registry


class CountingKeys(MemoryKeys):
    def __init__(self):
        super().__init__()
        self.calls = []

    def all(self):
        self.calls.append(("all",))
        return super().all()

    def delete(self, name):
        self.calls.append(("delete", name))
        super().delete(name)

    def gen_accept(self, name, clear=True):
        self.calls.append(("gen_accept", name, clear))
        return super().gen_accept(name, clear=clear)


def test_expand_lists_keys_once_and_clears_only_a_stale_one(tmp_path):
    keys = CountingKeys()
    ctx = Context(policy=load(PILLAR), registry=Registry(tmp_path / "r.sqlite"), keys=keys,
                  slurm=MemorySlurm(), salt=None, events=Bus())
    ctx._providers["lxd"] = MemoryProvider()
    first, second = ctx.policy.pools["p"].names[:2]
    keys.pending.add(second)  # an old guest of that name re-authenticated after its retire

    ret = engine.expand(ctx, "htc", 2, wait=False)

    assert sorted(ret["nodes"]) == [first, second]
    assert keys.calls == [("all",), ("gen_accept", first, False), ("gen_accept", second, True),
                          ("delete", second)]
    assert keys.pending == set() and keys.keys == {first, second}
