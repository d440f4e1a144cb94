"""Entry point that tells Salt's loader where vcluster's modules live.

Works both from a source checkout (``pip install -e .``: the directories
``_modules``, ``_states``, ``_runners``, ``_pillar``, ``_engines`` next to the package) and
from an installed wheel (the same directories copied to ``vcluster/saltext``).
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_KINDS = ("modules", "states", "runners", "pillar", "engines")


def _dir(kind):
    installed = os.path.join(_HERE, "saltext", kind)
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(_HERE), "_" + kind)


def get_dirs():
    """Map Salt loader types to vcluster's module directories."""
    return {kind: [_dir(kind)] for kind in _KINDS}
