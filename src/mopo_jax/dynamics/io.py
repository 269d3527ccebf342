"""Saving and loading fitted ensembles, and the fit-or-load model cache used by training runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import checkpoint, paths, stale
from mopo_jax.keys import KEY_TREE_VERSION, dynamics_key
from mopo_jax.paths import model_cache_dir
from mopo_jax.dynamics import batches, resumable
from mopo_jax.config_dict import config_to_dict
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.dynamics.fit import EpochInfo, FitFailed, FitReport, fit_failures
from mopo_jax.dynamics.model import EnsembleModel, init_ensemble_params

log = logging.getLogger("mopo_jax.dynamics")


_CHECKPOINT_KIND = "mopo_jax.dynamics.EnsembleModel"


_ARCH_FIELDS = ("num_members", "num_elites", "hidden_sizes", "activation")


def _model_template(config: DynamicsConfig, obs_dim: int, act_dim: int) -> EnsembleModel:
    def build():
        net = init_ensemble_params(jax.random.key(0), config.num_members,
                                            obs_dim + act_dim, obs_dim + 1, config.hidden_sizes)
        vec = lambda n: jnp.zeros((n,), jnp.float32)  # noqa: E731
        return EnsembleModel(net, vec(obs_dim + 1), vec(obs_dim + 1), vec(obs_dim + act_dim),
                             vec(obs_dim + act_dim), jnp.zeros((config.num_elites,), jnp.int32),
                             activation=config.activation)
    return jax.eval_shape(build)


def save(path: str | os.PathLike, model: EnsembleModel, config: DynamicsConfig, *,
         dataset_info=None, num_rows: int | None = None) -> None:
    """Atomically write `<path>.msgpack` (arrays) and `<path>.json` (config, obs/act dims, and the
    dataset it was fitted on when given)."""
    if model.activation != config.activation or model.elite_idx.shape[0] != config.num_elites:
        raise ValueError("model does not match config (activation or num_elites differ)")
    meta = {"kind": _CHECKPOINT_KIND, "config": dataclasses.asdict(config),
            "obs_dim": model.obs_dim, "act_dim": model.act_dim}
    if dataset_info is not None:
        meta["dataset"] = {"name": dataset_info.name, "minari_id": dataset_info.minari_id,
                           "data_stamp": dataset_info.data_stamp, "num_rows": num_rows}
    checkpoint.save_pytree(path, model, meta)


def load(path: str | os.PathLike, *, obs_dim: int | None = None, act_dim: int | None = None,
         config: DynamicsConfig | None = None) -> tuple[EnsembleModel, DynamicsConfig]:
    """Load a model saved by `save`; optional expectations raise ValueError naming any mismatch.

    Args: obs_dim / act_dim: expected sizes; config: expected architecture (num_members, num_elites,
    hidden_sizes, activation are compared). Returns (EnsembleModel, DynamicsConfig).
    """
    meta = checkpoint.load_metadata(path)
    if meta.get("kind") != _CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint.json_path(path)} holds {meta.get('kind')!r}, not a dynamics model")
    saved = DynamicsConfig(**meta["config"])
    problems = [f"{name}: file has {meta[name]}, expected {want}"
                for name, want in (("obs_dim", obs_dim), ("act_dim", act_dim))
                if want is not None and meta[name] != want]
    if config is not None:
        problems += [f"{f}: file has {getattr(saved, f)!r}, expected {getattr(config, f)!r}"
                     for f in _ARCH_FIELDS if getattr(saved, f) != getattr(config, f)]
    if problems:
        raise ValueError(f"dynamics checkpoint {path} does not match: " + "; ".join(problems))
    template = _model_template(saved, meta["obs_dim"], meta["act_dim"])
    model, _ = checkpoint.load_pytree(path, template)
    return jax.tree.map(jnp.asarray, model), saved


def cache_key(dataset_info, num_rows: int, seed: int, config: DynamicsConfig) -> str:
    """Hex key of a cached ensemble: dataset name, Minari id and data-file stamp, rows used, seed,
    the whole dynamics config and the key tree's version (an ensemble fitted from an older key
    derivation is never taken for a new one). Two datasets with the same name but different files (e.g. the
    official download and a local build) get different keys."""
    identity = {"dataset": dataset_info.name, "minari_id": dataset_info.minari_id,
                "data_stamp": dataset_info.data_stamp, "num_rows": int(num_rows), "seed": int(seed),
                "dynamics": config_to_dict(config),
                "key_tree": KEY_TREE_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cache_prefix(dataset_info, num_rows: int, seed: int, config: DynamicsConfig) -> Path:
    """Checkpoint prefix of the cached ensemble for (dataset, rows, seed, config) (see cache_key)."""
    key = cache_key(dataset_info, num_rows, seed, config)
    return model_cache_dir() / f"{dataset_info.name}-n{num_rows}-seed{seed}-{key}"


def check_writable(prefix: str | os.PathLike) -> None:
    """Raise PermissionError naming the folder when `<prefix>.msgpack` could not be written
    (checked before a long fit, so a finished fit is never lost to a bad --out or a read-only
    model cache). A file is created and deleted in the nearest existing folder to make sure."""
    folder = Path(os.path.abspath(os.fspath(prefix))).parent
    probe = folder
    while not probe.exists():
        probe = probe.parent
    problem = None if probe.is_dir() else "it is not a folder"
    if problem is None:
        try:
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as err:
            problem = err.strerror or str(err)
    if problem:
        raise PermissionError(f"cannot write the model to {prefix}: {probe} is not a writable folder "
                              f"({problem}); nothing was fitted. Make it writable, or choose "
                              f"another folder (for the model cache: ${paths.CACHE_ENV_VAR})")


def check_fit(report: FitReport, what: str) -> None:
    """Raise FitFailed naming the members when a fit never improved (see fit_failures)."""
    problems = fit_failures(report)
    if problems:
        raise FitFailed(f"the dynamics fit on {what} failed: {'; '.join(problems)}. Check the data "
                        "for NaN/inf values (python -m mopo_jax.data --dataset ... --rebuild).")


def log_epoch(info: EpochInfo, patience: int | None = None) -> None:
    """An `on_epoch` callback (of `fit` or `fit_many`) that logs one line per epoch on the
    'mopo_jax.dynamics' logger: holdout MSE, best so far, epochs without improvement (against
    `patience`, when given: early stopping decides the end, so no ETA exists), rate."""
    fmt = lambda x: np.array2string(np.asarray(x), precision=4, separator=",")  # noqa: E731
    limit = "" if patience is None else (f" (stops after more than {patience} in a row; the "
                                         "total is not known in advance)")
    log.info("dynamics epoch %d  train loss %s  holdout mse %s  best mean %.5f  no improvement "
             "for %s epochs%s  %.1f s, %.2f s/epoch", info.epoch,
             fmt(info.train_loss), fmt(info.holdout_mse), float(np.mean(info.best_mse)),
             fmt(info.epochs_since_update), limit, info.seconds,
             info.seconds / max(info.epoch - info.resumed_from, 1))


def fit_or_load(config: DynamicsConfig, data, dataset_info, seeds: list[int], on_epoch=None, *,
                checkpoint_seconds: float = resumable.CHECKPOINT_SECONDS,
                steps_per_call: int | None = None) -> tuple[EnsembleModel, list[str]]:
    """Ensembles for `seeds` (one per seed, fitted with `keys.dynamics_key(seed)`), stacked on a
    leading axis [S], and the cache keys they were stored under.

    Each is loaded from the model cache (see cache_key) when present; the missing ones are
    fitted together (`resumable.fit_many_resumable`, equal to `fit_many`), checked (a failed fit
    raises FitFailed and is never cached) and cached. While they fit, each seed's state is saved
    beside its cache entry (`<entry>.partial.*`, every `checkpoint_seconds` and on a
    KeyboardInterrupt, which raises resumable.FitInterrupted); any later call for the same fit
    continues from there, and the state is deleted once the model is cached. `on_epoch` receives
    each epoch's progress (default: a log line); `steps_per_call`: see fit_many_resumable.
    """
    n, obs_dim, act_dim = (int(data.observations.shape[0]), data.observations.shape[1],
                           data.actions.shape[1])
    prefixes = {s: cache_prefix(dataset_info, n, s, config) for s in seeds}
    models = {}
    for s in seeds:
        if Path(checkpoint.json_path(prefixes[s])).exists():
            models[s], _ = load(prefixes[s], obs_dim=obs_dim, act_dim=act_dim, config=config)
            log.info("dynamics: loaded cached ensemble %s", prefixes[s])
    missing = [s for s in seeds if s not in models]
    if missing:
        check_writable(prefixes[missing[0]])  # before the fit, not after it
        stale.remove_stale(model_cache_dir(), ("*.tmp",))  # atomic writes killed over a day ago
        log.info("dynamics: fitting %d x %d members on %d transitions (seeds %s); one epoch is ~%d "
                 "gradient steps per seed", len(missing), config.num_members, n, missing,
                 -(-(n - batches.num_holdout_rows(n, config)) // config.batch_size))
        start = time.perf_counter()
        keys = jnp.stack([dynamics_key(s) for s in missing])  # the key tree (mopo_jax.keys)
        states = [resumable.FitStateFile(resumable.partial_prefix(prefixes[s]),
                                         cache_key(dataset_info, n, s, config), s) for s in missing]
        fitted, report = resumable.fit_many_resumable(
            keys, data, config, states, on_epoch=on_epoch, checkpoint_seconds=checkpoint_seconds,
            steps_per_call=steps_per_call)
        jax.block_until_ready(fitted)
        for i, s in enumerate(missing):
            check_fit(jax.tree.map(lambda x, i=i: x[i], report), f"{dataset_info.name} (seed {s})")
        log.info("dynamics: %.1f s; epochs %s; holdout MSE per member %s; elites %s",
                 time.perf_counter() - start, np.asarray(report.epochs).tolist(),
                 np.round(np.asarray(report.holdout_mse), 5).tolist(),
                 np.asarray(report.elite_idx).tolist())
        for i, s in enumerate(missing):
            models[s] = jax.tree.map(lambda x, i=i: x[i], fitted)
            save(prefixes[s], models[s], config, dataset_info=dataset_info, num_rows=n)
            resumable.remove_state(states[i].prefix)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(models[s] for s in seeds))
    return stacked, [prefixes[s].name for s in seeds]
