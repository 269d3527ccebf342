"""Early stopping of the ensemble fit: per-member snapshot bookkeeping and the stopping rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mopo_jax.dynamics.config import DynamicsConfig


def update_snapshots(
    params: dict,
    best_params: dict,
    best_mse: jax.Array,
    mse: jax.Array,
    epochs_since_update: jax.Array,
    threshold: float,
) -> tuple[dict, jax.Array, jax.Array, jax.Array]:
    """Early-stopping bookkeeping after one epoch (pure; the original's `_save_best`).

    A member improves when (best − mse)/best > threshold, i.e. mse < best·(1 − threshold)
    (best starts at +inf, so the first finite value always improves; NaN never does).

    Args:
      params / best_params: current and snapshot net params, member axis first.
      best_mse, mse: [E] best-so-far and current holdout MSE.
      epochs_since_update: int32 scalar.
    Returns:
      (new best_params, new best_mse [E], new epochs_since_update (0 if any member improved,
      else +1), improved [E] bool).
    """
    improved = mse < best_mse * (1.0 - threshold)

    def pick(new, old):
        return jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    best_params = jax.tree.map(pick, params, best_params)
    best_mse = jnp.where(improved, mse, best_mse)
    since = jnp.where(jnp.any(improved), 0, epochs_since_update + 1).astype(jnp.int32)
    return best_params, best_mse, since, improved


def keep_training(epochs_since_update: jax.Array, epochs_done: jax.Array,
                  config: DynamicsConfig) -> jax.Array:
    """The stopping rule: go on while epochs_since_update <= patience (the original's
    `epochs_since_update > 5` stops) and fewer than config.epoch_cap epochs ran. [] bool."""
    return (epochs_since_update <= config.patience) & (epochs_done < config.epoch_cap)
