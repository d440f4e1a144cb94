"""Expand's key handling: one listing per call, a delete only where a stale key is left,
and the private key of a new node reaches its boot files and nothing else."""

import logging
import os
import threading

from tests.unit.test_reconcile import PILLAR, Bus, MemoryKeys, MemoryProvider, MemorySlurm
from tests.unit.test_wheel_keys import body, bus, master_opts  # noqa: F401 - fixtures
from vcluster import expand as vexpand
from vcluster import lifecycle, saltlink
from vcluster.context import Context
from vcluster.errors import VclusterError
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

    ret = vexpand.expand(ctx, "htc", 2, wait=False)

    assert sorted(ret["nodes"]) == [first, second]
    # the keys are generated in parallel threads: one order per node, not across nodes
    assert keys.calls[0] == ("all",)
    assert sorted(keys.calls[1:]) == sorted([("gen_accept", first, False), ("gen_accept", second, True),
                                             ("delete", second)])
    assert keys.calls.index(("gen_accept", second, True)) < keys.calls.index(("delete", second))
    assert keys.pending == set() and keys.keys == {first, second}


class ThreadKeys(CountingKeys):
    def __init__(self):
        super().__init__()
        self.threads = {}

    def gen_accept(self, name, clear=True):
        self.threads[name] = threading.current_thread().name
        return super().gen_accept(name, clear=clear)


def test_a_burst_generates_its_keys_in_threads_and_keeps_the_node_order(tmp_path, monkeypatch):
    """Key generation (46 ms per node) releases the GIL: a burst generates keys on every core."""
    monkeypatch.setattr(lifecycle.os, "cpu_count", lambda: 4)
    keys = ThreadKeys()
    ctx = Context(policy=load(PILLAR), registry=Registry(tmp_path / "r.sqlite"), keys=keys,
                  slurm=MemorySlurm(), salt=None, events=Bus())
    provider = ctx._providers["lxd"] = SpecKeepingProvider()
    names = ctx.policy.pools["p"].names[:6]

    ret = vexpand.expand(ctx, "htc", 6, wait=False)

    assert sorted(ret["nodes"]) == sorted(names)
    assert [s.name for s in provider.specs] == list(names)
    assert set(keys.threads) == set(names)
    assert all(t.startswith("vcluster-keys") for t in keys.threads.values()), keys.threads
    assert keys.keys == set(names)


class SpecKeepingProvider(MemoryProvider):
    def __init__(self):
        super().__init__()
        self.specs = []

    def create(self, specs):
        self.specs.extend(specs)
        return super().create(specs)


class RecordingBus(Bus):
    def progress(self, message, **data):
        self.events.append(("progress", {"message": message, **data}))


def test_expand_hands_the_private_key_to_the_boot_files_only(tmp_path, master_opts, bus, caplog):
    """Salt's real key store and wheel client on a temporary master (see
    test_wheel_keys): the new node's private key is in its boot files and
    nowhere else this process produced: no master-bus event (recorded at
    ``fire_event``), no vcluster event or progress message, no log record,
    not in the expand's return, not in the registry file."""
    caplog.set_level(logging.DEBUG)
    keys = saltlink.WheelKeys(master_opts)
    keys.master_pub = lambda: "MASTER PUBLIC KEY"  # no master runs here to ask (key.master_key_str)
    events = RecordingBus()
    ctx = Context(policy=load(PILLAR), registry=Registry(tmp_path / "r.sqlite"), keys=keys,
                  slurm=MemorySlurm(), salt=None, events=events)
    provider = ctx._providers["lxd"] = SpecKeepingProvider()
    try:
        ret = vexpand.expand(ctx, "htc", 2, wait=False)
        listing = keys.all()
    finally:
        ctx.close()

    # wait=False: the nodes are booting (no guest joins here), their keys accepted
    assert {v["state"] for v in ret["nodes"].values()} == {"booting"}, ret
    assert listing == {n: "accepted" for n in ret["nodes"]}
    pems = {}
    for spec in provider.specs:
        files = {f.path: f for f in spec.boot_files}
        pem = files["/etc/salt/pki/minion/minion.pem"]
        assert pem.mode == 0o400 and pem.content.startswith("-----BEGIN RSA PRIVATE KEY-----")
        assert files["/etc/salt/pki/minion/minion.pub"].content == open(
            os.path.join(master_opts["pki_dir"], "minions", spec.name), encoding="utf-8").read()
        assert pem.content not in repr(spec)  # BootFile hides its content from repr
        pems[spec.name] = pem.content
    assert sorted(pems) == sorted(ret["nodes"]) and len(set(pems.values())) == 2
    seen = {
        "master bus": repr(bus),
        "vcluster events": repr(events.events),
        "log": "\n".join(r.getMessage() for r in caplog.records),
        "return": repr(ret),
        "registry": open(tmp_path / "r.sqlite", "rb").read().decode("latin-1"),
    }
    for where, text in seen.items():
        for pem in pems.values():
            assert not any(line in text for line in body(pem)), f"a private key in the {where}"


