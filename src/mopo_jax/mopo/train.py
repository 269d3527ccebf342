"""The MOPO policy-optimisation loop as pure functions: epoch = one model rollout + N SAC updates."""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from mopo_jax.buffer import ModelBuffer, buffer_add, buffer_init, sample_mixed_batch, sample_rows
from mopo_jax.dynamics.model import EnsembleModel
from mopo_jax.envs.termination import termination_fn
from mopo_jax.keys import epoch_streams, sac_init_and_loop
from mopo_jax.mopo.config import TrainConfig
from mopo_jax.mopo.rollout import Rollout, data_bounds, make_rollout_fn
from mopo_jax.sac.policy import make_policy_apply
from mopo_jax.sac.update import SACState, default_target_entropy, init_sac, make_sac_update
from mopo_jax.types import Transitions


class TrainState(flax.struct.PyTreeNode):
    """All that one seed carries between epochs: SAC learner, model buffer, key, epoch counter."""

    sac: SACState
    buffer: ModelBuffer
    key: jax.Array
    epoch: jax.Array  # [] int32, epochs completed
    penalty_coef: jax.Array  # [] float32, λ: traced, so one compiled program serves a λ grid
    target_entropy: jax.Array  # [] float32, SAC's α target: traced like λ


class TrainFns(NamedTuple):
    """Pure functions of one run; `data` and `model` are passed in, never baked in as constants.

    init(key, penalty_coef=None, target_entropy=None) -> TrainState (defaults: the config's λ and
        target entropy; both are traced state, so `jax.vmap(init)` over them makes a grid)
    epoch(state, data, model) -> (state, metrics: dict of [] scalars)
    run_epochs(state, data, model, num_epochs static) -> (state, metrics stacked [num_epochs]);
        jitted, and `state` is donated (its buffers are reused in place: don't use it afterwards)
    train(key) -> (state, metrics [epochs]): the whole run, data and model closed over.
    """

    init: Callable
    epoch: Callable
    run_epochs: Callable
    train: Callable


def _sac_updates(sac_update: Callable, config: TrainConfig, data: Transitions, buffer: ModelBuffer,
                 sac: SACState, key: jax.Array, target_entropy: jax.Array):
    """`config.steps_per_epoch` SAC updates (lax.scan, one key of split(key) each) on batches of
    real_ratio real rows of `data` + the rest rows of `buffer`: (sac, infos: each
    [steps_per_epoch])."""

    def sac_step(sac, step_key):
        batch_key, update_key = jax.random.split(step_key)
        batch = sample_mixed_batch(data, buffer, batch_key, config.sac.batch_size,
                                   config.real_ratio)
        return sac_update(sac, batch, update_key, target_entropy)

    return jax.lax.scan(sac_step, sac, jax.random.split(key, config.steps_per_epoch))


def _epoch_metrics(infos: dict, out: Rollout, valid: jax.Array, buffer: ModelBuffer,
                   rollout_batch_size: int) -> dict:
    """An epoch's [] metrics: the mean of each SAC diagnostic over the updates (infos: each
    [steps]), the rollout's penalty and rewards averaged over its valid rows (valid [h·B] bool),
    the valid fraction, the mean rollout length and the buffer's row count."""
    valid_f = valid.astype(jnp.float32)
    per_valid = lambda x: jnp.sum(x.reshape(-1) * valid_f) / jnp.maximum(valid_f.sum(), 1)  # noqa: E731
    metrics = {k: v.mean() for k, v in infos.items()}
    metrics.update(
        rollout_penalty=per_valid(out.penalty), rollout_raw_reward=per_valid(out.raw_reward),
        rollout_reward=per_valid(out.reward), rollout_valid_fraction=valid_f.mean(),
        rollout_mean_length=valid_f.sum() / rollout_batch_size,
        buffer_count=buffer.count.astype(jnp.float32),
    )
    return metrics


