"""An admin's day one: status, test=True, history and metrics, as a user reads them.

The registry, the policy, Salt's own ``table`` outputter and the Prometheus
parser are real; Slurm, the minions and the provider are the in-memory
stand-ins of ``test_suspend`` (they record every call, so a dry run that
asks for a change is caught).
"""

import copy
import importlib.util
import os
import re
import time
import types

import pytest

from tests.unit.test_suspend import PILLAR, FakeEvents, FakeKeys, FakeProvider, FakeSalt, FakeSlurm
from vcluster import history, metrics, reconcile
from vcluster import migrate as mig
from vcluster import policy as _policy
from vcluster import retire as vretire
from vcluster import status as vstatus
from vcluster import suspend_resume as sus
from vcluster.context import Context
from vcluster.errors import PolicyError, ProviderError, SlurmError
from vcluster.providers.base import Status
from vcluster.registry import Registry

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "..", "..", "_runners", "vcluster.py")


class Events(FakeEvents):
    """Records progress messages too."""

    def __init__(self):
        super().__init__()
        self.progressed = []

    def progress(self, message, **data):
        self.progressed.append(message)


class Provider(FakeProvider):
    def __init__(self):
        super().__init__()
        self.down = None

    def list(self, cluster):
        if self.down:
            raise ProviderError(self.down)
        return super().list(cluster)

    def delete(self, ids):
        self.calls.append(("delete", list(ids)))


class Slurm(FakeSlurm):
    def __init__(self):
        super().__init__()
        self.down = None

    def nodes(self):
        if self.down:
            raise SlurmError(self.down)
        return super().nodes()

    def jobs(self, nodes=None):
        if self.down:
            raise SlurmError(self.down)
        return super().jobs(nodes)

    def requeue(self, job_id):
        self.calls.append(("requeue", job_id))

    def delete_node(self, name):
        self.calls.append(("delete_node", name))
        self.nodes_.pop(name, None)

    def update_node_addr(self, name, address):
        self.calls.append(("update_node_addr", name, address))


class Keys(FakeKeys):
    def __init__(self):
        self.deleted = []

    def delete(self, name):
        self.deleted.append(name)


@pytest.fixture
def ctx(tmp_path):
    pol = _policy.load(copy.deepcopy(PILLAR))
    reg = Registry(str(tmp_path / "r.sqlite"))
    slurm, prov, events = Slurm(), Provider(), Events()
    salt = FakeSalt({})
    c = Context(policy=pol, registry=reg, keys=Keys(), slurm=slurm, salt=salt, events=events)
    c._providers["lxd"] = prov
    for n in reg.allocate(pol.pools["p"], "htc", "lxd", 3, "r1", actor="test"):
        reg.transition(n.name, "booting", instance_id=n.name, host="h1", actor="test")
        reg.transition(n.name, "joining", actor="reactor")
        reg.transition(n.name, "ready", actor="reactor")
        slurm.nodes_[n.name] = {"state": ["IDLE"], "reason": ""}
        prov.status[n.name] = Status.RUNNING
        salt.alive[n.name] = True
    yield c
    reg.close()


def snapshot(c):
    """Everything a change would touch: registry rows, audit, job map, Slurm, provider, events."""
    db = c.registry._db
    return {
        "nodes": [tuple(r) for r in db.execute("SELECT * FROM nodes ORDER BY id")],
        "audit": db.execute("SELECT COUNT(*) FROM audit").fetchone()[0],
        "jobs": [tuple(r) for r in db.execute("SELECT * FROM jobs ORDER BY node, job_id")],
        "slurm": (copy.deepcopy(c.slurm.nodes_), copy.deepcopy(c.slurm.jobs_), list(c.slurm.calls)),
        "provider": (dict(c.provider("lxd").status), list(c.provider("lxd").calls)),
        "events": list(c.events.fired),
        "stamp": reconcile.last_run(c.registry),
    }


# -- status ----------------------------------------------------------------------------


