"""SAC (tanh-Gaussian actor, twin critics, auto-α): config, state, init and one pure update."""

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from mopo_jax.networks import Actor, TwinCritic
from mopo_jax.transitions import Transitions

Params = dict
PolicyApply = Callable[[Params, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Static SAC hyper-parameters (defaults follow DESIGN.md §2)."""

    hidden_sizes: tuple[int, ...] = (256, 256)  # actor and each critic
    num_critics: int = 2
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 5e-3
    init_log_alpha: float = 0.0
    target_entropy: float | None = None  # None means -act_dim
    batch_size: int = 256  # used by the training loop when it samples batches


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


def _actor(config: SACConfig, act_dim: int) -> Actor:
    return Actor(act_dim, config.hidden_sizes, config.log_std_min, config.log_std_max)


def _critic(config: SACConfig) -> TwinCritic:
    return TwinCritic(config.hidden_sizes, config.num_critics)


def _actor_from_params(actor_params: Params, config: SACConfig | None) -> Actor:
    """Rebuild the Actor module whose shapes match `actor_params` (sizes read from the params)."""
    trunk = actor_params["trunk"]
    hidden = tuple(trunk[f"hidden_{i}"]["kernel"].shape[-1] for i in range(len(trunk) - 1))
    act_dim = trunk["output"]["kernel"].shape[-1] // 2
    config = config or SACConfig()
    return Actor(act_dim, hidden, config.log_std_min, config.log_std_max)


def _optimizers(config: SACConfig) -> tuple[optax.GradientTransformation, ...]:
    return optax.adam(config.actor_lr), optax.adam(config.critic_lr), optax.adam(config.alpha_lr)


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, pre_tanh: jax.Array) -> jax.Array:
    """log π(tanh(u)) for u ~ N(mean, exp(log_std)²), computed from the pre-tanh sample u.

    mean, log_std, pre_tanh: [..., act_dim] -> [...]. Uses
    log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u)), finite for any finite u.
    """
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * jnp.square(z) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - log_det, axis=-1)


def _sample_with_log_prob(
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
    actor = _actor_from_params(actor_params, config)
    return _sample_with_log_prob(actor, actor_params, obs, key)[0]


def deterministic_action(actor_params: Params, obs: jax.Array) -> jax.Array:
    """Evaluation action tanh(μ(obs)). obs [B, o] -> action [B, a]."""
    mean, _ = _actor_from_params(actor_params, None).apply({"params": actor_params}, obs)
    return jnp.tanh(mean)


def make_policy_apply(config: SACConfig) -> PolicyApply:
    """Return `policy(actor_params, obs [B, o], key) -> action [B, a]` (stochastic), for rollouts."""

    def policy(actor_params: Params, obs: jax.Array, key: jax.Array) -> jax.Array:
        return sample_action(actor_params, obs, key, config)

    return policy


def init_sac(key: jax.Array, obs_dim: int, act_dim: int, config: SACConfig) -> SACState:
    """Fresh SAC state: random actor/critics, target = critic copy, log α = init_log_alpha."""
    actor_key, critic_key = jax.random.split(key)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    act = jnp.zeros((1, act_dim), jnp.float32)
    actor_params = _actor(config, act_dim).init(actor_key, obs)["params"]
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


def make_sac_update(
    config: SACConfig,
) -> Callable[[SACState, Transitions, jax.Array], tuple[SACState, dict[str, jax.Array]]]:
    """Return a pure `update(state, batch [B rows], key) -> (state, info)` (jit/vmap-friendly).

    Order: critic step on r + γ(1−d)(min_i Q̄_i(s', a') − α log π(a'|s')), a' ~ π(·|s');
    Polyak target update with τ using the new critics; actor step on α log π − min_i Q_i
    (new critics); α step on −log α · (log π + target entropy). α is the pre-update value in
    all three losses. info holds scalar diagnostics (losses before the step, α, entropy, Q stats).
    """
    critic_net = _critic(config)
    actor_opt, critic_opt, alpha_opt = _optimizers(config)

    def update(state: SACState, batch: Transitions, key: jax.Array):
        act_dim = batch.actions.shape[-1]
        target_entropy = -float(act_dim) if config.target_entropy is None else config.target_entropy
        actor = _actor(config, act_dim)
        next_key, actor_key = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)

        # Critic.
        next_act, next_log_prob = _sample_with_log_prob(
            actor, state.actor_params, batch.next_observations, next_key
        )
        target_vars = {"params": state.target_critic_params}
        next_q = critic_net.apply(target_vars, batch.next_observations, next_act)
        soft_next_v = jnp.min(next_q, axis=0) - alpha * next_log_prob
        target_q = batch.rewards + config.gamma * (1.0 - batch.terminals) * soft_next_v
        target_q = jax.lax.stop_gradient(target_q)

        def critic_loss_fn(critic_params):
            q = critic_net.apply({"params": critic_params}, batch.observations, batch.actions)
            return jnp.sum(0.5 * jnp.mean(jnp.square(q - target_q), axis=-1)), q

        critic_grad_fn = jax.value_and_grad(critic_loss_fn, has_aux=True)
        (critic_loss, q), critic_grads = critic_grad_fn(state.critic_params)
        critic_updates, critic_opt_state = critic_opt.update(critic_grads, state.critic_opt_state)
        critic_params = optax.apply_updates(state.critic_params, critic_updates)
        target_critic_params = optax.incremental_update(
            critic_params, state.target_critic_params, config.tau
        )  # τ·new + (1 − τ)·old

        # Actor (against the freshly updated critics).
        def actor_loss_fn(actor_params):
            act, log_prob = _sample_with_log_prob(actor, actor_params, batch.observations, actor_key)
            q_pi = jnp.min(critic_net.apply({"params": critic_params}, batch.observations, act), axis=0)
            return jnp.mean(alpha * log_prob - q_pi), log_prob

        actor_grad_fn = jax.value_and_grad(actor_loss_fn, has_aux=True)
        (actor_loss, log_prob), actor_grads = actor_grad_fn(state.actor_params)
        actor_updates, actor_opt_state = actor_opt.update(actor_grads, state.actor_opt_state)
        actor_params = optax.apply_updates(state.actor_params, actor_updates)

        # Temperature: d/d log α = entropy − target, so α grows while entropy is below target.
        entropy_gap = jax.lax.stop_gradient(jnp.mean(log_prob) + target_entropy)
        alpha_loss, alpha_grad = jax.value_and_grad(lambda la: -la * entropy_gap)(state.log_alpha)
        alpha_updates, alpha_opt_state = alpha_opt.update(alpha_grad, state.alpha_opt_state)
        log_alpha = optax.apply_updates(state.log_alpha, alpha_updates)

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
