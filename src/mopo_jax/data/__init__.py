"""Offline datasets: loading by name (`mopo_jax.data.load.load_dataset`), local recipes, env
stepping and Minari file I/O. `from mopo_jax.data import load_dataset` works too (lazily)."""

__all__ = ["load_dataset", "Dataset", "DatasetInfo", "DatasetError"]


def __getattr__(name: str):
    """Lazy re-exports from mopo_jax.data.load (importing the package stays cheap)."""
    if name in __all__:
        from mopo_jax.data import load

        return getattr(load, name)
    raise AttributeError(f"module 'mopo_jax.data' has no attribute {name!r}")
