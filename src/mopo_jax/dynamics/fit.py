"""Fitting the ensemble in one compiled call: epochs, holdout early stopping, snapshot restore, elites."""

from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax.dynamics import batches, losses
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.dynamics.epoch import _FitCarry, _FitData, _optimizer, _train_epoch
from mopo_jax.dynamics.model import EnsembleModel, init_ensemble_params
from mopo_jax.dynamics.stopping import keep_training
from mopo_jax.dynamics.stopping import update_snapshots as update_snapshots  # kept: fit.update_snapshots
from mopo_jax.keys import fit_streams
from mopo_jax.types import Transitions


class FitReport(flax.struct.PyTreeNode):
    """Summary of a fit. H = config.epoch_cap; history rows past `epochs` are NaN.

    epochs: int32, epochs run.  holdout_mse: [E] best (restored) holdout MSE per member.
    best_epoch: [E] int32 epoch (0-based) of each member's restored snapshot.
    elite_idx: [num_elites] int32.  elite_holdout_mse_per_dim: [D] per-output holdout MSE averaged over elites.
    train_loss_history: [H] mean minibatch training loss per epoch.
    holdout_mse_history: [H, E] holdout MSE per epoch and member.
    """

    epochs: jax.Array
    holdout_mse: jax.Array
    best_epoch: jax.Array
    elite_idx: jax.Array
    elite_holdout_mse_per_dim: jax.Array
    train_loss_history: jax.Array
    holdout_mse_history: jax.Array


def _setup(key: jax.Array, transitions: Transitions, config: DynamicsConfig):
    inputs, targets = batches.make_targets(transitions)
    num_rows = inputs.shape[0]
    num_holdout = batches.num_holdout_rows(num_rows, config)
    if num_holdout < 1 or num_rows - num_holdout < 1:
        raise ValueError(f"{num_rows} transitions give a holdout of {num_holdout} rows; need >= 1 "
                         "holdout and >= 1 training row (use more data or a larger holdout_fraction)")
    k_split, k_init, k_boot, k_epochs = fit_streams(key)
    train_idx, holdout_idx = batches.holdout_split(k_split, num_rows, num_holdout)
    train_x, train_y = inputs[train_idx], targets[train_idx]
    mean = jnp.mean(train_x, axis=0)
    std = jnp.std(train_x, axis=0)
    std = jnp.where(std < 1e-12, 1.0, std)
    data = _FitData(
        train_x=(train_x - mean) / std, train_y=train_y,
        holdout_x=(inputs[holdout_idx] - mean) / std, holdout_y=targets[holdout_idx],
        boot_idx=batches.bootstrap_indices(k_boot, config.num_members, num_rows - num_holdout),
        epoch_key=k_epochs)
    out_dim = targets.shape[-1]
    net = init_ensemble_params(
        k_init, config.num_members, inputs.shape[-1], out_dim, config.hidden_sizes)
    trainable = {
        "net": net,
        "max_logvar": jnp.full((out_dim,), config.max_logvar_init, jnp.float32),
        "min_logvar": jnp.full((out_dim,), config.min_logvar_init, jnp.float32),
    }
    cap, num_members = config.epoch_cap, config.num_members
    carry = _FitCarry(
        epoch=jnp.int32(0), trainable=trainable, opt_state=_optimizer(config).init(trainable),
        best_net=net, best_mse=jnp.full((num_members,), jnp.inf, jnp.float32),
        best_epoch=jnp.full((num_members,), -1, jnp.int32), since_update=jnp.int32(0),
        train_loss_history=jnp.full((cap,), jnp.nan, jnp.float32),
        holdout_mse_history=jnp.full((cap, num_members), jnp.nan, jnp.float32))
    return data, carry, (mean, std)


def _keep_training(carry: _FitCarry, config: DynamicsConfig) -> jax.Array:
    return keep_training(carry.since_update, carry.epoch, config)


@functools.partial(jax.jit, static_argnames="config")
def _run_epochs(data: _FitData, carry: _FitCarry, stop_at: jax.Array, config: DynamicsConfig):
    """Train epochs until early stopping, the epoch cap, or epoch == stop_at (for progress chunks)."""
    return jax.lax.while_loop(
        lambda c: _keep_training(c, config) & (c.epoch < stop_at),
        lambda c: _train_epoch(data, c, config), carry)


def _finish(data: _FitData, carry: _FitCarry, stats, config: DynamicsConfig):
    elite_idx = jnp.argsort(carry.best_mse)[: config.num_elites].astype(jnp.int32)
    per_dim = losses.per_dim_mse(carry.best_net, data.holdout_x, data.holdout_y, config.activation)
    model = EnsembleModel(
        params=carry.best_net, max_logvar=carry.trainable["max_logvar"],
        min_logvar=carry.trainable["min_logvar"], input_mean=stats[0], input_std=stats[1],
        elite_idx=elite_idx, activation=config.activation)
    report = FitReport(
        epochs=carry.epoch, holdout_mse=carry.best_mse, best_epoch=carry.best_epoch,
        elite_idx=elite_idx, elite_holdout_mse_per_dim=jnp.mean(per_dim[elite_idx], axis=0),
        train_loss_history=carry.train_loss_history, holdout_mse_history=carry.holdout_mse_history)
    return model, report


@functools.partial(jax.jit, static_argnames="config")
def _fit_compiled(key: jax.Array, transitions: Transitions, config: DynamicsConfig):
    data, carry, stats = _setup(key, transitions, config)
    carry = _run_epochs(data, carry, jnp.int32(config.epoch_cap), config)
    return _finish(data, carry, stats, config)


