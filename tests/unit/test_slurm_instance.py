"""Slurm's cloud accounting fields (InstanceId, InstanceType, Extra) of virtual nodes.

The command lines are checked against a recorded runner for the two
releases captured here (22.05.8 and 24.11.5, tests/unit/data/slurm/): the
unit tests run without a controller. The ``scontrol show node`` line with
the three fields is the 24.11 fixture's ``vn1`` with the fields appended as
24.11's ``scontrol show -o node`` prints them (src/api/node_info.c at
slurm-24-11-5-1); tests/functional/test_slurm_24_11.py reads them back from
a real 24.11 controller. The engine's side (join, migrate) runs on the real
registry and policy with the in-memory Slurm and provider of test_suspend.
"""

import dataclasses
import datetime
import importlib.util
import json
import logging
import pathlib

import pytest

from tests.unit import test_suspend as ts
from vcluster import migrate as mig
from vcluster import suspend_resume as sus
from vcluster.errors import SlurmError
from vcluster.slurm import client as _client
from vcluster.slurm import instance, parse, versions, vmtime
from vcluster.slurm.client import Slurm

DATA = pathlib.Path(__file__).parent / "data" / "slurm"
VERSION = ("scontrol", "--version")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _vn1(release, suffix=""):
    for line in (DATA / release / "scontrol_show_node.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("NodeName=vn1 "):
            return line.rstrip() + suffix + "\n"
    raise AssertionError("no vn1 in the fixture")


class Runner:
    """Answers ``scontrol --version`` with the release's capture, a node read with ``node_line``; records the rest."""

    def __init__(self, release, node_line=None, update_rc=0):
        self.version = (DATA / release / "scontrol_version.txt").read_text(encoding="utf-8")
        self.node_line = node_line
        self.update_rc = update_rc
        self.calls = []

    def __call__(self, argv, env, timeout, stdin=None):
        if tuple(argv) == VERSION:
            return 0, self.version, ""
        self.calls.append(list(argv))
        if argv[:2] == ["scontrol", "update"]:
            return (0, "", "") if self.update_rc == 0 else (1, "", "scontrol: error: Invalid node name specified")
        if argv[:5] == ["scontrol", "-F", "show", "-o", "node"]:
            return 0, self.node_line, ""
        raise AssertionError(f"unexpected command {argv}")


EXTRA = '{"host":"h1","profile":"htc","provider":"lxd"}'
SET = f" Extra={EXTRA} InstanceId=vcluster-vn1 InstanceType=1cpu-1024mb"


# -- the version table ----------------------------------------------------------

@pytest.mark.parametrize(("series", "has"), [("22.05", False), ("23.02", False), ("23.11", True), ("24.05", True),
                                            ("24.11", True), ("25.05", True), ("25.11", True)])
def test_instance_fields_from_23_11(series, has):
    assert versions.RELEASES[series].instance_fields is has
    assert versions.RELEASES[series].to_dict()["instance_fields"] is has


# -- the client's command line ----------------------------------------------------

def test_24_11_sets_the_three_fields_in_one_update_and_reads_them_back():
    run = Runner("24.11", node_line=_vn1("24.11", SET))
    node = Slurm(runner=run).set_instance("vn1", "vcluster-vn1", "1cpu-1024mb",
                                          extra={"provider": "lxd", "host": "h1", "profile": "htc"})
    assert run.calls == [
        ["scontrol", "update", "nodename=vn1", "InstanceId=vcluster-vn1", "InstanceType=1cpu-1024mb",
         f"Extra={EXTRA}"],
        ["scontrol", "-F", "show", "-o", "node", "vn1"],
    ]
    assert (node.instance_id, node.instance_type, node.extra) == ("vcluster-vn1", "1cpu-1024mb", EXTRA)
    assert instance.parse_extra(node.extra) == {"host": "h1", "profile": "htc", "provider": "lxd"}
    # the rest of the record still parses as before
    assert node.state == ["ALLOCATED"] and node.version == "24.11.5"


def test_24_11_extra_given_as_its_json_text_and_without_extra():
    run = Runner("24.11", node_line=_vn1("24.11"))
    s = Slurm(runner=run)
    s.set_instance("vn1", "i-1", "m1.small", extra=EXTRA)
    s.set_instance("vn1", "i-1", "m1.small")
    updates = [c for c in run.calls if c[1] == "update"]
    assert updates == [["scontrol", "update", "nodename=vn1", "InstanceId=i-1", "InstanceType=m1.small",
                        f"Extra={EXTRA}"],
                       ["scontrol", "update", "nodename=vn1", "InstanceId=i-1", "InstanceType=m1.small"]]


def test_22_05_refuses_in_one_sentence_and_runs_nothing():
    run = Runner("22.05")
    with pytest.raises(SlurmError) as err:
        Slurm(runner=run).set_instance("vn1", "vcluster-vn1", "1cpu-1024mb", extra=EXTRA)
    assert str(err.value) == ("Slurm 22.05.8 has no InstanceId or InstanceType on nodes (23.11 and later): "
                              "node vn1's instance is not recorded")
    assert run.calls == []


@pytest.mark.parametrize(("args", "message"), [
    (("vn1", "a b", "t"), "InstanceId 'a b' is invalid"),
    (("vn1", "x'y", "t"), "InstanceId \"x'y\" is invalid"),  # slurmdbd puts it into SQL unescaped
    (("vn1", "", "t"), "InstanceId '' is invalid"),
    (("vn1", None, "t"), "InstanceId None is invalid"),
    (("vn1", "i", "a=b"), "InstanceType 'a=b' is invalid"),
    (("vn1", "i", "x" * 129), "InstanceType 'xxxx"),
    (("vn 1", "i", "t"), "vn 1"),
])
def test_bad_values_are_refused_before_anything_runs(args, message):
    run = Runner("24.11")
    with pytest.raises(SlurmError, match=message.replace("(", r"\(")):
        Slurm(runner=run).set_instance(*args)
    assert run.calls == []


@pytest.mark.parametrize("extra", ['{"host": "h1"}', "host=h1", '{"host":"h 1"}', '["h1"]', "{}",
                                   {"host": "h'1"}])
def test_bad_extra_is_refused_before_anything_runs(extra):
    run = Runner("24.11")
    with pytest.raises(SlurmError, match="Extra .* is invalid"):
        Slurm(runner=run).set_instance("vn1", "i", "t", extra=extra)
    assert run.calls == []


def test_node_without_the_fields_parses_them_empty():
    (node,) = parse.nodes_from_scontrol(_vn1("22.05"))
    assert (node.instance_id, node.instance_type, node.extra) == ("", "", "")
    assert set(node.to_dict()) >= {"instance_id", "instance_type", "extra"}


# -- the values vcluster records ----------------------------------------------------

def test_extra_json_is_compact_sorted_and_skips_none():
    assert instance.extra_json(provider="os1", host=None, profile="gpu") == '{"profile":"gpu","provider":"os1"}'
    assert json.loads(instance.extra_json(provider="lxd", host="h1")) == {"provider": "lxd", "host": "h1"}
    assert instance.parse_extra("not json") == {} and instance.parse_extra("") == {}


def test_instance_type_is_the_flavor_else_the_size():
    class Profile:
        cpus, memory, flavor = 2, 4096, None

    assert instance.instance_type(Profile) == "2cpu-4096mb"
    Profile.flavor = "m1.large"
    assert instance.instance_type(Profile) == "m1.large"


# -- the engine: join and migrate ----------------------------------------------------

class InstanceSlurm(ts.FakeSlurm):
    """test_suspend's Slurm plus the controller's slurm.set_instance (answer of a 24.11 or 22.05 controller)."""

    def __init__(self, has_fields=True, fail=None):
        super().__init__()
        self.has_fields = has_fields
        self.fail = fail
        self.instances = {}

    def set_instance(self, name, instance_id, instance_type, extra=None):
        self.calls.append(("set_instance", name, instance_id, instance_type, extra))
        if self.fail:
            raise self.fail
        if not self.has_fields:
            return {"set": False, "comment": "Slurm 22.05 has no InstanceId or InstanceType on nodes "
                                             "(23.11 and later); not recorded"}
        self.instances[name] = (instance_id, instance_type, instance.parse_extra(extra))
        return {"set": True, "node": {"name": name}}

    def update_node_addr(self, name, address):
        self.calls.append(("update_node_addr", name, address))


@pytest.fixture
def ctx(env):
    def make(**kwargs):
        c = env()
        c.slurm = InstanceSlurm(**kwargs)
        for name in ("vn1", "vn2", "vn3"):
            c.slurm.nodes_[name] = {"state": ["IDLE"], "reason": ""}
        return c
    return make


env = ts.env  # the registry with three ready lxd nodes on host h1, profile htc


def test_record_takes_the_registry_row_and_the_profile(ctx):
    c = ctx()
    assert instance.record(c, "vn1") is True
    assert c.slurm.instances["vn1"] == ("vn1", "1cpu-1024mb", {"host": "h1", "profile": "htc", "provider": "lxd"})


def test_migrate_records_the_new_host(ctx):
    c = ctx()
    ret = mig.migrate(c, "vn1", host="h2")
    assert ret["result"] is True
    assert c.slurm.instances["vn1"][2]["host"] == "h2"
    # after Slurm has the new address, before the node is ready again
    names = [call[0] for call in c.slurm.calls]
    assert names.index("update_node_addr") < names.index("set_instance")


def test_migrating_a_suspended_dynamic_node_leaves_the_fields(ctx, caplog):
    c = ctx()
    c.slurm.nodes_["vn1"] = {"state": ["IDLE", "DRAIN"], "reason": sus.DRAIN_REASON}
    c.registry.transition("vn1", "suspending")
    c.registry.transition("vn1", "suspended")
    with caplog.at_level(logging.INFO, logger="vcluster.slurm.instance"):
        assert mig.migrate(c, "vn1", host="h2")["result"] is True
    assert "set_instance" not in [call[0] for call in c.slurm.calls]
    assert "slurmdbd would end its drain event" in caplog.text
    assert c.registry.get("vn1").state == "suspended"


def test_a_drained_cloud_node_is_recorded(ctx, monkeypatch):
    c = ctx()
    get = c.registry.get
    monkeypatch.setattr(c.registry, "get", lambda name: dataclasses.replace(get(name), membership="cloud")
                        if name == "vn1" else get(name))  # a cloud node's row, without cloud's policy
    assert instance.record(c, "vn1", drained=True) is True
    assert instance.record(c, "vn2", drained=True) is False  # the profile's membership: dynamic


def test_failure_warns_in_one_sentence_and_the_migration_goes_on(ctx, caplog):
    c = ctx(fail=SlurmError("scontrol update nodename=vn1 failed: Invalid node name specified"))
    with caplog.at_level(logging.WARNING, logger="vcluster.slurm.instance"):
        assert mig.migrate(c, "vn1", host="h2")["result"] is True
    assert c.registry.get("vn1").state == "ready"
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message == ("Slurm did not record the instance of node vn1 (sacctmgr show instance will not list it): "
                       "scontrol update nodename=vn1 failed: Invalid node name specified")


def test_22_05_is_skipped_without_a_warning(ctx, caplog):
    c = ctx(has_fields=False)
    with caplog.at_level(logging.INFO, logger="vcluster.slurm.instance"):
        assert instance.record(c, "vn1") is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "has no InstanceId" in caplog.text


def test_a_bad_registry_value_is_a_warning_not_a_call(ctx, caplog):
    c = ctx()
    c.registry.update("vn1", host="h 1")
    with caplog.at_level(logging.WARNING, logger="vcluster.slurm.instance"):
        assert instance.record(c, "vn1") is False
    assert [call for call in c.slurm.calls if call[0] == "set_instance"] == []
    assert "Extra host 'h 1' is invalid" in caplog.text


# -- the controller's module -----------------------------------------------------------

@pytest.fixture
def module(monkeypatch):
    spec = importlib.util.spec_from_file_location("vcluster_test_slurm_module", ROOT / "_modules" / "slurm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__salt__ = {"config.get": lambda key, default=None: default}
    mod.__context__ = {}

    def use(run):
        monkeypatch.setattr(_client, "subprocess_runner", run)
        return mod
    return use


def test_module_on_22_05_says_why_and_runs_no_update(module):
    run = Runner("22.05")
    ret = module(run).set_instance("vn1", "vcluster-vn1", "1cpu-1024mb", extra=EXTRA)
    assert ret == {"set": False, "comment": "Slurm 22.05 has no InstanceId or InstanceType on nodes "
                                            "(23.11 and later); not recorded"}
    assert run.calls == []


def test_module_on_24_11_returns_the_node(module):
    run = Runner("24.11", node_line=_vn1("24.11", SET))
    ret = module(run).set_instance("vn1", "vcluster-vn1", "1cpu-1024mb", extra={"provider": "lxd", "host": "h1",
                                                                               "profile": "htc"})
    assert ret["set"] is True and ret["node"]["instance_id"] == "vcluster-vn1"
    assert run.calls[0][-1] == f"Extra={EXTRA}"


# -- VM time per job (sacct joined with sacctmgr show instance) ---------------------------

INSTANCES = """\
cl1|i-0001|m1.small|{"host":"h2","provider":"os1"}|2026-12-07T10:00:00|2026-12-07T11:00:00
cl1|i-0002|m1.small|{"host":"h1","provider":"os1"}|2026-12-07T12:00:00|Unknown
cl2|i-0003|m1.large||2026-12-07T10:30:00|2026-12-07T10:45:00
"""


def _ts(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()


def test_vm_time_joins_jobs_and_instances_by_node_and_overlap():
    sacct = ("7|cl[1-2]|2026-12-07T10:40:00|2026-12-07T10:50:00\n"   # both nodes, overlaps cl2's end
             "8|cl1|2026-12-07T10:59:00|2026-12-07T12:01:00\n"       # across two instances of cl1
             "9|cl1|2026-12-07T12:30:00|Unknown\n"                   # still running
             "10|None assigned|Unknown|Unknown\n"                    # never started
             "11|vn1|2026-12-07T10:00:00|2026-12-07T10:10:00\n")     # a node without instances
    rows = vmtime.job_vm_seconds(sacct, INSTANCES, now=_ts("2026-12-07T13:00:00"))
    assert rows == [
        ("7", "cl1", "i-0001", "m1.small", '{"host":"h2","provider":"os1"}', 600),
        ("7", "cl2", "i-0003", "m1.large", "", 300),
        ("8", "cl1", "i-0001", "m1.small", '{"host":"h2","provider":"os1"}', 60),
        ("8", "cl1", "i-0002", "m1.small", '{"host":"h1","provider":"os1"}', 60),
        ("9", "cl1", "i-0002", "m1.small", '{"host":"h1","provider":"os1"}', 1800),
    ]
    text = vmtime.report(sacct, INSTANCES, now=_ts("2026-12-07T13:00:00"))
    assert text.splitlines()[-3:] == ["7|total||||900", "8|total||||120", "9|total||||1800"]


def test_vm_time_refuses_output_of_another_format():
    with pytest.raises(SlurmError, match=r"sacct line '7\|cl1' does not have 4 \|-separated fields"):
        vmtime.job_vm_seconds("7|cl1\n", INSTANCES)
    with pytest.raises(SlurmError, match="job 7 Start '10:40' is not a time"):
        vmtime.job_vm_seconds("7|cl1|10:40|Unknown\n", INSTANCES)


def test_vm_time_command_line(tmp_path, capsys):
    (tmp_path / "jobs").write_text("7|cl2|2026-12-07T10:40:00|2026-12-07T10:50:00\n")
    (tmp_path / "inst").write_text(INSTANCES)
    assert vmtime.main([str(tmp_path / "jobs"), str(tmp_path / "inst")]) == 0
    assert capsys.readouterr().out == "7|cl2|i-0003|m1.large||300\n7|total||||300\n"
    assert vmtime.main([str(tmp_path / "missing"), str(tmp_path / "inst")]) == 1
    assert vmtime.main([]) == 2
