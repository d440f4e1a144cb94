"""The controller's ``slurm`` execution module (``_modules/slurm.py``) without a controller.

The module is loaded as Salt would load it (its ``__salt__`` and
``__context__`` given here); the Slurm commands run by a recorded runner
answering ``scontrol --version`` with the 24.11 capture
(tests/unit/data/slurm/24.11/), because the unit tests run without
slurmctld. tests/functional/test_slurm_module.py runs the same functions
through Salt's loader against a real one.
"""

import importlib.util
import pathlib

import pytest
from salt.exceptions import CommandExecutionError

from vcluster.slurm import client as _client

ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSION = (ROOT / "tests" / "unit" / "data" / "slurm" / "24.11" / "scontrol_version.txt").read_text(encoding="utf-8")


class Runner:
    """Answers ``scontrol --version``; every other command succeeds and is recorded."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or {}

    def __call__(self, argv, env, timeout, stdin=None):
        if argv == ["scontrol", "--version"]:
            return 0, VERSION, ""
        self.calls.append(list(argv))
        return self.fail.get(tuple(argv[:3]), (0, "", ""))


@pytest.fixture
def slurm(monkeypatch):
    spec = importlib.util.spec_from_file_location("vcluster_unit_slurm_module", ROOT / "_modules" / "slurm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__salt__ = {"config.get": lambda key, default=None: default}
    mod.__context__ = {}
    mod.runner = Runner()
    monkeypatch.setattr(_client, "subprocess_runner", mod.runner)
    return mod


def test_update_node_addr(slurm):
    assert slurm.update_node_addr("vn1", "10.77.0.121") is True
    assert slurm.runner.calls == [["scontrol", "update", "nodename=vn1", "nodeaddr=10.77.0.121"]]


def test_reserve_for_job_and_delete_reservation(slurm):
    assert slurm.reserve_for_job("42", nodes="vn[7-8]", user="alice") == {"reservation": "vcjob42",
                                                                         "nodes": ["vn7", "vn8"]}
    assert slurm.delete_reservation("vcjob42") is True
    assert slurm.runner.calls == [
        ["scontrol", "create", "reservation", "ReservationName=vcjob42", "Nodes=vn7,vn8", "StartTime=now",
         "Duration=infinite", "Users=alice", "Flags=IGNORE_JOBS"],
        ["scontrol", "update", "JobId=42", "ReservationName=vcjob42", "ReqNodeList=vn7,vn8"],
        ["scontrol", "release", "42"],
        ["scontrol", "delete", "ReservationName=vcjob42"],
    ]


@pytest.mark.parametrize(("fun", "args", "message"), [
    ("update_node_addr", ("vn1", "10.0.0.1 state=down"),
     "node address '10.0.0.1 state=down' is invalid: use an IP address or a host name"),
    ("update_node_addr", ("vn1;x", "10.0.0.1"),
     "node name 'vn1;x' is invalid: use a letter then up to 62 letters, digits, '-' or '_'"),
    ("reserve_for_job", ("4 2", "vn7", "alice"), "job id '4 2' is invalid: use a number such as 42 or 42_3"),
    ("reserve_for_job", ("42", "", "alice"),
     "nodes '' is invalid: give at least one node name (a list or a hostlist)"),
    ("reserve_for_job", ("42", "vn[7", "alice"), "bad hostlist 'vn[7'"),
    ("reserve_for_job", ("42", "vn7", "al ice"),
     "user 'al ice' is invalid: use a user name of letters, digits, '_', '.', '@' or '-'"),
    ("delete_reservation", ("vcjob42 Flags=x",),
     "reservation name 'vcjob42 Flags=x' is invalid: use up to 64 letters, digits, '_', '.' or '-'"),
])
def test_bad_values_are_refused_in_one_sentence_before_any_command(slurm, fun, args, message):
    with pytest.raises(CommandExecutionError) as err:
        getattr(slurm, fun)(*args)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert slurm.runner.calls == []


def test_slurms_refusal_comes_back_in_its_words(slurm):
    slurm.runner.fail[("scontrol", "delete", "ReservationName=vcjob7")] = (
        1, "", "delete_reservation ReservationName=vcjob7: Requested reservation is invalid\n")
    with pytest.raises(CommandExecutionError, match="^scontrol delete ReservationName=vcjob7 failed: delete_reservation "
                                                    "ReservationName=vcjob7: Requested reservation is invalid$"):
        slurm.delete_reservation("vcjob7")


def test_every_public_function_has_a_cli_example(slurm):
    funcs = [n for n, f in vars(slurm).items() if callable(f) and not n.startswith("_")
             and getattr(f, "__module__", None) == slurm.__name__]
    assert {"update_node_addr", "reserve_for_job", "delete_reservation"} <= set(funcs)
    missing = [n for n in funcs if "CLI Example" not in (getattr(slurm, n).__doc__ or "")]
    assert missing == []
