"""The run's key tree: every random stream of a run derived from its seed, named in one place.

    key(seed)
    ├── dynamics     the ensemble fit     → holdout split, initial weights, bootstrap, epoch shuffles
    ├── policy       the policy phase     → SAC initial weights; the loop key, which every epoch
    │                                        splits into (next loop key, start states, rollout, SAC)
    └── evaluation   real-env episodes    → per policy (λ, h): one branch per training epoch's
                                             evaluation, one for the final evaluation; each gives
                                             the episodes' Gymnasium reset seeds

Each node is `jax.random.split` of its parent, so no two streams share a key (tested by comparing
key data), and every stream depends on (seed, λ, h, epoch) only: a policy of a grid gets exactly
the numbers of the single run with the same (seed, λ, h).
"""

from __future__ import annotations

import functools
import zlib
from typing import NamedTuple

import jax
import numpy as np

# Bumped whenever a stream's derivation changes; part of the model cache's key, so an ensemble
# fitted from an older derivation is never taken for a new one.
KEY_TREE_VERSION = 2

_RESET_SEED_LIMIT = 2**31 - 1  # Gymnasium reset seeds: non-negative ints


class SeedStreams(NamedTuple):
    """The three top-level streams of one seed (typed PRNG keys, shape [])."""

    dynamics: jax.Array
    policy: jax.Array
    evaluation: jax.Array


class FitStreams(NamedTuple):
    """The ensemble fit's streams, split from the dynamics key."""

    holdout_split: jax.Array
    init: jax.Array
    bootstrap: jax.Array
    epochs: jax.Array  # fold_in(epochs, epoch) shuffles that epoch's minibatches


def seed_streams(seed: int) -> SeedStreams:
    """The top of the key tree for `seed`: split(key(seed), 3) as (dynamics, policy, evaluation)."""
    return SeedStreams(*jax.random.split(jax.random.key(seed), 3))


def dynamics_key(seed: int) -> jax.Array:
    """Key [] of seed's ensemble fit (the `key` argument of `dynamics.fit.fit`)."""
    return seed_streams(seed).dynamics


def policy_key(seed: int) -> jax.Array:
    """Key [] of seed's policy phase (the `key` argument of `make_train(...).init`)."""
    return seed_streams(seed).policy


def fit_streams(key: jax.Array) -> FitStreams:
    """Split a dynamics key [] into the fit's four streams."""
    return FitStreams(*jax.random.split(key, 4))


def sac_init_and_loop(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split a policy key [] into (SAC initial weights, the training loop's first key)."""
    sac_key, loop_key = jax.random.split(key)
    return sac_key, loop_key


def epoch_streams(loop_key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Split one epoch's loop key [] into (next loop key, start states, rollout, SAC steps)."""
    next_key, start_key, rollout_key, sac_key = jax.random.split(loop_key, 4)
    return next_key, start_key, rollout_key, sac_key


def _evaluation_tags(penalty_coef: float, rollout_length: int) -> tuple[int, int]:
    """The ints that λ and h are folded in as: crc32 of repr(float(λ)) (so 1 and 1.0 agree), and h."""
    return zlib.crc32(repr(float(penalty_coef)).encode()) % 2**31, int(rollout_length)


@functools.partial(jax.jit, static_argnames=("episodes", "final"))
def _reset_seeds(seed, coef_tag, rollout_length, epoch, *, episodes: int, final: bool) -> jax.Array:
    """[episodes] int32 reset seeds: seed's evaluation key folded with λ's tag and h, split into
    (during training, final); the training branch folded with the epoch."""
    key = jax.random.fold_in(seed_streams(seed).evaluation, coef_tag)
    during, last = jax.random.split(jax.random.fold_in(key, rollout_length))
    key = last if final else jax.random.fold_in(during, epoch)
    return jax.random.randint(key, (episodes,), 0, _RESET_SEED_LIMIT)


def eval_reset_seeds(seed: int, penalty_coef: float, rollout_length: int, episodes: int,
                     epoch: int | None = None) -> np.ndarray:
    """Reset seeds [episodes] (int64) of a policy's evaluation at `epoch` (1-based), or of its
    final evaluation when `epoch` is None.

    Every evaluation gets its own start states (as the original's unseeded eval env does), and the
    final evaluation's states are never used by an evaluation during training. The seeds depend on
    (seed, λ, h, epoch) only, not on the policy's place in a grid. They are computed by one
    compiled call on the host CPU: on an accelerator, work queued there (the next training chunk)
    would otherwise have to finish before the evaluation of the previous one could start.
    """
    if epoch is not None and int(epoch) < 1:
        raise ValueError(f"epoch={epoch!r}: evaluations are numbered from epoch 1 (None: final)")
    coef_tag, length = _evaluation_tags(penalty_coef, rollout_length)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        seeds = _reset_seeds(int(seed), coef_tag, length, 0 if epoch is None else int(epoch),
                             episodes=int(episodes), final=epoch is None)
        return np.asarray(seeds, np.int64)
