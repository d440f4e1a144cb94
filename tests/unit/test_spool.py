"""vcluster.spool and the vcluster_slurm_events engine on real files and real inotify."""

import importlib.util
import pathlib
import threading
import time

from vcluster.spool import Follower, Watch

REPO = pathlib.Path(__file__).resolve().parents[2]
LINE = "vcluster-slurm-event v1 start job=42 partition=batch nodes=host1"


def test_follower_starts_at_the_end_and_returns_complete_lines(tmp_path):
    spool = tmp_path / "events"
    spool.write_text("# header\nold line\n")
    follower = Follower(str(spool))
    assert follower.read() == []
    with spool.open("a") as fh:
        fh.write("one\ntw")
    assert follower.read() == ["one"]
    with spool.open("a") as fh:
        fh.write("o\n")
    assert follower.read() == ["two"]
    assert follower.read() == []


def test_follower_reads_a_new_or_truncated_file_from_its_start(tmp_path):
    spool = tmp_path / "events"
    follower = Follower(str(spool))  # not there yet
    assert follower.read() == []
    spool.write_text("# header\nfirst\n")
    assert follower.read() == ["# header", "first"]
    spool.write_text("x\n")  # truncated and rewritten
    assert follower.read() == ["x"]
    fresh = tmp_path / "events.new"
    fresh.write_text("new file, longer than the old one\n")
    fresh.rename(spool)  # replaced, as file.managed does (a new inode)
    assert follower.read() == ["new file, longer than the old one"]


def test_watch_wakes_on_append_and_times_out_otherwise(tmp_path):
    spool = tmp_path / "events"
    spool.write_text("")
    watch = Watch(str(tmp_path))
    try:
        assert watch.wait(0.05) is False
        with spool.open("a") as fh:
            fh.write("a\n")
        assert watch.wait(5) is True
        assert watch.wait(0.05) is False  # events were drained
    finally:
        watch.close()


def _engine():
    spec = importlib.util.spec_from_file_location("vcluster_slurm_events", REPO / "_engines" / "vcluster_slurm_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_engine_sends_each_new_event_line_at_once(tmp_path, caplog):
    engine = _engine()
    sent = []
    engine.__salt__ = {"event.send": lambda tag, data: sent.append((tag, data, time.monotonic()))}
    spool = tmp_path / "spool" / "events"  # the directory appears later, as the state makes it
    # an idle check of an hour: only inotify can wake the engine within the test's deadline
    caplog.set_level("INFO")
    threading.Thread(target=engine.start, kwargs={"spool": str(spool), "idle_check": 3600}, daemon=True).start()
    deadline = time.monotonic() + 60
    # lines already there when the engine starts are old news: write after it started
    while "following" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    spool.parent.mkdir()
    spool.write_text("# vcluster Slurm job events\n")
    with spool.open("a") as fh:
        fh.write("not an event\n" + LINE + "\n")
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(tag, data) for tag, data, _ in sent] == [("vcluster/slurm/job", {"raw": LINE})]
