"""The resumable fit: the chunked epoch loop, saving its state beside the model it will produce."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import checkpoint
from mopo_jax.dynamics import chunks
from mopo_jax.dynamics import fit as _fit
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.dynamics.fit import EpochInfo, FitReport
from mopo_jax.dynamics.model import EnsembleModel
from mopo_jax.types import Transitions

log = logging.getLogger("mopo_jax.dynamics")

_STATE_KIND = "mopo_jax.dynamics.FitState"
_STATE_VERSION = 1
CHECKPOINT_SECONDS = 300.0


class FitStateFile(NamedTuple):
    """Where one seed's fit keeps its partial state, and what it must match to be resumed.

    prefix: checkpoint prefix of the state (see `partial_prefix`); identity: a string naming the
    fit exactly (e.g. `dynamics.io.cache_key`), compared on resume; seed: for messages only.
    """

    prefix: Path
    identity: str
    seed: int


class FitInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt during a resumable fit, after its state was saved. `epoch`: the epoch
    (max over seeds) the saved state resumes from, 0 when nothing was saved; `paths`: the state
    files (msgpack). str(err) is a one-line message for the user."""

    def __init__(self, epoch: int, paths: Sequence[str]):
        self.epoch, self.paths = epoch, list(paths)
        if paths:
            where = paths[0] + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
            msg = (f"the dynamics fit is saved at epoch {epoch} ({where}); run the same command "
                   "again to continue")
        else:
            msg = "the dynamics fit had not finished an epoch; nothing was saved"
        super().__init__(msg)


def partial_prefix(model_prefix: str | os.PathLike) -> Path:
    """Prefix of the partial fit state of the model saved at `model_prefix`: `<prefix>.partial`
    (files `<prefix>.partial.msgpack` / `.json`, beside the model's own pair)."""
    return Path(checkpoint.msgpack_path(model_prefix)[: -len(".msgpack")] + ".partial")


def remove_state(prefix: str | os.PathLike) -> None:
    """Delete the partial state files at `prefix` (msgpack, JSON, staged JSON); absent ones are fine."""
    for path in (checkpoint.msgpack_path(prefix), checkpoint.json_path(prefix),
                 checkpoint.pending_path(prefix)):
        if os.path.lexists(path):
            os.remove(path)


def _key_data(key: jax.Array) -> list[int]:
    return np.asarray(jax.random.key_data(key)).reshape(-1).tolist()


def _save(file: FitStateFile, carry, key: jax.Array, config: DynamicsConfig) -> None:
    meta = {"kind": _STATE_KIND, "version": _STATE_VERSION, "identity": file.identity,
            "seed": file.seed, "key_data": _key_data(key), "epoch": int(carry.epoch),
            "config": repr(config)}
    checkpoint.save_pytree(file.prefix, checkpoint.keys_to_data(carry), meta)


def _restore(file: FitStateFile, key: jax.Array, template):
    """The saved carry of `file` (jnp leaves), or None when there is none; ValueError when it is
    unreadable or belongs to another fit."""
    if not checkpoint.pair_exists(file.prefix):
        return None
    fresh = (f"delete {checkpoint.msgpack_path(file.prefix)} and "
             f"{checkpoint.json_path(file.prefix)} to start this fit afresh")
    try:
        meta = checkpoint.load_metadata(file.prefix)
        want = {"kind": _STATE_KIND, "version": _STATE_VERSION, "identity": file.identity,
                "key_data": _key_data(key)}
        diffs = [f"{k}: saved {meta.get(k)!r}, this fit {v!r}" for k, v in want.items()
                 if meta.get(k) != v]
        if diffs:
            raise ValueError("it belongs to another fit (" + "; ".join(diffs) + ")")
        tree, _ = checkpoint.load_pytree(file.prefix, template)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"cannot resume the dynamics fit of seed {file.seed} from "
                         f"{file.prefix}: {err}; {fresh}") from None
    return checkpoint.keys_from_data(tree, template)


def _start(calls, keys, transitions, config, files: Sequence[FitStateFile], many: bool):
    """(data, carry, stats) with each seed's saved carry, when present, in place of the fresh one;
    and the epoch each seed's saved state holds (-1: none)."""
    data, carry, stats = calls.setup(keys, transitions, config=config)
    single_keys = list(keys) if many else [keys]
    template = jax.eval_shape(lambda: _fit._setup(single_keys[0], transitions, config)[1])
    seeds = [jax.tree.map(lambda x, i=i: x[i], carry) for i in range(len(files))] if many else [carry]
    saved = []
    for i, file in enumerate(files):
        restored = _restore(file, single_keys[i], template)
        saved.append(-1 if restored is None else int(restored.epoch))
        if restored is not None:
            seeds[i] = restored
            log.info("dynamics: resuming the fit of seed %d at epoch %d from %s", file.seed,
                     saved[-1], checkpoint.msgpack_path(file.prefix))
    carry = jax.tree.map(lambda *xs: jnp.stack(xs), *seeds) if many else seeds[0]
    return data, carry, stats, saved


