"""The wheel is the whole product: built, installed, and run by a real salt-master with no checkout.

The wheel is built from this checkout and installed, offline, into a
fresh virtualenv whose only vcluster is the wheel's (package_venv.py).

Then a site master configuration of its own (file_roots, a nodegroup, an
id), ``python -m vcluster.masterconf --write`` run from the installed
package (its file_roots point into site-packages), a real ``salt-master``
and ``salt-run`` from the fresh venv, run with ``-I`` in a directory
outside the checkout: ``vcluster.plan count=1 profile=htc`` answers from the
installed runner, state tree and example pillar. Plan changes nothing and
needs no container, so this test needs neither LXD nor Slurm. The same
wheel runs an expand and a retire on LXD in test_existing_site.py, where a
site's own master and controller minion use only the installed package.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zipfile

import pytest
import yaml

from tests.integration.package_venv import REPO, build_wheel, in_venv, make_venv, run

#: The library, data trees and module directories of the checkout, and where the wheel puts them
#: (a file setup.py's layout leaves out fails here).
TREES = {"vcluster": "vcluster", "salt": "vcluster/share/salt", "reactor": "vcluster/share/reactor", "pillar": "vcluster/share/pillar",
         "_modules": "vcluster/saltext/modules", "_states": "vcluster/saltext/states",
         "_runners": "vcluster/saltext/runners", "_pillar": "vcluster/saltext/pillar",
         "_engines": "vcluster/saltext/engines"}
CONTROLLER = "pkgctl"
MASTER_ID = "pkg_master"


def tracked(tree):
    """The checkout's files of ``tree`` (git's list: no caches, no local leftovers)."""
    out = run(["git", "-C", str(REPO), "ls-files", "-z", tree]).stdout
    return sorted(p[len(tree) + 1:] for p in out.split("\0") if p)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def work():
    # short: Salt's unix sockets live under it
    path = pathlib.Path(tempfile.mkdtemp(prefix="vpk", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(work):
    return build_wheel(work)


@pytest.fixture(scope="module")
def venv(work, wheel):
    """A fresh venv holding the wheel; dependencies linked from the main venv (package_venv.py)."""
    return make_venv(work / "venv", wheel)


def test_wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as whl:
        meta = whl.read("vcluster-0.1.0.dist-info/METADATA").decode()
        entry_points = whl.read("vcluster-0.1.0.dist-info/entry_points.txt").decode()
        names = set(whl.namelist())
    requires = sorted(line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: "))
    assert requires == sorted([
        "salt<3009,>=3008.0", "PyYAML", "python-hostlist>=2.0",
        'pylxd>=2.3; extra == "lxd"', 'openstacksdk>=4.0; extra == "openstack"', 'pyone>=6.8; extra == "opennebula"',
        'libvirt-python>=9.0; extra == "libvirt"',
        'pytest>=8; extra == "test"', 'pytest-salt-factories>=1.0.5; extra == "test"', 'cryptography; extra == "test"',
        'ruff>=0.6; extra == "test"',
    ])
    assert "License-Expression: Apache-2.0" in meta
    assert "vcluster-0.1.0.dist-info/licenses/LICENSE" in names
    assert "[salt.loader]\nvcluster = vcluster.loader:get_dirs" in entry_points
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_package_holds_every_tree_and_the_loader_finds_them_there(venv, work):
    site = venv["site"]
    for tree, inside in TREES.items():
        files = tracked(tree)
        assert files, tree
        for rel in files:
            installed = site / inside / rel
            assert installed.is_file(), f"{tree}/{rel} is not in the installed package"
            assert installed.read_bytes() == (REPO / tree / rel).read_bytes(), f"{tree}/{rel} differs"
    out = in_venv(venv, """