def test_status_lists_only_jobs_alive_in_slurm(ctx):
    ctx.slurm.jobs_[1] = {"id": 1, "state": "COMPLETED", "nodes": ["vn1", "vn2"], "partition": "htc"}
    ctx.slurm.jobs_[2] = {"id": 2, "state": "RUNNING", "nodes": ["vn2"], "partition": "htc"}
    ctx.slurm.jobs_[3] = {"id": 3, "state": "CANCELLED", "nodes": ["vn3"], "partition": "htc"}
    ctx.slurm.jobs_[4] = {"id": 4, "state": "SUSPENDED", "nodes": ["vn3"], "partition": "htc"}
    ret = vstatus.status(ctx)
    assert ret["result"] is True and ret["unknown"] == []
    assert {n: v["jobs"] for n, v in ret["nodes"].items()} == {"vn1": [], "vn2": [2], "vn3": [4]}
    assert ret["nodes"]["vn1"]["slurm"] == "IDLE" and ret["nodes"]["vn1"]["instance_state"] == "running"
    assert ret["comment"] == "3 node(s)"


def test_status_says_slurm_could_not_be_asked_instead_of_absent(ctx):
    ctx.slurm.down = "the Slurm controller's minion ctl did not answer slurm.nodes"
    ret = vstatus.status(ctx)
    assert ret["result"] is False
    assert ret["unknown"] == ["slurm"]
    assert {v["slurm"] for v in ret["nodes"].values()} == {"unknown"}
    assert {v["jobs"] is None for v in ret["nodes"].values()} == {True}
    assert ret["comment"] == ("3 node(s); Slurm could not be asked (the Slurm controller's minion ctl did not "
                              "answer slurm.nodes): Slurm state and jobs are unknown")
    # the provider was still asked
    assert {v["instance_state"] for v in ret["nodes"].values()} == {"running"}


def test_status_says_the_provider_could_not_be_asked(ctx):
    ctx.provider("lxd").down = "LXD at https://127.0.0.1:8443 refused the connection"
    ctx.provider("lxd").status.pop("vn3")  # and a vanished instance would not be taken for absent
    ret = vstatus.status(ctx)
    assert ret["result"] is False and ret["unknown"] == ["provider lxd"]
    assert ret["comment"].endswith("provider lxd could not be asked (LXD at https://127.0.0.1:8443 refused "
                                   "the connection): the instance status of its nodes is unknown")
    assert {v["instance_state"] for v in ret["nodes"].values()} == {"unknown"}
    assert ret["nodes"]["vn1"]["slurm"] == "IDLE"
    ctx.provider("lxd").down = None
    assert vstatus.status(ctx)["nodes"]["vn3"]["instance_state"] == "absent"


