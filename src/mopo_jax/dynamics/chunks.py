"""A fit epoch as short compiled calls (shuffle, chunks of steps, holdout), with `fit`'s numbers."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mopo_jax.dynamics import fit as _fit
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.dynamics.epoch import _close_epoch, _epoch_batches, _steps
from mopo_jax.dynamics.stopping import keep_training

# Minibatch steps per compiled call for one seed (fit_many: divided by the number of seeds). At
# the paper's shapes (7 members of 4x200, batch 256) a step takes ~20 ms on a 2-core CPU, so a
# call lasts ~1-2 s: the longest a Ctrl-C waits. Any value gives the same numbers.
STEPS_PER_CALL = 64


class EpochBatches(NamedTuple):
    """One epoch's minibatches (K = steps per epoch): idx [K, E, B] int32, weights [K, B] float32
    or None (no padded rows). fit_many: idx [S, K, E, B], weights the same for every seed."""

    idx: jax.Array
    weights: jax.Array | None


class StepState(NamedTuple):
    """An epoch in progress: trainable params and optimiser state after the steps run so far, and
    losses [K] (the steps' minibatch losses; unrun steps hold 0). fit_many: a leading axis S
    on trainable and opt_state, losses [K, S]."""

    trainable: dict
    opt_state: Any
    losses: jax.Array


def _begin(data, carry, config: DynamicsConfig) -> tuple[EpochBatches, StepState]:
    idx, weights = _epoch_batches(data, carry, config)
    zeros = jnp.zeros((idx.shape[0],), jnp.float32)
    return EpochBatches(idx, weights), StepState(carry.trainable, carry.opt_state, zeros)


def _run(data, batches: EpochBatches, state: StepState, start, num_steps: int,
         config: DynamicsConfig) -> StepState:
    idx = jax.lax.dynamic_slice_in_dim(batches.idx, start, num_steps)
    weights = (None if batches.weights is None
               else jax.lax.dynamic_slice_in_dim(batches.weights, start, num_steps))
    (trainable, opt_state), step_losses = _steps(
        data, state.trainable, state.opt_state, idx, weights, config)
    return StepState(trainable, opt_state,
                     jax.lax.dynamic_update_slice_in_dim(state.losses, step_losses, start, 0))


def _end(data, carry, state: StepState, config: DynamicsConfig):
    return _close_epoch(data, carry, state.trainable, state.opt_state, state.losses, config)


def _end_frozen(data, carry, state: StepState, config: DynamicsConfig):
    """`_end`, but a fit that had already stopped keeps its carry (as in fit_many's loop)."""
    active = keep_training(carry.since_update, carry.epoch, config)
    return jax.tree.map(lambda new, old: jnp.where(active, new, old),
                        _end(data, carry, state, config), carry)


class EpochCalls(NamedTuple):
    """The compiled pieces of a fit, for one seed (`SINGLE`) or vmapped over seeds (`MANY`);
    `config` is always passed by keyword.

    setup(key(s), transitions, config=) -> (data, carry, stats); begin(data, carry, config=) ->
    (EpochBatches, StepState); run(data, batches, state, start, num_steps=, config=) -> StepState;
    end(data, carry, state, config=) -> carry; finish(data, carry, stats, config=) ->
    (EnsembleModel, FitReport); going(carry, config) -> [] bool: whether any fit still trains.
    """

    setup: Callable
    begin: Callable
    run: Callable
    end: Callable
    finish: Callable
    going: Callable


# As in fit_many's vmapped scan: the step losses stacked [K, S], the padding weights (the same for
# every seed) not batched. So each step and the epoch's mean loss compile to the same reductions
# (a batched weights vector or a [S, K] buffer gives sums in another order).
_STATE_AXES = StepState(0, 0, 1)
_BATCH_AXES = EpochBatches(0, None)


def _many_begin(data, carry, config: DynamicsConfig):
    return jax.vmap(functools.partial(_begin, config=config),
                    out_axes=(_BATCH_AXES, _STATE_AXES))(data, carry)


def _many_run(data, batches, state, start, num_steps: int, config: DynamicsConfig) -> StepState:
    return jax.vmap(lambda d, b, s: _run(d, b, s, start, num_steps, config),
                    in_axes=(0, _BATCH_AXES, _STATE_AXES), out_axes=_STATE_AXES)(data, batches, state)


def _many_end(data, carry, state, config: DynamicsConfig):
    return jax.vmap(functools.partial(_end_frozen, config=config),
                    in_axes=(0, 0, _STATE_AXES))(data, carry, state)


def _jit(f: Callable, *static: str) -> Callable:
    return jax.jit(f, static_argnames=("config",) + static)


SINGLE = EpochCalls(
    setup=_fit._setup_jit, begin=_jit(_begin), run=_jit(_run, "num_steps"), end=_jit(_end),
    finish=_fit._finish_jit, going=lambda carry, config: _fit._keep_training(carry, config))
MANY = EpochCalls(
    setup=_fit._setup_many, begin=_jit(_many_begin), run=_jit(_many_run, "num_steps"),
    end=_jit(_many_end), finish=_fit._finish_many,
    going=lambda carry, config: jnp.any(keep_training(carry.since_update, carry.epoch, config)))


def run_epoch(calls: EpochCalls, data, carry, config: DynamicsConfig, steps_per_call: int):
    """One epoch of every fit in `carry` (an `epoch._FitCarry`; MANY: leading axis S), as a shuffle
    call, ceil(K / steps_per_call) calls of at most `steps_per_call` steps each, and a holdout call.

    Waits for each call before making the next, so a KeyboardInterrupt is raised between calls
    (within one call's time) and leaves `carry` untouched. The result is bit-for-bit the carry of
    `fit`'s (or `fit_many`'s) epoch: the same step function on the same minibatches.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call={steps_per_call}: need >= 1")
    batches, state = calls.begin(data, carry, config=config)
    num_steps = batches.idx.shape[-3]
    for start in range(0, num_steps, steps_per_call):
        state = calls.run(data, batches, state, jnp.int32(start),
                          num_steps=min(steps_per_call, num_steps - start), config=config)
        jax.block_until_ready(state)
    return jax.block_until_ready(calls.end(data, carry, state, config=config))
