"""vcluster: grow a bare-metal Slurm cluster with virtual nodes, driven by Salt.

The package holds all logic the Salt modules share. It imports no Salt
dunders; the modules under ``_modules``, ``_states`` and ``_runners`` are thin
adapters around it.
"""

__version__ = "0.1.0"