def make_train(config: TrainConfig, data: Transitions, model: EnsembleModel, *,
               env_name: str | None = None) -> TrainFns:
    """Build the pure training functions for `config` on real `data` [N] with dynamics `model`.

    env_name: the data's env family, whose termination rule the rollouts use: the loaded
    dataset's `DatasetInfo.env_name`; None (synthetic data): config.dataset's family (the rule
    `termination_fn` finds for the dataset name).

    One epoch: roll the current stochastic policy out of `rollout_batch_size` real start states
    for h steps in the model (penalised reward), append the valid rows to the FIFO model buffer,
    then run `steps_per_epoch` SAC updates on batches of real_ratio real + the rest model rows.
    `jax.vmap(fns.train)(keys)` runs several seeds at once; `jax.vmap(fns.init)(keys, lambdas)`
    starts a (seed, λ) grid that one compiled `run_epochs` trains (λ lives in the state).
    """
    obs_dim, act_dim = data.observations.shape[-1], data.actions.shape[-1]
    sac_cfg = config.sac
    termination = termination_fn(config.dataset if env_name is None else env_name)
    rollout = make_rollout_fn(make_policy_apply(sac_cfg), termination, config.rollout_length,
                              config.penalty, config.rollout_row_chunk)
    sac_update = make_sac_update(sac_cfg)

    def init(key: jax.Array, penalty_coef: jax.Array | float | None = None,
             target_entropy: jax.Array | float | None = None) -> TrainState:
        sac_key, key = sac_init_and_loop(key)
        coef = config.penalty_coef if penalty_coef is None else penalty_coef
        entropy = default_target_entropy(sac_cfg, act_dim) if target_entropy is None else target_entropy
        return TrainState(sac=init_sac(sac_key, obs_dim, act_dim, sac_cfg),
                          buffer=buffer_init(config.buffer_capacity, obs_dim, act_dim),
                          key=key, epoch=jnp.zeros((), jnp.int32),
                          penalty_coef=jnp.asarray(coef, jnp.float32),
                          target_entropy=jnp.asarray(entropy, jnp.float32))

    def epoch(state: TrainState, data: Transitions, model: EnsembleModel):
        key, start_key, roll_key, sac_key = epoch_streams(state.key)
        num_real = data.observations.shape[0]
        starts = sample_rows(data, start_key, config.rollout_batch_size, num_real).observations
        bounds = data_bounds(data) if config.rollout_clip == "data" else None
        out = rollout(roll_key, model, state.sac.actor_params, starts, state.penalty_coef, bounds)
        rows, valid = out.transitions()
        buffer = buffer_add(state.buffer, rows, valid)
        sac, infos = _sac_updates(sac_update, config, data, buffer, state.sac, sac_key,
                                  state.target_entropy)
        metrics = _epoch_metrics(infos, out, valid, buffer, config.rollout_batch_size)
        return state.replace(sac=sac, buffer=buffer, key=key, epoch=state.epoch + 1), metrics

    def run_epochs(state: TrainState, data: Transitions, model: EnsembleModel, num_epochs: int):
        return jax.lax.scan(lambda s, _: epoch(s, data, model), state, None, length=num_epochs)

    run_jit = jax.jit(run_epochs, static_argnums=3, donate_argnums=0)  # state updated in place

    train_jit = jax.jit(lambda key, d, m: run_epochs(init(key), d, m, config.epochs))

    def train(key: jax.Array):
        return train_jit(key, data, model)  # data, model passed as arguments, not as constants

    return TrainFns(init=init, epoch=epoch, run_epochs=run_jit, train=train)


def memory_estimate(config: TrainConfig, num_rows: int, obs_dim: int, act_dim: int,
                    num_policies: int) -> dict[str, int]:
    """Bytes that a run surely allocates (float32), by part: the real data [num_rows] (one copy),
    the model buffers (capacity rows per policy) and one epoch's rollout outputs (h × B rows per
    policy). A lower bound of the peak (activations and compiled temporaries come on top), for a
    pre-check that refuses sizes that cannot fit."""
    row = 4 * (2 * obs_dim + act_dim + 2)  # obs, next_obs, action, reward, done
    rollout_row = 4 * (2 * obs_dim + act_dim + 5)  # + raw reward, penalty, valid
    return {"data": num_rows * row,
            "model buffers": num_policies * config.buffer_capacity * row,
            "rollouts": num_policies * config.rollout_length * config.rollout_batch_size * rollout_row}

