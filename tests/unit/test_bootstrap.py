"""Boot files of a new node: minion config, pinned master key, own key, grains."""

import base64

import yaml

from vcluster import bootstrap, policy
from vcluster.providers.base import InstanceSpec

POLICY = {
    "cluster": "t", "controller": "ctl", "master": "10.9.0.1", "registry": "/tmp/r.sqlite",
    "pools": {"p": {"names": "n[1-2]", "addresses": "10.9.0.10-10.9.0.11", "gateway": "10.9.0.1"}},
    "providers": {"lxd": {"driver": "lxd", "network": "br", "storage_pool": "sp"}},
    "profiles": {"htc": {"provider": "lxd", "pool": "p", "image": "img", "cpus": 2, "memory": 2048,
                         "features": ["virtual", "htc"], "partition": "htc"}},
}
KEYS = {"pub": "-----BEGIN PUBLIC KEY-----\nPUB\n-----END PUBLIC KEY-----\n",
        "priv": "-----BEGIN RSA PRIVATE KEY-----\nSECRET\n-----END RSA PRIVATE KEY-----\n"}


def files(**profile):
    data = dict(POLICY, profiles={"htc": dict(POLICY["profiles"]["htc"], **profile)})
    prof = policy.load(data).profile("htc")
    return {f.path: f for f in bootstrap.boot_files("n1", prof, "dynamic", "10.9.0.1", KEYS, "MASTERPUB",
                                                   master_port=14506, publish_port=14505)}


def test_minion_config_names_node_master_and_ports():
    conf = yaml.safe_load(files()[bootstrap.MINION_CONF].content)
    assert conf["id"] == "n1"
    assert conf["master"] == "10.9.0.1"
    assert (conf["master_port"], conf["publish_port"]) == (14506, 14505)


def test_module_sync_on_highstate_follows_the_profile():
    assert yaml.safe_load(files()[bootstrap.MINION_CONF].content)["autoload_dynamic_modules"] is False
    conf = yaml.safe_load(files(sync_modules=True)[bootstrap.MINION_CONF].content)
    assert conf["autoload_dynamic_modules"] is True


def test_salt_mine_follows_the_profile():
    assert yaml.safe_load(files()[bootstrap.MINION_CONF].content)["mine_enabled"] is False
    assert yaml.safe_load(files(salt_mine=True)[bootstrap.MINION_CONF].content)["mine_enabled"] is True


def test_keys_land_with_safe_modes_and_master_key_is_pinned():
    f = files()
    assert f["/etc/salt/pki/minion/minion.pem"].content == KEYS["priv"]
    assert f["/etc/salt/pki/minion/minion.pem"].mode == 0o400
    assert f["/etc/salt/pki/minion/minion.pub"].content == KEYS["pub"]
    assert f["/etc/salt/pki/minion/minion_master.pub"].content == "MASTERPUB"


def test_grains_make_a_virtual_compute_node_of_its_profile():
    grains = yaml.safe_load(files()[bootstrap.GRAINS].content)
    assert grains["roles"] == ["slurm-compute", "vcluster-virtual"]
    assert grains["vcluster"] == {"node": "n1", "profile": "htc", "cpus": 2, "memory": 2048,
                                  "features": ["virtual", "htc"], "partition": "htc",
                                  "membership": "dynamic"}


def test_private_key_never_shows_in_repr():
    everything = list(files().values())
    spec = InstanceSpec(name="n1", address="10.9.0.10", image="img", cpus=1, memory_mb=1,
                        boot_files=everything, tags={})
    assert "SECRET" not in repr(everything)
    assert "SECRET" not in repr(spec)


def test_cloud_config_writes_every_file_with_its_mode():
    data = bootstrap.cloud_config(list(files().values()), runcmd=[["true"]],
                                  start_command="systemctl restart salt-minion")
    assert data.startswith("#cloud-config\n")
    doc = yaml.safe_load(data)
    by_path = {f["path"]: f for f in doc["write_files"]}
    pem = by_path["/etc/salt/pki/minion/minion.pem"]
    assert pem["permissions"] == "0400" and pem["encoding"] == "b64"
    assert base64.b64decode(pem["content"]).decode() == KEYS["priv"]
    assert doc["runcmd"] == [["true"], ["sh", "-c", "systemctl restart salt-minion"]]
    assert "hostname" not in doc and "launch-index" not in doc


def test_cloud_config_names_the_host_and_its_launch_index():
    doc = yaml.safe_load(bootstrap.cloud_config([], hostname="vn3", launch_index=2))
    assert (doc["hostname"], doc["preserve_hostname"], doc["launch-index"]) == ("vn3", False, 2)
    assert doc["write_files"] == [] and "runcmd" not in doc
