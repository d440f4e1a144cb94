"""A simulated site for measuring vcluster's control plane at scale (see :mod:`tests.sim.site`)."""