def load_runner(output):
    """The runner module as Salt loads it, with ``--out`` set as salt-run would."""
    spec = importlib.util.spec_from_file_location("vcluster_runner_under_test", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__opts__ = {"output": output}
    mod.__context__ = {}
    return mod


def table_text(ret):
    import salt.output.table_out as table_out

    return table_out.output(ret, opts={"color": False})


def cell_text(text, first):
    """The one-column table rows from the one starting with ``first`` on (Salt wraps long cells)."""
    rows = [line.strip()[1:-1].strip() for line in text.splitlines() if line.strip().startswith("| ")]
    start = next(i for i, r in enumerate(rows) if r.startswith(first))
    out = []
    for r in rows[start:]:
        if "|" in r:
            break
        out.append(r)
    return out


def test_status_renders_with_salts_table_outputter(ctx):
    ctx.slurm.jobs_[2] = {"id": 2, "state": "RUNNING", "nodes": ["vn2"], "partition": "htc"}
    ctx.slurm.jobs_[1] = {"id": 1, "state": "COMPLETED", "nodes": ["vn1"], "partition": "htc"}
    runner = load_runner("table")
    ret = runner._table(vstatus.status(ctx), vstatus.status_rows(vstatus.status(ctx)))
    text = table_text(ret)
    lines = [line.strip() for line in text.splitlines()]
    header = next(line for line in lines if "NODE" in line)
    assert re.split(r"\s*\|\s*", header.strip("| ")) == list(c.upper() for c in vstatus.STATUS_COLUMNS)
    row = next(line for line in lines if line.startswith("|") and "vn2" in line)
    assert re.split(r"\s*\|\s*", row.strip("| ")) == [
        "vn2", "ready", "IDLE", "vn2 (running)", "2", "10.9.0.11", "htc", "h1", "-"]
    row1 = next(line for line in lines if line.startswith("|") and "vn1 " in line)
    assert re.split(r"\s*\|\s*", row1.strip("| "))[4] == "-"  # job 1 ended: not listed
    assert "3 node(s)" in text
    # the plain (nested) return keeps its dict shape
    assert set(vstatus.status(ctx)["nodes"]) == {"vn1", "vn2", "vn3"}


def test_status_table_with_slurm_unknown_says_so(ctx):
    ctx.slurm.down = "slurmctld: Unable to contact slurm controller (connect failure)"
    ret = vstatus.status(ctx)
    text = table_text(load_runner("table")._table(ret, vstatus.status_rows(ret)))
    row = next(line for line in text.splitlines() if line.strip().startswith("|") and "vn1" in line)
    assert re.split(r"\s*\|\s*", row.strip().strip("| "))[1:5] == ["ready", "unknown", "vn1 (running)", "unknown"]
    summary = " ".join(cell_text(text, "3 node(s)"))
    assert summary == ("3 node(s); Slurm could not be asked (slurmctld: Unable to contact slurm controller "
                       "(connect failure)): Slurm state and jobs are unknown")


def test_the_nested_status_of_a_real_runner_call_fails_the_table_outputter_no_more(ctx):
    """The TypeError of issue 17: a list of job ids (ints) inside the nodes."""
    ctx.slurm.jobs_[2] = {"id": 2, "state": "RUNNING", "nodes": ["vn2"], "partition": "htc"}
    raw = vstatus.status(ctx)
    with pytest.raises(TypeError):
        table_text(raw)  # Salt's table outputter on the nested dict: what --out=table used to get
    assert "vn2" in table_text(load_runner("table")._table(raw, vstatus.status_rows(raw)))


# -- test=True changes nothing ---------------------------------------------------------------


def test_retire_test_mode_says_what_and_changes_nothing(ctx):
    ctx.slurm.jobs_[5] = {"id": 5, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    before = snapshot(ctx)
    ret = vretire.retire(ctx, "vn[1-2]", test=True)
    assert snapshot(ctx) == before
    assert ret["result"] is None and ret["test"] is True
    assert ret["comment"] == (
        "would retire 2 node(s): would drain vn1 and wait up to 600 s for its job(s) 5 to end, then delete "
        "instance vn1 and release it; would drain vn2 (no job runs on it), delete instance vn2 and release it")
    forced = vretire.retire(ctx, "vn1", force=True, test=True)
    assert forced["nodes"]["vn1"] == "would drain vn1, requeue its job(s) 5, then delete instance vn1 and release it"
    assert snapshot(ctx) == before


def test_retire_test_mode_validates_first(ctx):
    with pytest.raises(PolicyError, match="'vn9' is not in the registry"):
        vretire.retire(ctx, "vn9", test=True)
    with pytest.raises(PolicyError, match="test must be"):
        vretire.retire(ctx, "vn1", test="maybe")


def test_shrink_test_mode_picks_idle_nodes_and_changes_nothing(ctx):
    ctx.slurm.jobs_[5] = {"id": 5, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    before = snapshot(ctx)
    ret = vretire.shrink(ctx, 2, "htc", test=True)
    assert snapshot(ctx) == before
    assert ret["result"] is None and sorted(ret["nodes"]) == ["vn2", "vn3"]


def test_suspend_resume_migrate_test_mode_change_nothing(ctx):
    ctx.slurm.jobs_[7] = {"id": 7, "state": "RUNNING", "nodes": ["vn1"], "partition": "htc"}
    before = snapshot(ctx)
    ret = sus.suspend(ctx, "vn1", test=True)
    assert snapshot(ctx) == before and ret["result"] is None
    assert ret["comment"] == ("would suspend 1 of 1 node(s): would drain vn1, suspend its running job(s) 7 and "
                              "suspend its instance vn1 (provider lxd)")
    ret = mig.migrate(ctx, "vn2", host="h2", test=True)
    assert snapshot(ctx) == before and ret["result"] is None
    assert ret["comment"] == ("would move vn2 (ready, instance vn2) from h1 to h2 (live=True); the registry and "
                              "Slurm's NodeAddr would follow and it would stay ready")
    # a real suspend, then resume test=True leaves it suspended
    assert sus.suspend(ctx, "vn1")["result"] is True
    before = snapshot(ctx)
    ret = sus.resume(ctx, "vn1", test=True)
    assert snapshot(ctx) == before and ret["result"] is None
    assert ret["comment"] == ("would resume 1 of 1 node(s): would resume the instance vn1 of vn1, wait up to "
                              f"{ctx.policy.suspend.resume_timeout} s for its minion and slurmd, resume its "
                              "suspended job(s) 7 and lift vcluster's drain")
    assert ctx.registry.get("vn1").state == "suspended"


def test_reconcile_test_mode_says_each_repair_and_changes_nothing(ctx):
    ctx.provider("lxd").status["stray"] = Status.RUNNING  # an instance no node owns
    ctx.slurm.nodes_["vn4"] = {"state": ["IDLE"], "reason": "", "dynamic": True}  # a pool name without a node
    before = snapshot(ctx)
    ret = reconcile.run(ctx, apply=True, test=True)
    assert snapshot(ctx) == before
    assert ret["result"] is None and ret["test"] is True
    assert {w["kind"]: w["would"] for w in ret["would"]} == {
        "orphan_instance": "would delete instance stray of provider lxd (no active registry node)",
        "orphan_slurm_node": "would requeue the jobs of Slurm node vn4 (IDLE, no active node) and remove it",
    }
    assert ret["comment"].startswith("2 inconsistency(ies) found; would delete instance stray")
    with pytest.raises(PolicyError, match="test must be False with scheduled=True"):
        reconcile.run(ctx, scheduled=True, test=True)


# -- progress -------------------------------------------------------------------------------


def test_suspend_resume_migrate_reconcile_send_progress(ctx):
    sus.suspend(ctx, "vn[1-2]")
    assert ctx.events.progressed == ["suspending vn1 (1 of 2)", "vn1 suspended (suspend)",
                                     "suspending vn2 (1 of 2)".replace("1 of", "2 of"), "vn2 suspended (suspend)"]
    ctx.events.progressed.clear()
    sus.resume(ctx, "vn1")
    assert ctx.events.progressed == ["resuming vn1 (1 of 1)", "vn1 ready"]
    ctx.events.progressed.clear()
    mig.migrate(ctx, "vn3", host="h2")
    assert ctx.events.progressed == ["migrating vn3 from h1 to h2", "vn3 moved to h2"]
    ctx.events.progressed.clear()
    ctx.provider("lxd").status["stray"] = Status.RUNNING
    reconcile.reconcile(ctx, apply=True)
    assert ctx.events.progressed == ["reconcile: 1 inconsistency(ies) found; repairing them",
                                     "reconcile: orphan_instance stray: deleted"]


# -- history -----------------------------------------------------------------------------


def test_history_reads_the_audit_log_as_sentences(ctx):
    vretire.retire(ctx, "vn2")
    ret = history.history(ctx.registry.path, node="vn2")
    assert ret["result"] is True and ret["count"] == 7
    lines = [history.line(e) for e in ret["events"]]
    assert [re.sub(r"^\S+ ", "", line) for line in lines] == [
        "vn2 (new) -> allocated by test: request r1",
        "vn2 allocated -> booting by test",
        "vn2 booting -> joining by reactor",
        "vn2 joining -> ready by reactor",
        "vn2 ready -> draining by vcluster: retire",
        "vn2 draining -> retiring by vcluster",
        "vn2 retiring -> released by vcluster: retired",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", lines[0].split(" ")[0])
    assert ret["comment"] == "7 transition(s) of node vn2"


def test_history_limit_since_and_bad_values(ctx):
    everything = history.read(ctx.registry.path)
    assert len(everything) == 12 and everything == sorted(everything, key=lambda e: e["ts"])
    assert history.read(ctx.registry.path, limit=2) == everything[-2:]
    assert history.read(ctx.registry.path, since="1h") == everything
    assert history.read(ctx.registry.path, since=time.time() + 60) == []
    assert history.parse_since("2026-12-06T10:00:00", now=0) == 1796551200.0
    assert history.parse_since("90m", now=10000) == 10000 - 5400
    for bad, field in (("yesterday", "since"), ("", "since")):
        with pytest.raises(PolicyError, match=f"^{field} must be"):
            history.read(ctx.registry.path, since=bad)
    with pytest.raises(PolicyError, match="limit must be a whole number from 1 to 10000, got 0"):
        history.read(ctx.registry.path, limit=0)
    assert history.history(ctx.registry.path, node="vn9")["comment"] == (
        "0 transition(s) of node vn9; the registry has no record of vn9")


def test_history_table(ctx):
    ret = history.history(ctx.registry.path, node="vn1", limit=2)
    text = table_text(load_runner("table")._table(ret, history.rows(ret)))
    rows = [re.split(r"\s*\|\s*", line.strip().strip("| ")) for line in text.splitlines()
            if line.strip().startswith("|")]
    rows = rows[[r[0] for r in rows].index("TIME"):]
    assert rows[0] == ["TIME", "NODE", "FROM", "TO", "ACTOR", "REASON"]
    assert [r[1:] for r in rows[1:]] == [["vn1", "booting", "joining", "reactor", "-"],
                                         ["vn1", "joining", "ready", "reactor", "-"]]


def test_history_never_writes(ctx, tmp_path):
    path = ctx.registry.path
    os.chmod(path, 0o400)
    try:
        assert history.read(path, limit=1)
    finally:
        os.chmod(path, 0o600)
    with pytest.raises(Exception, match="cannot be read"):
        history.read(str(tmp_path / "none.sqlite"))
    assert not os.path.exists(tmp_path / "none.sqlite")


# -- metrics -------------------------------------------------------------------------------


def parse_exposition(text):
    """A strict reader of the Prometheus text format 0.0.4: ``{family: (type, {(name, labels): value})}``.

    Fails on anything the format does not allow: a sample before its TYPE,
    a TYPE twice, bad names, bad label syntax, unescaped quotes, a value
    that is not a float, histogram buckets that are not cumulative or lack
    ``+Inf``, a missing final newline.
    """
    assert text.endswith("\n"), "the text must end with a newline"
    name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')
    sample_re = re.compile(rf"^({name_re})(\{{.*\}})? (\S+)$")
    families, current = {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            _, _, name, *_ = line.split(" ", 3)
            assert re.fullmatch(name_re, name), line
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert parts[2] not in families, f"TYPE twice: {line}"
            current = parts[2]
            families[current] = (parts[3], {})
            continue
        assert not line.startswith("#") and line.strip(), f"stray line {line!r}"
        m = sample_re.match(line)
        assert m, f"not a sample: {line!r}"
        name, labels_text, value = m.groups()
        labels = ()
        if labels_text:
            inner = labels_text[1:-1]
            pairs = label_re.findall(inner)
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == inner, f"bad labels: {line!r}"
            labels = tuple(pairs)
        float(value)  # +Inf, NaN and numbers parse; anything else raises
        kind, samples = families[current]
        suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
        assert any(name == current + s for s in suffixes), f"{name} outside its family {current}"
        assert (name, labels) not in samples, f"sample twice: {line!r}"
        samples[(name, labels)] = float(value)
    for fam, (kind, samples) in families.items():
        if kind != "histogram":
            continue
        series = {}
        for (name, labels), value in samples.items():
            if name.endswith("_bucket"):
                rest = tuple(p for p in labels if p[0] != "le")
                le = dict(labels)["le"]
                series.setdefault(rest, []).append((float(le), value))
        for rest, buckets in series.items():
            values = [v for _, v in sorted(buckets)]
            assert values == sorted(values), f"{fam}{rest}: buckets not cumulative"
            assert sorted(buckets)[-1][0] == float("inf"), f"{fam}{rest}: no +Inf bucket"
            assert samples[(fam + "_count", rest)] == values[-1]
    return families


def test_metrics_are_valid_exposition_text_with_the_right_numbers(ctx):
    reg = ctx.registry
    # vn1: suspended for a while, now ready again; vn2 failed
    reg.transition("vn1", "suspending")
    reg.transition("vn1", "suspended")
    reg._db.execute("UPDATE audit SET ts = ts - 100 WHERE node = 'vn1' AND to_state = 'suspended'")
    reg.transition("vn1", "resuming")
    reg.transition("vn1", "ready")
    reg.transition("vn2", "draining")
    n4 = reg.allocate(ctx.policy.pools["p"], "htc", "lxd", 1, "r2")[0]
    reg.transition(n4.name, "failed", reason="did not join Slurm within 300 s")
    body = metrics.text(ctx.registry.path, profiles=["htc", "other"])
    fams = parse_exposition(body)
    assert fams["vcluster_nodes"][0] == "gauge"
    nodes = fams["vcluster_nodes"][1]
    assert nodes[("vcluster_nodes", (("profile", "htc"), ("state", "ready")))] == 2
    assert nodes[("vcluster_nodes", (("profile", "htc"), ("state", "draining")))] == 1
    assert nodes[("vcluster_nodes", (("profile", "htc"), ("state", "failed")))] == 1
    assert nodes[("vcluster_nodes", (("profile", "other"), ("state", "ready")))] == 0
    assert fams["vcluster_node_failures_total"][1][("vcluster_node_failures_total", (("profile", "htc"),))] == 1
    susp = fams["vcluster_suspended_seconds_total"][1][("vcluster_suspended_seconds_total", (("profile", "htc"),))]
    assert 99 <= susp <= 110
    expand = fams["vcluster_expand_duration_seconds"]
    assert expand[0] == "histogram"
    assert expand[1][("vcluster_expand_duration_seconds_count", (("profile", "htc"),))] == 3
    join = fams["vcluster_join_duration_seconds"][1]
    assert join[("vcluster_join_duration_seconds_bucket", (("profile", "htc"), ("le", "10")))] == 3
    assert join[("vcluster_join_duration_seconds_count", (("profile", "other"),))] == 0


def test_metrics_parse_with_prometheus_client_too(ctx):
    parser = pytest.importorskip("prometheus_client.parser")
    body = metrics.text(ctx.registry.path, profiles=["htc"])
    fams = {f.name: f for f in parser.text_string_to_metric_families(body)}
    assert fams["vcluster_nodes"].type == "gauge"
    assert fams["vcluster_expand_duration_seconds"].type == "histogram"
    assert fams["vcluster_node_failures"].type == "counter"  # the client drops _total from counter names
    ready = [s for s in fams["vcluster_nodes"].samples if s.labels == {"profile": "htc", "state": "ready"}]
    assert [s.value for s in ready] == [3.0]


def test_metrics_label_values_are_escaped():
    fam = metrics._Family("x", "gauge", 'help with \\ and "quotes"')
    fam.add({"profile": 'a"b\\c\nd'}, 1)
    text = "\n".join(fam.render()) + "\n"
    parse_exposition(text)
    assert 'x{profile="a\\"b\\\\c\\nd"} 1' in text


def test_metrics_file_is_written_atomically_and_checked(ctx, tmp_path):
    out = tmp_path / "textfile"
    out.mkdir()
    path = str(out / "vcluster.prom")
    ret = metrics.export(ctx.registry.path, path=path, profiles=["htc"])
    assert ret["result"] is True and ret["comment"] == f"wrote {ret['samples']} sample(s) to {path}"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    parse_exposition(open(path, encoding="utf-8").read())
    inode = os.stat(path).st_ino
    metrics.export(ctx.registry.path, path=path, profiles=["htc"])
    assert os.stat(path).st_ino != inode  # replaced by rename, never rewritten in place
    assert sorted(os.listdir(out)) == ["vcluster.prom"]  # no temporary file left
    for bad, why in ((str(out / "vcluster.txt"), "must end in .prom"), ("vcluster.prom", "must be an absolute"),
                     (str(tmp_path / "nodir" / "v.prom"), "must be in an existing directory")):
        with pytest.raises(PolicyError, match=why):
            metrics.export(ctx.registry.path, path=bad)


def test_the_periodic_metrics_task_writes_the_pillar_path_every_interval(ctx, tmp_path, caplog):
    from vcluster import periodic

    path = str(tmp_path / "vcluster.prom")
    clock = [1000.0]
    (task,) = [t for t in periodic.tasks() if t.name == "metrics"]
    task = periodic.Task("metrics", task.interval, periodic.MetricsFile(clock=lambda: clock[0]))
    assert task.interval == periodic.METRICS_TICK == 10

    def with_metrics(**conf):
        pillar = copy.deepcopy(PILLAR)
        pillar["metrics"] = conf
        # run_once closes each context it gets: the registry stays open here
        return types.SimpleNamespace(policy=_policy.load(pillar), registry=ctx.registry, close=lambda: None)

    # no path in pillar: nothing written
    ret = periodic.run_once(task, lambda actor: with_metrics())
    assert ret == {"result": True, "skipped": True, "comment": "vcluster:metrics:path is not set"}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".prom")]
    conf = with_metrics(path=path, interval=30)
    ret = periodic.run_once(task, lambda actor: conf)
    assert ret["result"] is True and os.path.exists(path)
    nodes = parse_exposition(open(path, encoding="utf-8").read())["vcluster_nodes"][1]
    assert nodes[("vcluster_nodes", (("profile", "htc"), ("state", "ready")))] == 3
    inode = os.stat(path).st_ino
    clock[0] += 20  # within the interval (less half a tick): not written again
    assert periodic.run_once(task, lambda actor: conf)["comment"] == "last write 20 s ago, interval 30 s"
    assert os.stat(path).st_ino == inode
    clock[0] += 10
    assert periodic.run_once(task, lambda actor: conf)["result"] is True
    assert os.stat(path).st_ino != inode
    # a directory that does not exist is one logged sentence per tick, never a crash
    conf = with_metrics(path=str(tmp_path / "nodir" / "v.prom"))
    assert periodic.run_once(task, lambda actor: conf) is None
    assert "must be in an existing directory" in caplog.text


@pytest.mark.parametrize("conf, why", [
    ({"path": "vcluster.prom"}, "vcluster:metrics:path must be an absolute file path ending in .prom, got "
                                "'vcluster.prom'"),
    ({"path": "/var/lib/x/vcluster.txt"}, "vcluster:metrics:path must end in .prom"),
    ({"path": "/var/lib/x/.prom"}, "vcluster:metrics:path must end in .prom"),
    ({"interval": 0}, "vcluster:metrics:interval must be a positive number, got 0"),
    ({"every": 5}, "vcluster:metrics:every is not a known key, accepted keys are interval, path"),
])
def test_the_metrics_pillar_is_validated(conf, why):
    pillar = copy.deepcopy(PILLAR)
    pillar["metrics"] = conf
    with pytest.raises(PolicyError, match=re.escape(why)):
        _policy.load(pillar)


def test_a_failed_call_shows_its_sentence_in_the_table_view():
    runner = load_runner("table")
    ret = runner._table({"result": False, "comment": "limit must be a whole number from 1 to 10000, got 0",
                         "retcode": 1}, None)
    assert ret == {"summary": ["limit must be a whole number from 1 to 10000, got 0"], "retcode": 1}
    assert " ".join(cell_text(table_text(ret), "limit must be")) == (
        "limit must be a whole number from 1 to 10000, got 0")
