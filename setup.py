"""The package layout, which pyproject.toml cannot compute (metadata lives there).

The checkout keeps Salt's module directories (``_modules`` ...) and the data
trees (``salt/``, ``reactor/``, ``pillar/``) at its top, where Salt and
``scripts/stack.sh`` use them; the wheel carries them inside the package
(``vcluster/saltext/<kind>``, ``vcluster/share/<tree>``, see
``vcluster/loader.py``). Every directory of a tree is mapped as a package of
its own so that setuptools copies its files without warning about data
directories it does not know.
"""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_DIRS = {"modules": "_modules", "states": "_states", "runners": "_runners", "pillar": "_pillar",
               "engines": "_engines"}
TREES = ("salt", "reactor", "pillar")


def _tree_packages(tree):
    """``{package: directory}`` for ``tree`` and each of its subdirectories."""
    out = {}
    for path, dirs, _ in os.walk(os.path.join(HERE, tree)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        rel = os.path.relpath(path, HERE)
        out["vcluster.share." + rel.replace(os.sep, ".")] = rel
    return out


package_dir = {f"vcluster.saltext.{kind}": path for kind, path in MODULE_DIRS.items()}
for name in TREES:
    package_dir.update(_tree_packages(name))

setup(
    packages=find_packages(include=["vcluster", "vcluster.*"]) + sorted(package_dir),
    package_dir=package_dir,
    package_data={pkg: ["*"] for pkg in package_dir if pkg.startswith("vcluster.share.")},
    exclude_package_data={"": ["*.pyc"]},
)
