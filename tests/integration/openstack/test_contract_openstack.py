"""The provider contract (tests/provider_contract.py) run against the Nova testbed."""

import base64
import itertools

import pytest

from tests.integration.openstack.conftest import FLAVOR, IMAGE, provider_config
from tests.provider_contract import ProviderContract, SpecFactory
from vcluster.providers.openstack import OpenStackProvider, parse_user_data

pytestmark = [pytest.mark.integration, pytest.mark.openstack]


class TestOpenStackContract(ProviderContract):
    @pytest.fixture(scope="class")
    def provider(self, openstack_testbed):
        prov = OpenStackProvider("contract", provider_config(openstack_testbed))
        yield prov
        prov.close()

    @pytest.fixture(scope="class")
    def make_specs(self):
        # The testbed has no networks: Nova picks no address (None).
        return SpecFactory(IMAGE, itertools.repeat(None), prefix="ct", memory_mb=64, flavor=FLAVOR)

    @pytest.fixture
    def read_boot_file(self, provider):
        """The fake virt driver runs no guest: read what cloud-init would write from Nova's user data."""

        def read(instance, boot_file):
            server = provider.conn.compute.get_server(instance.id)
            parts = dict(parse_user_data(server.user_data))
            own = parts.get(server.launch_index, parts.get(None))
            for entry in own.get("write_files", []):
                if entry["path"] == boot_file.path:
                    return base64.b64decode(entry["content"]).decode()
            return None

        return read

    @pytest.fixture
    def contract_timeout(self):
        return 120
