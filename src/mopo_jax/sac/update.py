"""SAC learner state, its initialisation and one pure update (critic, Polyak target, actor, α)."""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from mopo_jax.sac import losses
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.networks import Actor, TwinCritic
from mopo_jax.sac.policy import Params, make_actor
from mopo_jax.types import Transitions


class SACState(flax.struct.PyTreeNode):
    """Everything one SAC learner carries between updates (a pytree; vmappable over seeds)."""

    actor_params: Params
    critic_params: Params  # leaves stacked [num_critics, ...]
    target_critic_params: Params
    log_alpha: jax.Array  # [] float32
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    alpha_opt_state: optax.OptState
    step: jax.Array  # [] int32, number of updates applied


def _critic(config: SACConfig) -> TwinCritic:
    return TwinCritic(config.hidden_sizes, config.num_critics)


def _optimizers(config: SACConfig) -> tuple[optax.GradientTransformation, ...]:
    return optax.adam(config.actor_lr), optax.adam(config.critic_lr), optax.adam(config.alpha_lr)


def init_sac(key: jax.Array, obs_dim: int, act_dim: int, config: SACConfig) -> SACState:
    """Fresh SAC state: random actor/critics, target = critic copy, log α = init_log_alpha."""
    actor_key, critic_key = jax.random.split(key)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, act_dim), jnp.float32)
    actor_params = make_actor(config, act_dim).init(actor_key, obs)["params"]
    critic_params = _critic(config).init(critic_key, obs, act)["params"]
    log_alpha = jnp.asarray(config.init_log_alpha, jnp.float32)
    actor_opt, critic_opt, alpha_opt = _optimizers(config)
    return SACState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=jax.tree.map(jnp.copy, critic_params),
        log_alpha=log_alpha,
        actor_opt_state=actor_opt.init(actor_params),
        critic_opt_state=critic_opt.init(critic_params),
        alpha_opt_state=alpha_opt.init(log_alpha),
        step=jnp.zeros((), jnp.int32),
    )


def default_target_entropy(config: SACConfig, act_dim: int) -> float:
    """The configured target entropy, or −act_dim when the config leaves it as None."""
    return -float(act_dim) if config.target_entropy is None else float(config.target_entropy)


def _critic_step(state: SACState, critic_net: TwinCritic, critic_opt: optax.GradientTransformation,
                 batch: Transitions, target_q: jax.Array, tau: float):
    """One critic step towards `target_q` [B], then the Polyak target update with the new critics:
    (critic loss [] before the step, Q [num_critics, B], critic params, critic opt state,
    target critic params)."""
    (critic_loss, q), critic_grads = jax.value_and_grad(losses.critic_loss, has_aux=True)(
        state.critic_params, critic_net, batch, target_q)
    critic_updates, critic_opt_state = critic_opt.update(critic_grads, state.critic_opt_state)
    critic_params = optax.apply_updates(state.critic_params, critic_updates)
    target_critic_params = optax.incremental_update(
        critic_params, state.target_critic_params, tau)  # τ·new + (1 − τ)·old
    return critic_loss, q, critic_params, critic_opt_state, target_critic_params


def _actor_step(state: SACState, actor: Actor, critic_net: TwinCritic,
                actor_opt: optax.GradientTransformation, critic_params: Params, obs: jax.Array,
                alpha: jax.Array, key: jax.Array):
    """One actor step on α log π − min_i Q_i (critics `critic_params`), obs [B, o]:
    (actor loss [] before the step, log π [B], actor params, actor opt state)."""
    (actor_loss, log_prob), actor_grads = jax.value_and_grad(losses.actor_loss, has_aux=True)(
        state.actor_params, actor, critic_net, critic_params, obs, alpha, key)
    actor_updates, actor_opt_state = actor_opt.update(actor_grads, state.actor_opt_state)
    actor_params = optax.apply_updates(state.actor_params, actor_updates)
    return actor_loss, log_prob, actor_params, actor_opt_state


def _alpha_step(state: SACState, alpha_opt: optax.GradientTransformation, log_prob: jax.Array,
                target_entropy: jax.Array | float):
    """One temperature step on −log α · (mean log π [B] + target entropy):
    (α loss [] before the step, log α, α opt state)."""
    alpha_loss, alpha_grad = jax.value_and_grad(losses.alpha_loss)(
        state.log_alpha, log_prob, target_entropy)
    alpha_updates, alpha_opt_state = alpha_opt.update(alpha_grad, state.alpha_opt_state)
    log_alpha = optax.apply_updates(state.log_alpha, alpha_updates)
    return alpha_loss, log_alpha, alpha_opt_state


def make_sac_update(
    config: SACConfig,
) -> Callable[[SACState, Transitions, jax.Array], tuple[SACState, dict[str, jax.Array]]]:
    """Return a pure `update(state, batch [B rows], key, target_entropy=None) -> (state, info)`
    (jit/vmap-friendly). target_entropy: a traced [] float (None: the config's, or −act_dim), so
    one compiled update serves a grid of target entropies.

    Order: critic step on r + γ(1−d)(min_i Q̄_i(s', a') − α log π(a'|s')), a' ~ π(·|s');
    Polyak target update with τ using the new critics; actor step on α log π − min_i Q_i
    (new critics); α step on −log α · (log π + target entropy). α is the pre-update value in
    all three losses. info holds scalar diagnostics (losses before the step, α, entropy, Q stats).
    """
    critic_net = _critic(config)
    actor_opt, critic_opt, alpha_opt = _optimizers(config)

    def update(state: SACState, batch: Transitions, key: jax.Array,
               target_entropy: jax.Array | float | None = None):
        act_dim = batch.actions.shape[-1]
        if target_entropy is None:
            target_entropy = default_target_entropy(config, act_dim)
        actor = make_actor(config, act_dim)
        next_key, actor_key = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)

        target_q = losses.soft_target(actor, critic_net, state.actor_params,
                                      state.target_critic_params, batch, alpha, config.gamma, next_key)
        critic_loss, q, critic_params, critic_opt_state, target_critic_params = _critic_step(
            state, critic_net, critic_opt, batch, target_q, config.tau)

        # Actor (against the freshly updated critics), then the temperature.
        actor_loss, log_prob, actor_params, actor_opt_state = _actor_step(
            state, actor, critic_net, actor_opt, critic_params, batch.observations, alpha, actor_key)
        alpha_loss, log_alpha, alpha_opt_state = _alpha_step(state, alpha_opt, log_prob,
                                                             target_entropy)

        new_state = SACState(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=target_critic_params,
            log_alpha=log_alpha,
            actor_opt_state=actor_opt_state,
            critic_opt_state=critic_opt_state,
            alpha_opt_state=alpha_opt_state,
            step=state.step + 1,
        )
        info = {
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "alpha_loss": alpha_loss,
            "alpha": alpha,
            "entropy": -jnp.mean(log_prob),
            "q_mean": jnp.mean(q),
            "q_target_mean": jnp.mean(target_q),
        }
        return new_state, info

    return update
