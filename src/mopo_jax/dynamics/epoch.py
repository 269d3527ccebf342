"""One epoch of the ensemble fit: its data and carry, minibatches, gradient steps, holdout MSE and
snapshots (`fit` runs these in a compiled loop; `chunks` runs the same pieces as separate calls)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mopo_jax.dynamics import batches, losses
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.dynamics.stopping import update_snapshots


class _FitData(NamedTuple):
    """The fit's fixed data (I inputs, D targets, H holdout rows, E members)."""

    train_x: jax.Array  # [N_train, I] standardised
    train_y: jax.Array  # [N_train, D]
    holdout_x: jax.Array  # [H, I] standardised
    holdout_y: jax.Array  # [H, D]
    boot_idx: jax.Array  # [E, N_train]
    epoch_key: jax.Array


class _FitCarry(NamedTuple):
    """What the epoch loop carries: epochs done, trainable params and optimiser state, each
    member's best snapshot so far, and the histories ([epoch_cap] and [epoch_cap, E], NaN until run)."""

    epoch: jax.Array
    trainable: dict
    opt_state: optax.OptState
    best_net: dict
    best_mse: jax.Array
    best_epoch: jax.Array
    since_update: jax.Array
    train_loss_history: jax.Array
    holdout_mse_history: jax.Array


def _optimizer(config: DynamicsConfig) -> optax.GradientTransformation:
    """Adam on every trainable array (networks and log-variance bounds)."""
    return optax.adam(config.learning_rate)


def _loss_fn(config: DynamicsConfig):
    """`loss(trainable, x [E, B, I], y [E, B, D], weights [B] or None) -> []`: the Gaussian NLL
    objective with the config's activation, weight decays and log-variance bound weight."""
    return functools.partial(
        losses.gaussian_nll_loss, activation=config.activation,
        hidden_weight_decays=config.hidden_weight_decays, head_weight_decay=config.head_weight_decay,
        logvar_bound_coef=config.logvar_bound_coef)


def _epoch_batches(data: _FitData, carry: _FitCarry, config: DynamicsConfig):
    """This epoch's minibatches: (idx [K, E, B] int32, weights [K, B] or None), K steps."""
    key = jax.random.fold_in(data.epoch_key, carry.epoch)
    return batches.epoch_minibatches(key, data.boot_idx, config.batch_size)


def _steps(data: _FitData, trainable: dict, opt_state, idx: jax.Array, weights, config: DynamicsConfig):
    """Gradient steps over minibatches idx [K, E, B] (weights [K, B] or None):
    ((trainable, opt_state), losses [K])."""
    optimizer, grad_fn = _optimizer(config), jax.value_and_grad(_loss_fn(config))

    def step(state, batch):
        trainable, opt_state = state
        b_idx, b_weights = batch
        loss, grads = grad_fn(trainable, data.train_x[b_idx], data.train_y[b_idx], b_weights)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return (optax.apply_updates(trainable, updates), opt_state), loss

    return jax.lax.scan(step, (trainable, opt_state), (idx, weights))


def _close_epoch(data: _FitData, carry: _FitCarry, trainable: dict, opt_state,
                 step_losses: jax.Array, config: DynamicsConfig) -> _FitCarry:
    """End of an epoch whose steps gave (trainable, opt_state) and losses [K]: holdout, snapshots."""
    mse = jnp.mean(losses.per_dim_mse(trainable["net"], data.holdout_x, data.holdout_y,
                                        config.activation), axis=-1)
    best_net, best_mse, since, improved = update_snapshots(
        trainable["net"], carry.best_net, carry.best_mse, mse, carry.since_update,
        config.improvement_threshold)
    return _FitCarry(
        epoch=carry.epoch + 1, trainable=trainable, opt_state=opt_state, best_net=best_net,
        best_mse=best_mse, best_epoch=jnp.where(improved, carry.epoch, carry.best_epoch),
        since_update=since,
        train_loss_history=carry.train_loss_history.at[carry.epoch].set(jnp.mean(step_losses)),
        holdout_mse_history=carry.holdout_mse_history.at[carry.epoch].set(mse))


def _train_epoch(data: _FitData, carry: _FitCarry, config: DynamicsConfig) -> _FitCarry:
    """One epoch: every member passes once over its reshuffled bootstrap sample, then holdout/snapshots."""
    idx, weights = _epoch_batches(data, carry, config)
    (trainable, opt_state), step_losses = _steps(
        data, carry.trainable, carry.opt_state, idx, weights, config)
    return _close_epoch(data, carry, trainable, opt_state, step_losses, config)
