"""mopo_jax: MOPO (Yu et al. 2020) as pure, jittable JAX functions.

The public API, imported lazily (so `import mopo_jax` stays cheap and has no side effects):
  make_rollout_fn, rollout_fn, Rollout   penalised model rollouts      (mopo_jax.mopo.rollout)
  make_train, TrainState                 the pure training loop        (mopo_jax.mopo.train)
  run                                    a whole run into a run dir    (mopo_jax.mopo.run)
  TrainConfig, preset, tiny              configs and presets           (mopo_jax.mopo.config)
  SACConfig, DynamicsConfig              sub-configs
  load_dataset                           datasets by name              (mopo_jax.data.load)
  fit, EnsembleModel                     the dynamics ensemble         (mopo_jax.dynamics)
  load_policy                            a saved policy as a jitted fn (mopo_jax.sac.policy_io)
"""

__version__ = "0.2.0"

_API = {
    "make_rollout_fn": "mopo_jax.mopo.rollout", "rollout_fn": "mopo_jax.mopo.rollout",
    "Rollout": "mopo_jax.mopo.rollout", "make_train": "mopo_jax.mopo.train",
    "TrainState": "mopo_jax.mopo.train", "run": "mopo_jax.mopo.run",
    "TrainConfig": "mopo_jax.mopo.config", "preset": "mopo_jax.mopo.config",
    "tiny": "mopo_jax.mopo.config", "SACConfig": "mopo_jax.sac.config",
    "DynamicsConfig": "mopo_jax.dynamics.config", "load_dataset": "mopo_jax.data.load",
    "fit": "mopo_jax.dynamics.fit", "EnsembleModel": "mopo_jax.dynamics.model",
    "load_policy": "mopo_jax.sac.policy_io",
}
__all__ = list(_API)


def __getattr__(name: str):
    """Lazy public API: `from mopo_jax import rollout_fn` imports JAX only when asked."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mopo_jax' has no attribute {name!r}")
