"""The contract every provider passes: the same tests behind one interface.

A provider's test module subclasses :class:`ProviderContract` (the subclass
name starts with ``Test``) and supplies two fixtures:

``provider``
    a connected :class:`vcluster.providers.base.Provider`.
``make_specs``
    ``make_specs(n)`` -> ``n`` :class:`InstanceSpec` of a *new* cluster
    ``contract-<random>`` on every call, with names, addresses and
    ``registry_id`` tags unique in the session. :class:`SpecFactory` builds one.

and may override these hooks:

``read_boot_file``
    ``read_boot_file(instance, boot_file)`` -> the content the instance got
    for ``boot_file.path`` (LXD reads the file, a cloud reads its user-data).
    The default ``None`` skips the boot-file test.
``bad_image``
    an image the provider does not have.
``contract_timeout``
    seconds any wait may take (default 180).

Tests share one pair of instances per class (created once, deleted by the
last test and by the fixture's finalizer), so keep their order.
"""

import itertools
import secrets
import time

import pytest

from vcluster.errors import ProviderError
from vcluster.providers.base import BootFile, InstanceSpec, Status

_SERIAL = itertools.count(1)


class SpecFactory:
    """``make_specs`` for contract tests: a fresh cluster per call."""

    def __init__(self, image, addresses, prefix="ct", cpus=1, memory_mb=256, **spec_kwargs):
        self.image = image
        self.addresses = iter(addresses)  # None entries let the provider choose
        self.prefix = prefix
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.spec_kwargs = spec_kwargs

    def __call__(self, n):
        token = secrets.token_hex(3)
        cluster = f"contract-{token}"
        specs = []
        for i in range(n):
            serial = next(_SERIAL)
            name = f"{self.prefix}{token}-{i}"
            specs.append(
                InstanceSpec(
                    name=name,
                    address=next(self.addresses),
                    image=self.image,
                    cpus=self.cpus,
                    memory_mb=self.memory_mb,
                    boot_files=[],
                    tags={"cluster": cluster, "node": name, "profile": "contract", "registry_id": str(serial)},
                    **self.spec_kwargs,
                )
            )
        return specs


def eventually(check, timeout, what):
    """Poll ``check()`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} not true after {timeout:.0f} s")
        time.sleep(0.5)


def _cleanup_cluster(provider, cluster):
    leftovers = [i.id for i in provider.list(cluster)]
    if leftovers:
        provider.delete(leftovers)


class ProviderContract:
    """Behaviour shared by every provider (LXD, OpenStack, OpenNebula)."""

    @pytest.fixture
    def read_boot_file(self):
        return None

    @pytest.fixture
    def bad_image(self):
        return "vcluster-contract-no-such-image"

    @pytest.fixture
    def contract_timeout(self):
        return 180

    @pytest.fixture(scope="class")
    @classmethod
    def pair_state(cls):
        """Holds the class's shared pair across tests (filled by ``pair``)."""
        return {}

    @pytest.fixture
    def pair(self, provider, make_specs, pair_state, contract_timeout):
        """Two running instances of one cluster, created once per class."""
        if "specs" not in pair_state:
            specs = make_specs(2)
            token = secrets.token_hex(8)
            for spec in specs:
                spec.boot_files.append(BootFile("/etc/vcluster-contract", f"{spec.name} {token}\n", 0o600))
            before = provider.calls["create"]
            pair_state["provider"] = provider
            pair_state["specs"] = specs
            pair_state["created"] = provider.create(specs)
            pair_state["create_calls"] = provider.calls["create"] - before
            provider.wait(
                [i.id for i in pair_state["created"]],
                [Status.RUNNING],
                time.monotonic() + contract_timeout,
                cluster=specs[0].tags["cluster"],
            )
        return pair_state

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _delete_pair(cls, pair_state):
        yield
        if pair_state.get("created"):
            pair_state["provider"].delete([i.id for i in pair_state["created"]])

    # -- tests, in order -------------------------------------------------------

    def test_create_returns_one_instance_per_spec(self, pair):
        created, specs = pair["created"], pair["specs"]
        assert [i.name for i in created] == [s.name for s in specs]
        assert len({i.id for i in created}) == 2

    def test_list_finds_exactly_the_cluster(self, provider, pair):
        cluster = pair["specs"][0].tags["cluster"]
        found = {i.id: i for i in provider.list(cluster)}
        assert set(found) == {i.id for i in pair["created"]}
        for spec, inst in zip(pair["specs"], pair["created"], strict=True):
            listed = found[inst.id]
            assert listed.status is Status.RUNNING
            assert listed.name == spec.name
            for key, value in spec.tags.items():
                assert listed.tags.get(key) == value

    def test_calls_counter_counts_creates(self, pair):
        assert 1 <= pair["create_calls"] <= len(pair["specs"])

    def test_boot_files_delivered(self, pair, read_boot_file):
        if read_boot_file is None:
            pytest.skip("this provider's test module offers no read_boot_file hook")
        for spec, inst in zip(pair["specs"], pair["created"], strict=True):
            boot_file = spec.boot_files[-1]
            assert read_boot_file(inst, boot_file) == boot_file.content

    def test_list_ignores_other_clusters(self, provider, make_specs, pair):
        cluster = pair["specs"][0].tags["cluster"]
        other = make_specs(1)[0].tags["cluster"]
        assert provider.list(other) == []
        assert all(i.tags["cluster"] == cluster for i in provider.list(cluster))

    def test_suspend_then_resume(self, provider, pair, contract_timeout):
        inst = pair["created"][0]
        cluster = pair["specs"][0].tags["cluster"]
        provider.suspend(inst.id)
        provider.wait(
            [inst.id], [Status.SUSPENDED, Status.PAUSED], time.monotonic() + contract_timeout, cluster=cluster
        )
        provider.resume(inst.id)
        [back] = provider.wait([inst.id], [Status.RUNNING], time.monotonic() + contract_timeout, cluster=cluster)
        assert back.status is Status.RUNNING

    def test_create_with_bad_image_leaves_nothing(self, provider, make_specs, bad_image, contract_timeout):
        specs = make_specs(2)
        specs[1].image = bad_image
        cluster = specs[0].tags["cluster"]
        try:
            with pytest.raises(ProviderError):
                provider.create(specs)
            eventually(lambda: provider.list(cluster) == [], contract_timeout, f"cluster {cluster} empty")
        finally:
            _cleanup_cluster(provider, cluster)

    def test_delete_is_idempotent(self, provider, pair, contract_timeout):
        ids = [i.id for i in pair["created"]]
        cluster = pair["specs"][0].tags["cluster"]
        provider.delete(ids)
        eventually(lambda: provider.list(cluster) == [], contract_timeout, f"cluster {cluster} empty")
        provider.delete(ids)  # a second delete is a no-op
        provider.delete(["vcluster-contract-never-existed"])
        pair["created"] = []
