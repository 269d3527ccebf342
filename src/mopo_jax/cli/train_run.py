"""The train command's JAX side: check the run dir, load data and ensembles, run, print a summary."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp

from mopo_jax import rundir
from mopo_jax.cli.train_checks import (IDENTITY_OPTIONS, check_memory, check_resumed_data,
                                       check_run_dir, check_same_settings, clear_run_files,
                                       default_logdir, holds_run)
from mopo_jax.cli.common import command_line, stop_at_chunk_end
from mopo_jax.cli.train_flags import PROG, RunOptions
from mopo_jax.data.flat import check_env_dims
from mopo_jax.data.load import DatasetError, load_dataset
from mopo_jax.dynamics import io as dynamics_io
from mopo_jax.dynamics.fit import FitFailed
from mopo_jax.envs.evaluate import evaluate_policies
from mopo_jax.envs.episode_pool import EpisodePool, EvaluationWorkerDied
from mopo_jax.envs.ood_env import make_eval_env
from mopo_jax.mopo.config import TrainConfig
from mopo_jax.mopo.grid import Grid
from mopo_jax.mopo.run import RunSpec, TrainingDiverged, config_record, run
from mopo_jax.run_layout import CONFIG_FILE
from mopo_jax.sharding import barrier
from mopo_jax.tracking import make_tracker

log = logging.getLogger("mopo_jax.train")
STOP_NOTICE = ("stopping once the current chunk of epochs is done and checkpointed (seconds on a "
               "GPU, up to a minute on a CPU); interrupt again to stop at once, losing the epochs "
               "since the last checkpoint")
PREPARING = "preparing its dynamics ensembles (fitting or loading them)"
USER_ERRORS = (ValueError, DatasetError, FitFailed, rundir.RunDirError, TrainingDiverged,
               FileNotFoundError, PermissionError, ImportError, EvaluationWorkerDied)


def _models(config: TrainConfig, options: RunOptions, data, dataset, seeds):
    """Ensembles stacked [S] (one per seed) or [1] (shared), and their identities."""
    obs_dim, act_dim = data.observations.shape[1], data.actions.shape[1]
    if options.dynamics_path:
        model, _ = dynamics_io.load(options.dynamics_path, obs_dim=obs_dim, act_dim=act_dim,
                                    config=config.dynamics)
        return jax.tree.map(lambda x: x[None], model), [str(options.dynamics_path)]
    fit_seeds = [options.seed] if options.shared_model else list(seeds)
    return dynamics_io.fit_or_load(config.dynamics, data, dataset.info, fit_seeds,
                                   on_epoch=functools.partial(dynamics_io.log_epoch,
                                                              patience=config.dynamics.patience))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    out = {}
    for name in ("jax", "flax", "optax", "gymnasium", "mujoco", "minari", "mopo_jax"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _meta(options: RunOptions, dataset, model_keys, argv) -> dict:
    info = dataset.info
    return {"dataset": info.name, "dataset_source": info.source, "minari_id": info.minari_id,
            "data_stamp": info.data_stamp, "num_transitions": dataset.size,
            **{name: getattr(options, name) for name in IDENTITY_OPTIONS},
            "dynamics_models": model_keys, "ref_source": info.ref_source,
            "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()}, "
                      f"{len(jax.devices())} devices, {os.cpu_count()} host cores)",
            "processes": jax.process_count(),
            "jax_version": jax.__version__, "versions": _versions(), "git_commit": _git_commit(),
            "command": command_line(PROG, argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _write_early_config(run_dir: Path, config: TrainConfig, grid: Grid, meta: dict) -> None:
    """config.json of a new run before its (possibly hours-long) dynamics fit, so that the folder
    reads as a run from the start: `report` says it is preparing, and the same command (or
    --resume) continues it after an interruption. The run rewrites it in full when it starts."""
    rundir.write_json(run_dir / CONFIG_FILE, config_record(config, grid, meta) | {"phase": PREPARING})


def _printer(config: TrainConfig, grid: Grid):
    """A rows callback printing one line per finished chunk, timestamped like the log lines: its
    evaluations (if any), the SAC speed of that chunk, and the ETA at the mean rate of the chunks
    seen so far."""
    policies, seen = len(grid.policies()), {"epochs": 0, "seconds": 0.0}

    def show(rows: list[dict]) -> None:
        epoch = max(r["epoch"] for r in rows)
        last = [r for r in rows if r["epoch"] == epoch]
        chunk_epochs, seconds = len({r["epoch"] for r in rows}), last[-1]["chunk_seconds"]
        seen["epochs"] += chunk_epochs
        seen["seconds"] += seconds
        speed = chunk_epochs * config.steps_per_epoch * policies / max(seconds, 1e-9)
        eta = seen["seconds"] / seen["epochs"] * (config.epochs - epoch)
        line = f"{time.strftime('%H:%M:%S')} epoch {epoch:5d}/{config.epochs}"  # as log lines
        if "eval_return" in last[0]:
            scores = [r["normalized_score"] for r in last]
            line += "  return " + " ".join(f"{r['eval_return']:.1f}" for r in last)
            if None not in scores:
                line += "  normalised " + " ".join(f"{s:.1f}" for s in scores)
        line += (f"  penalty {last[0]['rollout_penalty']:.3f}  {speed:.0f} SAC steps/s"
                 f"  ETA {eta / 60:.1f} min")
        print(line, flush=True)
        if "final_eval_return" in last[0]:
            print(f"{time.strftime('%H:%M:%S')} final evaluation "
                  f"({last[0]['final_eval_episodes']} fresh episodes): return "
                  + " ".join(f"{r['final_eval_return']:.1f}" for r in last), flush=True)

    return show


def _start_processes(options: RunOptions) -> None:
    """Join a multi-process run (jax.distributed); 'auto' lets JAX read SLURM/TPU/MPI settings."""
    if options.coordinator == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(options.coordinator, num_processes=options.num_processes,
                                   process_id=options.process_id)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def _process_zero_first(name: str, build):
    """`build()` in process 0, then in the others: they find what it cached (data, ensembles) and
    do not build it again (on hosts without a shared cache they build the same thing themselves)."""
    if jax.process_index() == 0:
        value = build()
        barrier(name)
        return value
    barrier(name)
    return build()


@contextlib.contextmanager
def _evaluator(env, workers: int):
    """The run's `evaluate(actors [P, ...], seeds [P, E]) -> returns [P, E]`: in this process, or
    with `workers` > 0 on an EpisodePool of that many processes (same returns), closed after."""
    if not workers:
        yield lambda actors, seeds: evaluate_policies(actors, env, seeds)
        return
    with EpisodePool(env, workers) as pool:
        yield pool.evaluate


def execute(config: TrainConfig, coefs, lengths, options: RunOptions, argv: list[str]) -> int:
    """Run the train command once its flags parsed; returns the exit code."""
    if options.coordinator:
        _start_processes(options)
        check_same_settings(config, coefs, lengths, options)
    writer = jax.process_index() == 0
    grid = Grid(tuple(options.seed + i for i in range(options.num_seeds)), tuple(coefs), tuple(lengths))
    run_dir = Path(options.logdir) if options.logdir else default_logdir(config, grid, options)
    if not options.logdir and not options.overwrite and not options.resume and holds_run(run_dir):
        options = dataclasses.replace(options, resume=True)  # the same command, run again
        if writer:
            print(f"{run_dir} holds the run of this exact command: continuing it "
                  "(--overwrite starts it afresh)", file=sys.stderr, flush=True)
    saved = check_run_dir(run_dir, options, config, grid)
    barrier("run directory checked")  # by every process, before process 0 writes in it
    with rundir.RunLock(run_dir) if writer else contextlib.nullcontext():
        dataset = _process_zero_first("dataset", lambda: load_dataset(
            config.dataset, num_steps=options.dataset_steps,
            allow_download=False if options.offline else None,
            download_timeout_s=options.download_timeout))
        check_resumed_data(saved, dataset, run_dir)
        check_env_dims(dataset, dataset.info)  # before any fit or write
        data = jax.tree.map(jnp.asarray, dataset.transitions())
        check_memory(config, grid, data)
        if writer and saved is None and not holds_run(run_dir):
            _write_early_config(run_dir, config, grid, _meta(options, dataset, None, argv))
        models, model_keys = _process_zero_first(
            "ensembles", lambda: _models(config, options, data, dataset, grid.seeds))
        info = dataset.info
        env = functools.partial(make_eval_env, info.task) if info.task else info.env_id
        if options.overwrite and writer:
            clear_run_files(run_dir)
        meta = _meta(options, dataset, model_keys, argv)
        spec = RunSpec(config, grid, run_dir, meta, (info.ref_min_score, info.ref_max_score),
                       checkpoint_seconds=60.0 * options.checkpoint_minutes,
                       num_devices=options.num_devices, resume=options.resume,
                       env_name=info.env_name)
        callbacks = [_printer(config, grid)] if options.progress and writer else []
        tracker = make_tracker(options.track, run_dir, meta) if options.track != "none" and writer else None
        if tracker is not None:
            callbacks.append(tracker.log_rows)
        try:
            with _evaluator(env, options.eval_workers) as evaluate, \
                    stop_at_chunk_end(STOP_NOTICE) as stop:
                results = run(spec, data, models, callbacks=callbacks, stop_requested=stop.requested,
                              evaluate=evaluate)
        finally:
            if tracker is not None:
                tracker.close()
    if writer:
        print(json.dumps({"run_dir": str(run_dir), **{k: results[k] for k in (
            "dataset", "epochs", "policy_ids", "final_return_mean", "final_normalized_score",
            "ref_source", "dataset_source")}}))
    return 0