_setup_jit = jax.jit(_setup, static_argnames="config")


_finish_jit = jax.jit(_finish, static_argnames="config")


class FitFailed(RuntimeError):
    """A fit that never improved on its holdout set (e.g. NaN/inf data): not a usable model."""


class EpochInfo(NamedTuple):
    """What `fit(..., on_epoch=...)` receives after each epoch (host values).

    epoch: epochs done (1-based); train_loss: mean minibatch loss; holdout_mse: [E] this epoch's
    holdout MSE per member; best_mse: [E] best so far; epochs_since_update: epochs in a row with no
    member improving; seconds: wall time since the fit started (compilation included);
    resumed_from: epochs already done when this call started (a resumed fit), so the rate is
    seconds / (epoch - resumed_from).
    """

    epoch: int
    train_loss: float
    holdout_mse: np.ndarray
    best_mse: np.ndarray
    epochs_since_update: int
    seconds: float
    resumed_from: int = 0


def fit(key: jax.Array, transitions: Transitions, config: DynamicsConfig = DynamicsConfig(),
        *, on_epoch: Callable[[EpochInfo], None] | None = None) -> tuple[EnsembleModel, FitReport]:
    """Fit the ensemble with bootstrap minibatches, holdout early stopping and snapshot restore.

    Pure and, without `on_epoch`, one compiled call (also traceable under an outer jax.jit with
    `config` static). With `on_epoch`, the same compiled epoch loop is driven one epoch per call
    from the host and `on_epoch(EpochInfo)` is called after each epoch; the result is identical.
    Early stopping follows the rule in `DynamicsConfig`'s docstring.

    Args:
      key: PRNG key (holdout split, init, bootstrap, per-epoch shuffles).
      transitions: N transitions (obs_dim o, act_dim a).
      config: static hyper-parameters.
    Returns:
      (EnsembleModel with E = config.num_members, FitReport).
    """
    if on_epoch is None:
        return _fit_compiled(key, transitions, config)
    data, carry, stats = _setup_jit(key, transitions, config)
    start = time.perf_counter()
    while bool(_keep_training(carry, config)):
        carry = _run_epochs(data, carry, carry.epoch + 1, config)
        epoch = int(carry.epoch) - 1
        on_epoch(EpochInfo(epoch + 1, float(carry.train_loss_history[epoch]),
                           np.asarray(carry.holdout_mse_history[epoch]), np.asarray(carry.best_mse),
                           int(carry.since_update), time.perf_counter() - start))
    return _finish_jit(data, carry, stats, config)


def fit_failures(report: FitReport) -> list[str]:
    """Why a fitted ensemble is unusable, or [] when it is fine (host check of a FitReport).

    A member whose best holdout MSE is not finite never improved on its initial network.
    """
    best = np.asarray(report.holdout_mse)
    bad = np.flatnonzero(~np.isfinite(best))
    if bad.size:
        return [f"members {bad.tolist()} never reached a finite holdout MSE in "
                f"{int(report.epochs)} epochs (best {best.tolist()})"]
    return []


@functools.partial(jax.jit, static_argnames="config")
def _fit_many_compiled(keys: jax.Array, transitions: Transitions, config: DynamicsConfig):
    return jax.vmap(lambda key: _fit_compiled(key, transitions, config))(keys)


@functools.partial(jax.jit, static_argnames="config")
def _setup_many(keys, transitions, config):
    return jax.vmap(lambda key: _setup(key, transitions, config))(keys)


@functools.partial(jax.jit, static_argnames="config")
def _epoch_many(data, carry, config):
    return jax.vmap(lambda d, c: _run_epochs(d, c, c.epoch + 1, config))(data, carry)


@functools.partial(jax.jit, static_argnames="config")
def _finish_many(data, carry, stats, config):
    return jax.vmap(lambda d, c, s: _finish(d, c, s, config))(data, carry, stats)


def fit_many(keys: jax.Array, transitions: Transitions, config: DynamicsConfig = DynamicsConfig(),
             *, on_epoch: Callable[[EpochInfo], None] | None = None) -> tuple[EnsembleModel, FitReport]:
    """Fit S independent ensembles: `fit` vmapped over keys [S].

    Each one equals `fit(keys[i], transitions, config)` (its own holdout split, init, bootstrap and
    early stopping; the loop runs until the last one stops, the others are frozen meanwhile).
    Without `on_epoch` it is one compiled call; with it, the same vmapped epoch is driven from the
    host and `on_epoch(EpochInfo)` gets each epoch's values with a leading axis S (train_loss [S],
    holdout_mse and best_mse [S, E], epochs_since_update [S]); the result is identical.
    Returns (EnsembleModel, FitReport) with a leading axis S on every array.
    """
    if on_epoch is None:
        return _fit_many_compiled(keys, transitions, config)
    data, carry, stats = _setup_many(keys, transitions, config)
    start = time.perf_counter()
    while bool(jnp.any(keep_training(carry.since_update, carry.epoch, config))):
        carry = _epoch_many(data, carry, config)
        rows = np.arange(carry.epoch.shape[0])
        last = np.maximum(np.asarray(carry.epoch) - 1, 0)
        on_epoch(EpochInfo(int(np.max(carry.epoch)),
                           np.asarray(carry.train_loss_history)[rows, last],
                           np.asarray(carry.holdout_mse_history)[rows, last],
                           np.asarray(carry.best_mse), np.asarray(carry.since_update),
                           time.perf_counter() - start))
    return _finish_many(data, carry, stats, config)