def _epoch_info(carry, many: bool, seconds: float, resumed_from: int) -> EpochInfo:
    """EpochInfo of the epoch just run (as `fit` / `fit_many` report it)."""
    if not many:
        e = int(carry.epoch) - 1
        return EpochInfo(e + 1, float(carry.train_loss_history[e]),
                         np.asarray(carry.holdout_mse_history[e]), np.asarray(carry.best_mse),
                         int(carry.since_update), seconds, resumed_from)
    rows = np.arange(carry.epoch.shape[0])
    last = np.maximum(np.asarray(carry.epoch) - 1, 0)
    return EpochInfo(int(np.max(carry.epoch)), np.asarray(carry.train_loss_history)[rows, last],
                     np.asarray(carry.holdout_mse_history)[rows, last], np.asarray(carry.best_mse),
                     np.asarray(carry.since_update), seconds, resumed_from)


def _save_all(files, carry, keys, config, saved: list[int], many: bool) -> None:
    """Save each seed's carry whose epoch differs from the one on disk; updates `saved`."""
    epochs = np.asarray(carry.epoch).reshape(-1)
    for i, file in enumerate(files):
        if int(epochs[i]) != saved[i] and (saved[i] >= 0 or epochs[i] > 0):
            seed_carry = jax.tree.map(lambda x, i=i: x[i], carry) if many else carry
            _save(file, seed_carry, keys[i] if many else keys, config)
            saved[i] = int(epochs[i])


def _drive(calls: chunks.EpochCalls, keys, transitions, config, files, many: bool, *,
           steps_per_call, checkpoint_seconds, clock, on_epoch):
    data, carry, stats, saved = _start(calls, keys, transitions, config, files, many)
    if steps_per_call is None:
        steps_per_call = max(1, chunks.STEPS_PER_CALL // len(files))
    last_save, start = clock(), time.perf_counter()
    resumed_from = int(np.max(np.asarray(carry.epoch)))
    try:
        while bool(calls.going(carry, config)):
            carry = chunks.run_epoch(calls, data, carry, config, steps_per_call)
            if on_epoch is not None:
                on_epoch(_epoch_info(carry, many, time.perf_counter() - start, resumed_from))
            if clock() - last_save >= checkpoint_seconds:
                _save_all(files, carry, keys, config, saved, many)
                last_save = clock()
    except KeyboardInterrupt:
        _save_all(files, carry, keys, config, saved, many)
        done = [str(checkpoint.msgpack_path(f.prefix)) for f, e in zip(files, saved) if e >= 0]
        raise FitInterrupted(max(saved) if done else 0, done) from None
    return calls.finish(data, carry, stats, config=config)


def fit_resumable(key: jax.Array, transitions: Transitions, config: DynamicsConfig,
                  state: FitStateFile, *, steps_per_call: int | None = None,
                  checkpoint_seconds: float = CHECKPOINT_SECONDS,
                  clock: Callable[[], float] = time.monotonic,
                  on_epoch: Callable[[EpochInfo], None] | None = None
                  ) -> tuple[EnsembleModel, FitReport]:
    """`fit(key, transitions, config)`, bit for bit, run so that it can be stopped and continued.

    Each epoch runs as short compiled calls of `steps_per_call` minibatch steps (default
    chunks.STEPS_PER_CALL), so a KeyboardInterrupt acts within one call. The fit's state at the
    last finished epoch is saved to `state.prefix` every `checkpoint_seconds` of `clock()` time
    (checked after each epoch) and on a KeyboardInterrupt, which then raises FitInterrupted. On
    start, a state saved there is resumed (logged) when its identity and key match `state` and
    `key`; ValueError names the files otherwise. The caller deletes the state (`remove_state`)
    once the model is saved.

    Args:
      key: PRNG key []; transitions: N transitions; config: static hyper-parameters;
      on_epoch: receives EpochInfo after each epoch (as in `fit`).
    Returns:
      (EnsembleModel with E = config.num_members, FitReport), equal to `fit`'s.
    """
    return _drive(chunks.SINGLE, key, transitions, config, [state], False,
                  steps_per_call=steps_per_call, checkpoint_seconds=checkpoint_seconds,
                  clock=clock, on_epoch=on_epoch)


def fit_many_resumable(keys: jax.Array, transitions: Transitions, config: DynamicsConfig,
                       states: Sequence[FitStateFile], *, steps_per_call: int | None = None,
                       checkpoint_seconds: float = CHECKPOINT_SECONDS,
                       clock: Callable[[], float] = time.monotonic,
                       on_epoch: Callable[[EpochInfo], None] | None = None
                       ) -> tuple[EnsembleModel, FitReport]:
    """`fit_many(keys, transitions, config)`, bit for bit, stoppable and resumable per seed.

    As `fit_resumable`, with keys [S] and states[i] the state file of keys[i]: each seed's state
    is saved and resumed on its own (a seed may resume while another starts afresh). The default
    steps_per_call is chunks.STEPS_PER_CALL // S. on_epoch gets fit_many's EpochInfo (leading S).
    Returns (EnsembleModel, FitReport) with a leading axis S on every array.
    """
    if len(states) != keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} keys but {len(states)} state files")
    return _drive(chunks.MANY, keys, transitions, config, list(states), True,
                  steps_per_call=steps_per_call, checkpoint_seconds=checkpoint_seconds,
                  clock=clock, on_epoch=on_epoch)
