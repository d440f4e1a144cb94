"""Install the vcluster library and register its Salt modules with the loader."""

from setuptools import setup

SALT_DIRS = {"modules": "_modules", "states": "_states", "runners": "_runners", "pillar": "_pillar",
             "engines": "_engines"}

setup(
    name="vcluster",
    version="0.1.0",
    description="Grow a bare-metal Slurm cluster with virtual nodes, driven by Salt",
    python_requires=">=3.11",
    packages=["vcluster", "vcluster.providers", "vcluster.slurm"]
    + [f"vcluster.saltext.{kind}" for kind in SALT_DIRS],
    package_dir={f"vcluster.saltext.{kind}": path for kind, path in SALT_DIRS.items()},
    install_requires=[
        "salt==3008.3",
        "PyYAML",
        "python-hostlist>=2.0",
        "pylxd>=2.3",
        "cryptography",
    ],
    extras_require={
        "openstack": ["openstacksdk>=4.0"],
        "opennebula": ["pyone>=6.8"],
        "test": ["pytest>=8", "pytest-salt-factories>=1.0.5"],
    },
    entry_points={"salt.loader": ["vcluster = vcluster.loader:get_dirs"]},
)
