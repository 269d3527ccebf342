"""Batched model rollouts with MOPO's uncertainty-penalised reward: `make_rollout_fn` / `rollout_fn`."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mopo_jax.dynamics.model import EnsembleModel, draw_members_and_noise, predict, sample_chosen
from mopo_jax.envs.termination import TerminationFn
from mopo_jax.mopo.config import PENALTIES
from mopo_jax.sac.policy import PolicyApply
from mopo_jax.types import Transitions

# Penalties computed from every ensemble member; the others read only the elites.
ALL_MEMBER_PENALTIES = ("max_std", "disagreement")


class Rollout(NamedTuple):
    """Model rollout of B rows for h steps; every field has leading axes [h, B].

    obs, next_obs [h, B, o]; action [h, B, a]; reward (penalised) [h, B]; raw_reward [h, B];
    penalty u(s, a) [h, B]; done [h, B] bool (the termination rule fired on next_obs);
    valid [h, B] bool (the row was alive when this step started: only valid steps are real data).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    raw_reward: jax.Array
    penalty: jax.Array
    next_obs: jax.Array
    done: jax.Array
    valid: jax.Array

    def transitions(self) -> tuple[Transitions, jax.Array]:
        """Flatten to (Transitions [h·B], valid [h·B]) ready for `buffer_add`."""
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
        data = Transitions(flat(self.obs), flat(self.action), flat(self.reward),
                           flat(self.next_obs), flat(self.done).astype(jnp.float32))
        return data, flat(self.valid)


class ClipBounds(NamedTuple):
    """Ranges that model samples are clipped to (`--rollout-clip data`): obs_low, obs_high [o];
    reward_low, reward_high []."""

    obs_low: jax.Array
    obs_high: jax.Array
    reward_low: jax.Array
    reward_high: jax.Array


def data_bounds(data: Transitions) -> ClipBounds:
    """The range of the real data [N]: per observation dim over observations and next
    observations, and of the rewards. Jittable (min/max over the rows)."""
    obs = jnp.concatenate([data.observations, data.next_observations], axis=0)
    return ClipBounds(obs.min(0), obs.max(0), data.rewards.min(), data.rewards.max())


def _max_deviation(mean: jax.Array) -> jax.Array:
    """max_k ‖μ_k − mean_j μ_j‖₂ over the leading (member) axis of mean [K, B, d]; returns [B]."""
    return jnp.max(jnp.linalg.norm(mean - mean.mean(0), axis=-1), axis=0)


def uncertainty_penalty(mean: jax.Array, std: jax.Array, elite_idx: jax.Array,
                        mode: str = "max_std") -> jax.Array:
    """u(s, a) from per-member predictions mean, std [E, B, D] (D = obs_dim + 1: the next
    observation's dims, then the reward last); elite_idx [K] indexes the elites among the E.

    'max_std': max over ALL members of ‖σ_k‖₂ over all D dims: the original's learned-variance
    penalty (penalty_learned_var=True), the one behind the paper's results.
    'max_std_elites': the same over the elites only.
    'disagreement': the original's alternative (penalty_learned_var=False): max over ALL members
    of ‖μ_k − mean_j μ_j‖₂ over the observation dims only (reward excluded; mean over all members).
    'disagreement_elites_with_reward': max over the elites of ‖μ_k − mean_elites μ‖₂ over all D
    dims, reward included (this project's earlier 'disagreement').
    Returns [B].
    """
    if mode == "max_std":
        return jnp.max(jnp.linalg.norm(std, axis=-1), axis=0)
    if mode == "max_std_elites":
        return jnp.max(jnp.linalg.norm(std[elite_idx], axis=-1), axis=0)
    if mode == "disagreement":
        return _max_deviation(mean[..., :-1])
    if mode == "disagreement_elites_with_reward":
        return _max_deviation(mean[elite_idx])
    raise ValueError(f"Unknown penalty {mode!r}; choose one of {PENALTIES}.")


def _map_rows(fn: Callable, row_chunk: int | None, *arrays: jax.Array):
    """fn(*arrays) for row-wise `fn`, computed `row_chunk` rows at a time with lax.map when that
    splits the rows (smaller working sets stay in cache on CPUs); the same values either way."""
    rows = arrays[0].shape[0]
    if not row_chunk or row_chunk >= rows:
        return fn(*arrays)
    chunks = -(-rows // row_chunk)
    pad = chunks * row_chunk - rows
    split = lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(  # noqa: E731
        (chunks, row_chunk) + x.shape[1:])
    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in arrays))
    return jax.tree.map(lambda y: y.reshape((chunks * row_chunk,) + y.shape[2:])[:rows], out)


