"""Data plumbing of the fit: inputs/targets, holdout split, per-member bootstraps, epoch minibatches."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.types import Transitions


def make_targets(transitions: Transitions) -> tuple[jax.Array, jax.Array]:
    """Inputs obs‖act [N, I] and targets [Δobs, reward] [N, D] of a Transitions batch."""
    obs = jnp.asarray(transitions.observations, jnp.float32)
    inputs = jnp.concatenate([obs, jnp.asarray(transitions.actions, jnp.float32)], axis=-1)
    delta = jnp.asarray(transitions.next_observations, jnp.float32) - obs
    targets = jnp.concatenate([delta, jnp.asarray(transitions.rewards, jnp.float32)[:, None]], axis=-1)
    return inputs, targets


def num_holdout_rows(num_rows: int, config: DynamicsConfig) -> int:
    """Holdout size min(int(fraction·N), max_holdout) (static)."""
    return min(int(num_rows * config.holdout_fraction), config.max_holdout)


def holdout_split(key: jax.Array, num_rows: int, num_holdout: int) -> tuple[jax.Array, jax.Array]:
    """Random disjoint split of row ids 0..num_rows-1: (train_idx [N−H], holdout_idx [H]) int32."""
    perm = jax.random.permutation(key, num_rows).astype(jnp.int32)
    return perm[num_holdout:], perm[:num_holdout]


def bootstrap_indices(key: jax.Array, num_members: int, train_size: int) -> jax.Array:
    """Each member's with-replacement sample of train-split positions: [E, train_size] int32."""
    flat = jax.random.randint(key, (num_members * train_size,), 0, train_size, jnp.int32)
    return flat.reshape(num_members, train_size)


def shuffle_rows(key: jax.Array, x: jax.Array) -> jax.Array:
    """Independently permute each row of x [R, N] (sort by 64 random bits: ties have p ≈ N²/2^65)."""
    bits = jax.random.bits(key, (2 * x.size,), jnp.uint32).reshape((2,) + x.shape)
    return jax.lax.sort((bits[0], bits[1], x), dimension=1, num_keys=2)[2]


def epoch_minibatches(
    key: jax.Array, boot_idx: jax.Array, batch_size: int
) -> tuple[jax.Array, jax.Array | None]:
    """Reshuffle each member's bootstrap sample and cut it into minibatches.

    Args:
      boot_idx: [E, N] train-split positions.
    Returns:
      (idx [num_batches, E, batch_size] int32, row_weights [num_batches, batch_size] float32 or None).
      num_batches = ceil(N / batch_size). When N is not a multiple of batch_size the last minibatch
      is padded with position 0 and row_weights marks the real rows (1) vs padding (0), so the last
      gradient step is exactly the mean over the N mod batch_size real rows. None when no padding.
    """
    num_members, n = boot_idx.shape
    shuffled = shuffle_rows(key, boot_idx)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    shuffled = jnp.pad(shuffled, ((0, 0), (0, pad)))
    idx = shuffled.reshape(num_members, num_batches, batch_size).swapaxes(0, 1)
    if pad == 0:
        return idx, None
    weights = (jnp.arange(num_batches * batch_size) < n).astype(jnp.float32)
    return idx, weights.reshape(num_batches, batch_size)