import importlib.metadata as md, json, salt.config, salt.loader, vcluster, vcluster.loader as l
dist = md.distribution("vcluster")
eps = [(ep.name, ep.value, ep.dist.name) for ep in md.entry_points(group="salt.loader")]
opts = salt.config.master_config("/nonexistent/master")
print(json.dumps({
    "vcluster": vcluster.__file__, "installed": l.installed(), "get_dirs": l.get_dirs(),
    "data": {n: l.data_dir(n) for n in l.DATA}, "entry_points": eps,
    "runner_dirs": salt.loader._module_dirs(opts, "runners", "runner"),
    "engine_dirs": salt.loader._module_dirs(opts, "engines"),
    "files": len(dist.files),
}))
""", cwd=work)
    got = json.loads(out.stdout)
    assert got["vcluster"] == str(site / "vcluster" / "__init__.py")
    assert got["installed"] is True
    # one vcluster entry point, the wheel's (salt-factories, linked from the main venv, has its own)
    assert [ep for ep in got["entry_points"] if "vcluster" in ep[1] or ep[2] == "vcluster"] == [
        ["vcluster", "vcluster.loader:get_dirs", "vcluster"]]
    assert got["get_dirs"] == {kind: [str(site / "vcluster" / "saltext" / kind)]
                               for kind in ("modules", "states", "runners", "pillar", "engines")}
    assert got["data"] == {n: str(site / "vcluster" / "share" / n) for n in ("salt", "reactor", "pillar")}
    assert str(site / "vcluster" / "saltext" / "runners") in got["runner_dirs"]
    assert str(site / "vcluster" / "saltext" / "engines") in got["engine_dirs"]
    assert not [d for d in got["runner_dirs"] + got["engine_dirs"] if d.startswith(str(REPO))]


def _wait_for_master(sock_dir, proc, log, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"salt-master exited {proc.returncode}: {log.read_text()[-3000:]}")
        if (sock_dir / "master_event_pub.ipc").exists() and (sock_dir / "workers.ipc").exists():
            return
        time.sleep(0.2)
    raise AssertionError(f"salt-master not up: {log.read_text()[-3000:]}")


def stop_group(proc, timeout=60):
    """SIGTERM the master's process group (its workers and engines), then wait until none is left."""
    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_master_runs_plan_from_the_installed_package_only(venv, work):
    etc = work / "etc"
    (etc / "master.d").mkdir(parents=True)
    site_states = work / "site-states"
    site_states.mkdir()
    (site_states / "motd.sls").write_text("motd:\n  test.nop\n")
    site_pillar = work / "site-pillar"
    site_pillar.mkdir()
    registry = work / "registry.sqlite"
    (site_pillar / "site.sls").write_text(yaml.safe_dump({
        "vcluster": {"controller": CONTROLLER, "master": "127.0.0.1", "registry": str(registry)}}))
    # the site's own master: its roots, a nodegroup, its id, private ports and directories
    (etc / "master").write_text(yaml.safe_dump({
        "id": MASTER_ID, "interface": "127.0.0.1", "user": "root", "root_dir": str(work),
        "publish_port": free_port(), "ret_port": free_port(), "worker_threads": 2,
        "file_roots": {"base": [str(site_states)]}, "nodegroups": {"web": "L@web1"},
        "log_file": str(work / "master.log"), "log_level_logfile": "info",
    }))
    add = in_venv(venv, "import sys, vcluster.masterconf as m; sys.exit(m.main(sys.argv[1:]))",
                  "--check", str(etc / "master"), "--write", str(etc / "master.d" / "vcluster.conf"),
                  "--controller", CONTROLLER, "--site", str(site_pillar), "--registry", str(registry),
                  "--pool-glob", "vnode*", cwd=work)
    assert f"# written: {etc / 'master.d' / 'vcluster.conf'}" in add.stdout
    written = yaml.safe_load((etc / "master.d" / "vcluster.conf").read_text())
    share = venv["site"] / "vcluster" / "share"
    assert written["file_roots"] == {"base": [str(site_states), str(share / "salt")]}
    assert written["pillar_roots"] == {"base": [str(share / "pillar"), str(site_pillar)]}
    assert written["nodegroups"] == {"web": "L@web1", "vcluster_cluster": f"L@{CONTROLLER} or vnode*",
                                     "vcluster_policy": f"L@{MASTER_ID},{CONTROLLER}"}
    assert "id" not in written and "interface" not in written
    assert str(REPO) not in (etc / "master.d" / "vcluster.conf").read_text()

    salt = "import sys, salt.scripts; sys.argv[0] = {!r}; salt.scripts.{}()"
    master = subprocess.Popen(
        [str(venv["python"]), "-I", "-c", salt.format("salt-master", "salt_master"), "-c", str(etc)],
        cwd=work, env={"PATH": "/usr/bin:/bin"}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_master(work / "var" / "run" / "salt" / "master", master, work / "master.log",
                         time.monotonic() + 120)

        def salt_run(*args):
            return in_venv(venv, salt.format("salt-run", "salt_run"), "-c", str(etc), "--out=json", *args,
                           cwd=work)

        synced = json.loads(salt_run("saltutil.sync_all").stdout)
        assert isinstance(synced, dict)  # nothing to sync: the modules come through the entry point
        ret = json.loads(salt_run("vcluster.plan", "count=1", "profile=htc").stdout)
        assert ret["result"] is True, ret
        assert ret["profile"] == "htc" and ret["provider"] == "lxd" and ret["count"] == 1
        assert ret["nodes"] == {"vnode001": "10.77.0.100"}  # the example pillar's pool, from the package
        assert ret["comment"] == "would create 1 node(s) of profile htc"
        # the master's engine, found only through the entry point's dirs in site-packages
        deadline = time.monotonic() + 60
        while "vcluster_tasks: liveness every" not in (work / "master.log").read_text():
            assert time.monotonic() < deadline, "the vcluster_tasks engine did not start"
            time.sleep(0.2)
        bad = subprocess.run([str(venv["python"]), "-I", "-c", salt.format("salt-run", "salt_run"), "-c", str(etc),
                              "--out=json", "vcluster.plan", "count=1", "profile=nope"],
                             capture_output=True, text=True, cwd=work, env={"PATH": "/usr/bin:/bin"}, timeout=300)
        assert bad.returncode != 0 and "nope" in json.loads(bad.stdout)["comment"]
    finally:
        stop_group(master)
    errors = [line for line in (work / "master.log").read_text().splitlines() if "[ERROR" in line]
    assert not errors, errors
