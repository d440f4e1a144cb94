"""The root helper Slurm's power programs call through sudo: strict arguments, one event."""

import json
import os
import pathlib
import subprocess
import sys

import jinja2
import pytest

FILES = pathlib.Path(__file__).resolve().parents[2] / "salt" / "slurm" / "files"


@pytest.fixture
def helper(tmp_path):
    record = tmp_path / "calls"
    fake = tmp_path / "salt-call"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n")
    fake.chmod(0o755)
    env = jinja2.Environment()
    env.filters["json"] = json.dumps
    text = env.from_string((FILES / "vcluster-slurm-event.jinja").read_text()).render(
        salt_call=str(fake), config_dir="/etc/salt", prefix="vcluster/slurm/power")
    script = tmp_path / "vcluster-slurm-event"
    script.write_text(text)

    def run(*args, stdin=b""):
        if record.exists():
            record.unlink()
        proc = subprocess.run([sys.executable, str(script), *args], input=stdin, capture_output=True, check=False)
        calls = record.read_text().splitlines() if record.exists() else None
        return proc.returncode, calls

    return run


def test_resume_with_job_file(helper):
    rc, argv = helper("resume", "tnode[01-02]", stdin=b'{"jobs":[{"job_id":1,"nodes":"tnode[01-02]"}]}')
    assert rc == 0
    assert argv[:6] == ["-c", "/etc/salt", "--retcode-passthrough", "--out", "quiet", "event.send"]
    assert argv[6] == "vcluster/slurm/power/resume"
    assert json.loads(argv[7][len("data="):]) == {
        "nodes": "tnode[01-02]", "resume_file": {"jobs": [{"job_id": 1, "nodes": "tnode[01-02]"}]}}


def test_suspend_without_input_and_non_json_input(helper):
    assert helper("suspend", "tnode03")[1][7] == 'data={"nodes": "tnode03"}'
    rc, argv = helper("resume", "tnode03", stdin=b"not json")
    assert rc == 0 and argv[7] == 'data={"nodes": "tnode03"}'


@pytest.mark.parametrize("args", [
    ("explode", "tnode01"),
    ("resume", "tnode01;reboot"),
    ("resume", "$(id)"),
    ("resume", "-c/tmp"),
    ("resume",),
    ("resume", "a", "b"),
])
def test_bad_arguments_fire_nothing(helper, args):
    rc, argv = helper(*args)
    assert rc != 0 and argv is None


def test_oversized_input_refused(helper):
    rc, argv = helper("resume", "tnode01", stdin=b" " * ((1 << 20) + 10))
    assert rc != 0 and argv is None


@pytest.mark.skipif(os.name != "posix", reason="sh")
def test_power_program_passes_resume_file_on_stdin(tmp_path):
    seen = tmp_path / "seen"
    fake_sudo_dir = tmp_path / "bin"
    fake_sudo_dir.mkdir()
    (fake_sudo_dir / "sudo").write_text(f"#!/bin/sh\nprintf '%s ' \"$@\" > {seen}\necho >> {seen}\ncat >> {seen}\n")
    (fake_sudo_dir / "sudo").chmod(0o755)
    text = jinja2.Template((FILES / "vcluster-slurm-power.jinja").read_text()).render(
        action="resume", slurm_key="ResumeProgram", helper="/usr/local/sbin/vcluster-slurm-event", sudoers="x")
    prog = tmp_path / "slurm-resume"
    prog.write_text(text)
    prog.chmod(0o755)
    job_file = tmp_path / "job.json"
    job_file.write_text('{"all_nodes":"tnode01"}')
    env = dict(os.environ, PATH=f"{fake_sudo_dir}:{os.environ['PATH']}", SLURM_RESUME_FILE=str(job_file))
    subprocess.run([str(prog), "tnode01"], env=env, check=True)
    assert seen.read_text().splitlines() == ["-n /usr/local/sbin/vcluster-slurm-event resume tnode01 ",
                                             '{"all_nodes":"tnode01"}']
