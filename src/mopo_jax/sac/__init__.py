"""Soft actor-critic: config, networks, the tanh-Gaussian policy, and one pure jittable update."""