def _rollout(key: jax.Array, model: EnsembleModel, policy_params: Any, start_obs: jax.Array,
             penalty_coef: jax.Array, bounds: ClipBounds | None = None, *,
             policy_apply: PolicyApply, horizon: int, termination: TerminationFn, penalty: str,
             row_chunk: int | None = None) -> Rollout:
    obs_dim = start_obs.shape[-1]
    num_rows = start_obs.shape[0]

    # max_std and disagreement need every member; the elite penalties only the elites, so only
    # those run (sampling always picks an elite).
    members = None if penalty in ALL_MEMBER_PENALTIES else model.elite_idx
    elites = model.elite_idx if members is None else jnp.arange(model.elite_idx.shape[0])

    def model_rows(obs, action, choice, noise):
        mean, std = predict(model, obs, action, members)  # [E or K, b, D]
        return uncertainty_penalty(mean, std, elites, penalty), sample_chosen(mean, std, choice, noise)

    def step(carry, step_key):
        obs, alive = carry
        k_act, k_sample = jax.random.split(step_key)
        action = policy_apply(policy_params, obs, k_act)  # once per step, for all rows
        choice, noise = draw_members_and_noise(k_sample, num_rows, obs_dim + 1, elites)
        u, sample = _map_rows(model_rows, row_chunk, obs, action, choice, noise)
        next_obs, raw_reward = sample[:, :obs_dim], sample[:, obs_dim]
        if bounds is not None:  # --rollout-clip data (not the original's)
            next_obs = jnp.clip(next_obs, bounds.obs_low, bounds.obs_high)
            raw_reward = jnp.clip(raw_reward, bounds.reward_low, bounds.reward_high)
        done = termination(obs, action, next_obs)
        out = Rollout(obs, action, raw_reward - penalty_coef * u, raw_reward, u, next_obs, done,
                      alive)
        still_alive = alive & ~done
        return (jnp.where(still_alive[:, None], next_obs, obs), still_alive), out

    alive0 = jnp.ones((num_rows,), bool)
    _, rollout = jax.lax.scan(step, (start_obs, alive0), jax.random.split(key, horizon))
    return rollout


def _check_static(horizon: int, penalty: str, row_chunk: int | None = None) -> None:
    if row_chunk is not None and row_chunk < 1:
        raise ValueError(f"row_chunk must be None or >= 1, got {row_chunk}.")
    if penalty not in PENALTIES:
        raise ValueError(f"Unknown penalty {penalty!r}; choose one of {PENALTIES}.")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}.")


def make_rollout_fn(policy_apply: PolicyApply, termination: TerminationFn, horizon: int,
                    penalty: str = "max_std", row_chunk: int | None = None) -> Callable[..., Rollout]:
    """Build a jitted `rollout(key, model, policy_params, start_obs [B, o], penalty_coef,
    bounds=None) -> Rollout`.

    MOPO (Yu et al. 2020, eq. 4): r̃(s, a) = r̂(s, a) − λ·u(s, a), with u = max_k ‖σ_k(s, a)‖₂.
    Each step, every row draws its action from `policy_apply(policy_params, obs, key)`, picks one
    elite uniformly and samples (next_obs, reward) from that member's Gaussian; the penalty uses
    the members chosen by `penalty` (see `uncertainty_penalty`). A row whose `termination` rule
    fires is stored for that step (done=True) and never continued: later steps have valid=False.
    Works under jax.jit, jax.vmap (over keys, policy params or λ) and inside lax.scan; the static
    parts (policy_apply, termination, horizon, penalty) are fixed here, so repeated calls never
    retrace. `row_chunk` evaluates the ensemble that many rows at a time (same values; on CPUs a
    few thousand rows keep the working set in cache and run faster; None: all rows at once).
    `bounds` (a ClipBounds, e.g. `data_bounds(data)`) clips each sampled next observation and
    reward to that range before the termination rule and the penalty apply; None (the
    original's behaviour) leaves them as sampled.

    Example:
      rollout = make_rollout_fn(make_policy_apply(SACConfig()), termination_fn("hopper"), 5)
      out = rollout(key, model, sac_state.actor_params, start_obs, 1.0)   # fields [5, B, ...]
    """
    _check_static(horizon, penalty, row_chunk)
    fn = functools.partial(_rollout, policy_apply=policy_apply, horizon=horizon,
                           termination=termination, penalty=penalty, row_chunk=row_chunk)
    return jax.jit(fn)


@functools.partial(jax.jit, static_argnames=("policy_apply", "horizon", "termination", "penalty",
                                             "row_chunk"))
def rollout_fn(key: jax.Array, model: EnsembleModel, policy_params: Any, start_obs: jax.Array,
               penalty_coef: float | jax.Array, bounds: ClipBounds | None = None, *,
               policy_apply: PolicyApply, horizon: int, termination: TerminationFn,
               penalty: str = "max_std", row_chunk: int | None = None) -> Rollout:
    """Jitted one-call form of `make_rollout_fn`: static policy_apply, horizon, termination,
    penalty, row_chunk.

    Args: key; model; policy_params; start_obs [B, o]; penalty_coef λ (scalar); bounds: None or
    a ClipBounds (see make_rollout_fn).
    Returns: Rollout with fields [horizon, B, ...]. Pass the same (hashable) policy_apply and
    termination objects on every call to reuse the compiled function.
    """
    _check_static(horizon, penalty, row_chunk)  # runs at trace time only
    return _rollout(key, model, policy_params, start_obs, jnp.asarray(penalty_coef, jnp.float32),
                    bounds, policy_apply=policy_apply, horizon=horizon, termination=termination,
                    penalty=penalty, row_chunk=row_chunk)
