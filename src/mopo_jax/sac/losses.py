"""SAC's three objectives as pure functions: the soft Bellman target, critic, actor and α losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mopo_jax.sac.networks import Actor, TwinCritic
from mopo_jax.sac.policy import Params, sample_with_log_prob
from mopo_jax.types import Transitions


def soft_target(actor: Actor, critic: TwinCritic, actor_params: Params, target_params: Params,
                batch: Transitions, alpha: jax.Array, gamma: float, key: jax.Array) -> jax.Array:
    """r + γ(1 − d)(min_i Q̄_i(s', a') − α log π(a'|s')), a' ~ π(·|s'); gradient stopped. -> [B]."""
    next_act, next_log_prob = sample_with_log_prob(actor, actor_params, batch.next_observations, key)
    next_q = critic.apply({"params": target_params}, batch.next_observations, next_act)
    soft_next_v = jnp.min(next_q, axis=0) - alpha * next_log_prob
    target = batch.rewards + gamma * (1.0 - batch.terminations) * soft_next_v
    return jax.lax.stop_gradient(target)


def critic_loss(critic_params: Params, critic: TwinCritic, batch: Transitions,
                target_q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Σ_i ½·mean_B (Q_i(s, a) − target)² and Q [num_critics, B] (for diagnostics)."""
    q = critic.apply({"params": critic_params}, batch.observations, batch.actions)
    return jnp.sum(0.5 * jnp.mean(jnp.square(q - target_q), axis=-1)), q


def actor_loss(actor_params: Params, actor: Actor, critic: TwinCritic, critic_params: Params,
               obs: jax.Array, alpha: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """mean_B(α log π(a|s) − min_i Q_i(s, a)), a ~ π(·|s); and log π [B]. obs [B, o]."""
    act, log_prob = sample_with_log_prob(actor, actor_params, obs, key)
    q_pi = jnp.min(critic.apply({"params": critic_params}, obs, act), axis=0)
    return jnp.mean(alpha * log_prob - q_pi), log_prob


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array,
               target_entropy: jax.Array | float) -> jax.Array:
    """−log α · (mean log π + target entropy): α grows while the entropy is below the target."""
    return -log_alpha * jax.lax.stop_gradient(jnp.mean(log_prob) + target_entropy)
