"""Per-environment termination rules as pure jnp functions: done(obs, act, next_obs) -> bool."""

from typing import Callable

import jax
import jax.numpy as jnp

from mopo_jax.envs.catalog import env_family

TerminationFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def hopper_done(obs: jax.Array, act: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Hopper-v5 termination on the predicted next observation.

    Alive iff every entry is finite, |next_obs[1:]| < 100, height next_obs[0] > 0.7 and the torso
    angle |next_obs[1]| < 0.2. MOPO's original code wrote `np.abs(x < 100)` (the abs of a boolean,
    which is always true for finite x); the env checks the magnitude, so we write |x| < 100.

    Args: obs [..., 11], act [..., 3] (unused), next_obs [..., 11]. Returns bool [...].
    """
    del obs, act
    height, angle = next_obs[..., 0], next_obs[..., 1]
    alive = (
        jnp.all(jnp.isfinite(next_obs), axis=-1)
        & jnp.all(jnp.abs(next_obs[..., 1:]) < 100.0, axis=-1)
        & (height > 0.7)
        & (jnp.abs(angle) < 0.2)
    )
    return ~alive


def walker2d_done(obs: jax.Array, act: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Walker2d-v5 termination: alive iff 0.8 < height < 2.0 and -1 < angle < 1.

    Args: obs [..., 17], act [..., 6] (unused), next_obs [..., 17]. Returns bool [...].
    """
    del obs, act
    height, angle = next_obs[..., 0], next_obs[..., 1]
    alive = (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~alive


def halfcheetah_done(obs: jax.Array, act: jax.Array, next_obs: jax.Array) -> jax.Array:
    """HalfCheetah never terminates. Args: next_obs [..., 17]. Returns False of shape [...]."""
    del obs, act
    return jnp.zeros(next_obs.shape[:-1], dtype=bool)


def ant_done(obs: jax.Array, act: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Ant-v5 termination: alive iff all entries finite and 0.2 <= torso z (next_obs[0]) <= 1.0.

    Args: obs [..., D], act [..., 8] (unused), next_obs [..., D]. Returns bool [...].
    """
    del obs, act
    z = next_obs[..., 0]
    alive = jnp.all(jnp.isfinite(next_obs), axis=-1) & (z >= 0.2) & (z <= 1.0)
    return ~alive


_RULES: dict[str, TerminationFn] = {
    "hopper": hopper_done,
    "walker2d": walker2d_done,
    "halfcheetah": halfcheetah_done,
    "ant": ant_done,
}


def termination_fn(env_name: str) -> TerminationFn:
    """Look up a rule by env or dataset name: 'hopper', 'Hopper-v5', 'walker2d-medium',
    'mujoco/hopper/medium-v0' etc. (case-insensitive; any name `catalog.env_family` maps).

    Raises ValueError naming the known envs when none matches.
    """
    try:
        return _RULES[env_family(env_name)]
    except (ValueError, KeyError):
        raise ValueError(
            f"No termination rule for env {env_name!r}; known envs: {sorted(_RULES)}."
        ) from None
