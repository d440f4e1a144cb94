"""vcluster as a site installs it: the wheel built from this checkout, in a fresh virtualenv.

Used by test_package.py and the existing-site test (site_stack.py). The
wheel is built as a release would (``pip wheel . --no-deps``) and installed,
offline, into a fresh virtualenv. Its dependencies are not downloaded
again: the fresh venv gets links to the packages of the main venv (salt
3008.3 and the provider clients, what ``scripts/install-deps.sh``
installed; installing Salt from scratch compiles timelib and takes
minutes). vcluster itself is not linked: the main venv's editable install
(its ``.dist-info`` and ``__editable__`` finder, which point into the
checkout) is left out, so the only vcluster the fresh venv can import is
the wheel's, and ``pip install --no-index`` must resolve the wheel's
requirements (``salt>=3008.0,<3009`` ...) against what is there.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

REPO = pathlib.Path(__file__).resolve().parents[2]


def run(cmd, timeout=300, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert proc.returncode == 0, f"{cmd[:4]} exited {proc.returncode}: {proc.stderr[-3000:]}{proc.stdout[-2000:]}"
    return proc


def build_wheel(work):
    """``pip wheel`` of this checkout's files into ``work/dist``; the wheel's path.

    Built from a copy without ``build/`` and ``*.egg-info``: pip builds a
    local directory in place, and setuptools' ``build/lib`` keeps modules
    deleted from the source since the last build (a removed module would
    ship in the wheel).
    """
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__",
                                                                 ".pytest_cache", ".ruff_cache"))
    run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "-w", str(work / "dist")],
        cwd=work)
    (whl,) = (work / "dist").glob("vcluster-*.whl")
    return whl


def make_venv(root, wheel, extras="lxd"):
    """A fresh venv at ``root`` holding ``wheel[extras]``: ``{"root", "python", "site"}``."""
    run([_base_python(), "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    site = pathlib.Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                            ).stdout.strip())
    main_site = pathlib.Path(sysconfig.get_paths()["purelib"])
    for entry in main_site.iterdir():
        name = entry.name.lower()
        if name.startswith(("vcluster", "__editable__", "_vcluster")) or name in ("__pycache__",):
            continue
        (site / entry.name).symlink_to(entry)
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--quiet",
         f"{wheel}[{extras}]"], cwd=root.parent)
    return {"root": root, "python": python, "site": site}


def _base_python():
    """The interpreter the main venv was made from (a venv of a venv has the same base)."""
    return os.path.join(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")


def in_venv(venv, code, *args, cwd):
    """Run ``code`` with the fresh venv's Python, isolated (-I: no PYTHONPATH, no cwd on sys.path)."""
    return run([str(venv["python"]), "-I", "-c", code, *args], cwd=cwd, env={"PATH": "/usr/bin:/bin"})