class ShortProvider(MemoryProvider):
    """Breaks the provider contract: one instance fewer than the specs it was given."""

    def create(self, specs):
        return super().create(specs)[:-1]


def test_a_provider_returning_fewer_instances_than_specs_fails_the_expand_and_leaves_nothing(tmp_path):
    keys = CountingKeys()
    ctx = Context(policy=load({**PILLAR, "faults": {"create_attempts": 1}}), registry=Registry(tmp_path / "r.sqlite"),
                  keys=keys, slurm=MemorySlurm(), salt=None, events=Bus())
    provider = ShortProvider()
    ctx._providers["lxd"] = provider
    ret = vexpand.expand(ctx, "htc", 2, wait=False)
    assert ret["result"] is False
    assert "returned 1 instance(s) for 2 node(s)" in ret["comment"], ret
    # the instance the provider made but did not return is found by its tags and deleted too
    assert ctx.registry.nodes() == [] and provider.instances == {} and keys.keys == set()


class GatedKeys(MemoryKeys):
    """The last node's key pair is made only once the provider has been called (or after 10 s)."""

    def __init__(self, last, gate, fail=None):
        super().__init__()
        self.last, self.gate, self.fail = last, gate, fail
        self.waited = None

    def gen_accept(self, name, clear=True):
        if name == self.fail:
            raise VclusterError(f"could not generate a minion key for {name}: OSError")
        if name == self.last:
            self.waited = self.gate.wait(10)
        super().gen_accept(name, clear=clear)
        return {"pub": "pub", "priv": SECRET}


class BootFileReadingProvider(MemoryProvider):
    """Reads every spec's boot files, as the real providers do when they provision an instance."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate
        self.files = {}
        self.reprs = []

    def create(self, specs):
        self.gate.set()
        self.reprs = [repr(s) for s in specs]
        for spec in specs:
            self.files[spec.name] = list(spec.boot_files)  # waits for that node's key
        return super().create(specs)


SECRET = "-----BEGIN RSA PRIVATE KEY----- unit-secret"


def test_the_provider_is_called_while_later_keys_are_still_being_generated(tmp_path):
    """A burst's first instances are created before its last key pair exists (0.75 s at N=32 here)."""
    gate = threading.Event()
    names = load(PILLAR).pools["p"].names[:3]
    keys = GatedKeys(last=names[-1], gate=gate)
    ctx = Context(policy=load(PILLAR), registry=Registry(tmp_path / "r.sqlite"), keys=keys,
                  slurm=MemorySlurm(), salt=None, events=Bus())
    provider = ctx._providers["lxd"] = BootFileReadingProvider(gate)

    ret = vexpand.expand(ctx, "htc", 3, wait=False)

    assert {n: v["instance"] for n, v in ret["nodes"].items()} == {n: f"i-{n}" for n in names}, ret
    assert keys.waited is True  # the provider was called before the last key was made
    for name in names:
        assert any(f.content == SECRET for f in provider.files[name]), name
    # a spec's repr names its boot files, never their content
    assert provider.reprs and not any(SECRET in r for r in provider.reprs)
    assert all(f"<boot files of {s.split(chr(39))[1]}>" in s for s in provider.reprs), provider.reprs


def test_a_key_that_cannot_be_made_fails_the_expand_and_leaves_no_key(tmp_path):
    gate = threading.Event()
    names = load(PILLAR).pools["p"].names[:3]
    keys = GatedKeys(last=names[-1], gate=gate, fail=names[1])
    ctx = Context(policy=load({**PILLAR, "faults": {"create_attempts": 1}}), registry=Registry(tmp_path / "r.sqlite"),
                  keys=keys, slurm=MemorySlurm(), salt=None, events=Bus())
    provider = ctx._providers["lxd"] = BootFileReadingProvider(gate)

    ret = vexpand.expand(ctx, "htc", 3, wait=False)

    assert ret["result"] is False
    assert f"could not generate a minion key for {names[1]}" in ret["comment"], ret
    assert SECRET not in str(ret)
    # the keys made before and after the failure are deleted with the nodes
    assert keys.keys == set() and ctx.registry.nodes() == [] and provider.instances == {}
