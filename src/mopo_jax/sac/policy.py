"""The tanh-Gaussian policy: building the actor, log-probabilities, stochastic and deterministic actions."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.networks import Actor

Params = dict
PolicyApply = Callable[[Params, jax.Array, jax.Array], jax.Array]


def make_actor(config: SACConfig, act_dim: int) -> Actor:
    return Actor(act_dim, config.hidden_sizes, config.log_std_min, config.log_std_max)


def actor_from_params(actor_params: Params, config: SACConfig | None) -> Actor:
    """Rebuild the Actor module whose shapes match `actor_params` (sizes read from the params)."""
    trunk = actor_params["trunk"]
    hidden = tuple(trunk[f"hidden_{i}"]["kernel"].shape[-1] for i in range(len(trunk) - 1))
    act_dim = trunk["output"]["kernel"].shape[-1] // 2
    config = config or SACConfig()
    return Actor(act_dim, hidden, config.log_std_min, config.log_std_max)


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, pre_tanh: jax.Array) -> jax.Array:
    """log π(tanh(u)) for u ~ N(mean, exp(log_std)²), computed from the pre-tanh sample u.

    mean, log_std, pre_tanh: [..., act_dim] -> [...]. Uses
    log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u)), finite for any finite u.
    """
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * jnp.square(z) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - log_det, axis=-1)


def sample_with_log_prob(
    actor: Actor, actor_params: Params, obs: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """obs [B, o] -> (action [B, a] = tanh(u), log π(action) [B])."""
    mean, log_std = actor.apply({"params": actor_params}, obs)
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(mean, log_std, pre_tanh)


def sample_action(
    actor_params: Params, obs: jax.Array, key: jax.Array, config: SACConfig | None = None
) -> jax.Array:
    """Stochastic action tanh(u), u ~ N(μ(obs), σ(obs)²). obs [B, o] -> action [B, a].

    Values lie in [−1, 1]; in float32 tanh rounds to exactly ±1 once |u| ≳ 9 (log-probs are
    computed from u, so they stay finite). `config` supplies the log-std bounds (default SACConfig()).
    """
    actor = actor_from_params(actor_params, config)
    return sample_with_log_prob(actor, actor_params, obs, key)[0]


def deterministic_action(actor_params: Params, obs: jax.Array) -> jax.Array:
    """Evaluation action tanh(μ(obs)). obs [B, o] -> action [B, a]."""
    mean, _ = actor_from_params(actor_params, None).apply({"params": actor_params}, obs)
    return jnp.tanh(mean)


def make_policy_apply(config: SACConfig) -> PolicyApply:
    """Return `policy(actor_params, obs [B, o], key) -> action [B, a]` (stochastic), for rollouts."""

    def policy(actor_params: Params, obs: jax.Array, key: jax.Array) -> jax.Array:
        return sample_action(actor_params, obs, key, config)

    return policy
