"""mopo_jax: MOPO (Yu et al. 2020) as pure, jittable JAX functions."""

__version__ = "0.1.0"
__all__ = ["rollout_fn", "make_rollout_fn", "Rollout"]


def __getattr__(name: str):
    """Lazy public API: `from mopo_jax import rollout_fn` imports JAX only when asked."""
    if name in __all__:
        from mopo_jax import rollout

        return getattr(rollout, name)
    raise AttributeError(f"module 'mopo_jax' has no attribute {name!r}")
