"""The Slurm version is read from a real controller once, and picks the parsers.

Against the harness's real slurmctld (Debian 12: Slurm 22.05): the client
runs the real commands through a runner that only records them, so the
test sees how often ``scontrol --version`` runs and what is parsed.
"""

import os
import subprocess

import pytest
from salt.exceptions import CommandExecutionError

from vcluster.errors import SlurmError
from vcluster.slurm import client, versions

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def harness_version(slurm_cluster):
    """What ``scontrol --version`` prints for the harness (the installed Slurm)."""
    out = subprocess.run(["scontrol", "--version"], env=slurm_cluster.env, capture_output=True, text=True,
                         check=True).stdout
    major, minor, micro = versions.parse_version(out)
    return f"{major}.{minor:02d}.{micro}"


class Recording:
    """The real subprocess runner, recording each command line."""

    def __init__(self):
        self.calls = []

    def __call__(self, argv, env, timeout, stdin=None):
        self.calls.append(list(argv))
        return client.subprocess_runner(argv, env, timeout, stdin)


def test_client_reads_the_version_once_and_parses_with_its_release(slurm_cluster, slurm_node):
    name = slurm_node()
    job = slurm_cluster.sbatch(wrap="sleep 120", nodelist=name, mem=50)
    try:
        slurm_cluster.wait_job(job, ("RUNNING",))
        runner = Recording()
        slurm = client.Slurm(conf=slurm_cluster.conf, runner=runner)
        jobs = slurm.jobs(nodes=name)
        assert [(j.id, j.state) for j in jobs] == [(job, "RUNNING")]
        assert slurm.node(name).state == ["ALLOCATED"]
        assert slurm.job_count(nodes=name) == 1
        version = harness_version(slurm_cluster)
        assert slurm.version() == version
        assert slurm.release is versions.release(version)
        assert [c for c in runner.calls if c[:2] == ["scontrol", "--version"]] == [["scontrol", "--version"]]
        assert runner.calls[0] == ["scontrol", "--version"]  # before anything else
        assert len(runner.calls) == 4  # version, squeue, scontrol show node, squeue
    finally:
        slurm_cluster.run("scancel", str(job), check=False)


def test_real_output_is_refused_by_another_releases_parser(slurm_cluster, slurm_node):
    """The controller's real squeue output, read as if the controller were another release."""
    version = harness_version(slurm_cluster)
    other = "24.11" if not version.startswith("24.11") else "22.05"
    runner = Recording()
    slurm = client.Slurm(conf=slurm_cluster.conf, runner=runner, release=other)
    with pytest.raises(SlurmError, match=f"squeue --json printed Slurm {version[:5]} output, but the "
                                         f"controller's Slurm is {other}"):
        slurm.jobs()
    assert ["scontrol", "--version"] not in runner.calls  # a known release is not read again


def test_salt_module_version_and_context(slurm_loaders, slurm_cluster):
    slurm_loaders.context.clear()
    mod = slurm_loaders.modules.slurm
    ret = mod.version()
    version = harness_version(slurm_cluster)
    assert ret["version"] == version and ret["series"] == version[:5]
    assert ret == {"version": version, **versions.release(version).to_dict()}
    # the release read is kept in the loader's __context__ for the next calls
    assert slurm_loaders.context["vcluster.slurm.release"] == {slurm_cluster.conf: versions.release(version)}
    mod.nodes()
    assert slurm_loaders.context["vcluster.slurm.release"] == {slurm_cluster.conf: versions.release(version)}


def test_salt_module_refuses_an_unsupported_version_in_one_sentence(slurm_loaders, slurm_cluster, tmp_path):
    """A fake ``scontrol`` first on PATH prints an old version; nothing else runs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    fake = bindir / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\necho 'slurm 21.08.8'\n")
    fake.chmod(0o755)
    slurm_loaders.context.clear()
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    try:
        with pytest.raises(CommandExecutionError) as exc:
            slurm_loaders.modules.slurm.nodes()
    finally:
        mp.undo()
        slurm_loaders.context.clear()
    assert str(exc.value) == ("Slurm 21.08.8 is not supported: vcluster supports 22.05, 23.02, 23.11, 24.05, "
                              "24.11, 25.05 and 25.11 (see docs/slurm-versions.md)")
    assert log.read_text().split("\n") == ["--version", ""]
