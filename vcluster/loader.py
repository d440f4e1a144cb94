"""Where vcluster's Salt modules and data trees live, for Salt's loader and the master config.

Works both from a source checkout (``pip install -e .``: the directories
``_modules``, ``_states``, ``_runners``, ``_pillar``, ``_engines``, ``salt``,
``reactor`` and ``pillar`` at the top of the checkout) and from an installed
wheel (the module directories copied to ``vcluster/saltext/<kind>``, the
data trees to ``vcluster/share/<name>``).

The ``salt.loader`` entry point (``pyproject.toml``) calls :func:`get_dirs`;
``python -m vcluster.masterconf`` takes the state tree, the reactor files and
the example pillar from :func:`data_dir`.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_HERE)
_KINDS = ("modules", "states", "runners", "pillar", "engines")
#: data trees: state tree (file_roots), reactor SLS files, example pillar (pillar_roots)
DATA = ("salt", "reactor", "pillar")


def _dir(kind):
    installed = os.path.join(_HERE, "saltext", kind)
    if os.path.isdir(installed):
        return installed
    return os.path.join(_CHECKOUT, "_" + kind)


def get_dirs():
    """Map Salt loader types to vcluster's module directories."""
    return {kind: [_dir(kind)] for kind in _KINDS}


def data_dir(name):
    """The directory of data tree ``name`` (``salt``, ``reactor`` or ``pillar``)."""
    if name not in DATA:
        raise ValueError(f"no vcluster data tree named {name!r} (one of {', '.join(DATA)})")
    installed = os.path.join(_HERE, "share", name)
    if os.path.isdir(installed):
        return installed
    return os.path.join(_CHECKOUT, name)


def installed():
    """True when running from an installed wheel, not from a checkout."""
    return os.path.isdir(os.path.join(_HERE, "share"))
