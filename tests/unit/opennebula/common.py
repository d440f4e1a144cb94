"""Constants and spec builders shared by the OpenNebula provider tests."""

from vcluster.providers.base import BootFile, InstanceSpec

USER, PASSWORD = "vcluster", "S3cr3t-Pa55w0rd-for-tests"
SESSION = f"{USER}:{PASSWORD}"
ENDPOINT = "https://one.example.org:2633/RPC2"
FAKE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEAv3cluSterFakePrivateKeyMaterialForTestsOnly0123456789\n"
    "-----END RSA PRIVATE KEY-----\n"
)


def spec(name, address=None, registry_id="req-2", cluster="demo", **extra):
    """An InstanceSpec like the engine builds for profile ``htc``."""
    files = [
        BootFile("/etc/salt/minion.d/vcluster.conf", f"id: {name}\nmaster: 10.77.0.1\n", 0o644),
        BootFile("/etc/salt/pki/minion/minion.pem", FAKE_KEY, 0o400),
    ]
    return InstanceSpec(
        name=name, address=address, image="vcluster-node", cpus=2, memory_mb=2048,
        boot_files=files, network="vcnet" if address else None,
        tags={"cluster": cluster, "node": name, "profile": "htc", "registry_id": registry_id},
        extra=extra,
    )
