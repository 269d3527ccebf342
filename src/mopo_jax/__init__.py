"""mopo_jax: MOPO (Yu et al. 2020) as pure, jittable JAX functions."""

__version__ = "0.1.0"
