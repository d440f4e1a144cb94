"""Fixtures shared by the OpenNebula provider tests (replay and simulator)."""

import os

import pytest

from tests.unit.opennebula.common import ENDPOINT, SESSION
from tests.unit.opennebula.replay import ReplayTransport
from vcluster.providers.opennebula import OpenNebulaProvider


@pytest.fixture
def credentials_file(tmp_path):
    """An ONE_AUTH-style file readable by its owner only."""
    path = tmp_path / "one_auth"
    path.write_text(SESSION + "\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture
def replay(credentials_file):
    """``replay(cassette, **options)`` -> a provider answering from ``data/<cassette>``."""
    made = []

    def make(cassette, **options):
        transport = ReplayTransport(cassette, SESSION)
        config = {"driver": "opennebula", "endpoint": ENDPOINT, "credentials_file": credentials_file}
        config.update(options)
        provider = OpenNebulaProvider("one", config, transport=transport)
        made.append(transport)
        return provider

    yield make
    for transport in made:
        transport.assert_done()
