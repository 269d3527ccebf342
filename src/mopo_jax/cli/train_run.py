"""The train command's JAX side: check the run dir, load data and ensembles, run, print a summary."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp

from mopo_jax import paths, rundir
from mopo_jax.cli.train_flags import RunOptions
from mopo_jax.data.flat import check_env_dims
from mopo_jax.data.load import DatasetError, load_dataset
from mopo_jax.dynamics import io as dynamics_io
from mopo_jax.dynamics.fit import FitFailed
from mopo_jax.envs.evaluate import evaluate_policies
from mopo_jax.envs.ood_env import make_eval_env
from mopo_jax.mopo.config import TrainConfig, config_to_dict
from mopo_jax.mopo.grid import Grid
from mopo_jax.mopo.run import RunSpec, TrainingDiverged, resume_mismatch, run
from mopo_jax.mopo.train import memory_estimate
from mopo_jax.sharding import barrier, processes_differing
from mopo_jax.tracking import make_tracker

log = logging.getLogger("mopo_jax.train")
USER_ERRORS = (ValueError, DatasetError, FitFailed, rundir.RunDirError, TrainingDiverged,
               FileNotFoundError, PermissionError, ImportError)
RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "checkpoints", "policies",
             "tensorboard", "wandb", "report.md")


# RunOptions fields that decide what a run trains on: recorded in config.json, and a --resume
# with other values is refused.
IDENTITY_OPTIONS = ("dataset_steps", "seed", "num_seeds", "shared_model", "dynamics_path")
# config.json fields that identify the data a run trains on (checked on --resume once loaded).
DATA_IDENTITY = ("minari_id", "data_stamp", "num_transitions")


def default_logdir(config: TrainConfig, grid: Grid, options: RunOptions) -> Path:
    """runs/<dataset>-h<h>-lam<λ>-seed<s>-<hash>: distinct for every config, grid and data
    selection (IDENTITY_OPTIONS), so re-running the same command finds the same directory."""
    chosen = {name: getattr(options, name) for name in IDENTITY_OPTIONS}
    identity = json.dumps([config_to_dict(config), grid.to_dict(), chosen], sort_keys=True)
    tag = hashlib.sha256(identity.encode()).hexdigest()[:8]
    part = lambda name, xs: f"{name}{xs[0]:g}" if len(xs) == 1 else f"{name}x{len(xs)}"  # noqa: E731
    return paths.default_run_dir(f"{config.dataset}-{part('h', grid.rollout_lengths)}-"
                                 f"{part('lam', grid.penalty_coefs)}-{part('seed', grid.seeds)}-{tag}")


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds (part of) a training run."""
    return run_dir.is_dir() and any((run_dir / f).exists() for f in RUN_FILES)


def _option_mismatch(saved: dict, options: RunOptions) -> list[str]:
    return [f"{name}: saved {saved.get(name)!r}, requested {getattr(options, name)!r}"
            for name in IDENTITY_OPTIONS
            if name in saved and saved.get(name) != getattr(options, name)]


def check_resumed_data(saved: dict | None, dataset, run_dir: Path) -> None:
    """Refuse a --resume whose loaded data differ from the saved run's (before any fit or write)."""
    if not saved:
        return
    now = {"minari_id": dataset.info.minari_id, "data_stamp": dataset.info.data_stamp,
           "num_transitions": dataset.size}
    diffs = [f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in DATA_IDENTITY
             if k in saved and saved[k] != now[k]]
    if diffs:
        raise ValueError(f"--resume: {run_dir} was trained on other data: " + "; ".join(diffs)
                         + ". Use a new --logdir, or --overwrite.")


def check_run_dir(run_dir: Path, options: RunOptions, config: TrainConfig, grid: Grid) -> dict | None:
    """Refuse, before anything is written, to reuse a run directory without --resume/--overwrite,
    and a --resume whose settings differ from the saved run (naming the differing fields).
    Returns the saved config.json of a run to resume (None otherwise)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--logdir {run_dir} is a file, not a directory")
    if not holds_run(run_dir):
        return None
    if options.resume:
        saved_path = run_dir / "config.json"
        try:
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"--resume: {saved_path} is unreadable ({err}); use a new --logdir") from err
        diffs = resume_mismatch(saved, config, grid) + _option_mismatch(saved, options)
        if diffs:
            raise ValueError(f"--resume: {run_dir} was started with other settings: "
                             + "; ".join(diffs) + ". Use a new --logdir, or --overwrite.")
        return saved
    if not options.overwrite:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it, "
                         "--overwrite to replace it, or choose another --logdir")


def clear_run_files(run_dir: Path) -> None:
    """Remove a previous run's files (for --overwrite), after every check has passed."""
    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _models(config: TrainConfig, options: RunOptions, data, dataset, seeds):
    """Ensembles stacked [S] (one per seed) or [1] (shared), and their identities."""
    obs_dim, act_dim = data.observations.shape[1], data.actions.shape[1]
    if options.dynamics_path:
        model, _ = dynamics_io.load(options.dynamics_path, obs_dim=obs_dim, act_dim=act_dim,
                                    config=config.dynamics)
        return jax.tree.map(lambda x: x[None], model), [str(options.dynamics_path)]
    fit_seeds = [options.seed] if options.shared_model else list(seeds)
    return dynamics_io.fit_or_load(config.dynamics, data, dataset.info, fit_seeds,
                                   on_epoch=dynamics_io.log_epoch)


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
            "command": " ".join(["python -m mopo_jax.train", *argv]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _printer(config: TrainConfig, grid: Grid):
    """A rows callback printing one line per finished chunk: its evaluations (if any), the SAC
    speed of that chunk, and the ETA at the mean rate of the chunks seen so far."""
    policies, seen = len(grid.policies()), {"epochs": 0, "seconds": 0.0}

    def show(rows: list[dict]) -> None:
        epoch = max(r["epoch"] for r in rows)
        last = [r for r in rows if r["epoch"] == epoch]
        chunk_epochs, seconds = len({r["epoch"] for r in rows}), last[-1]["chunk_seconds"]
        seen["epochs"] += chunk_epochs
        seen["seconds"] += seconds
        speed = chunk_epochs * config.steps_per_epoch * policies / max(seconds, 1e-9)
        eta = seen["seconds"] / seen["epochs"] * (config.epochs - epoch)
        line = f"epoch {epoch:5d}/{config.epochs}"
        if "eval_return" in last[0]:
            scores = [r["normalized_score"] for r in last]
            line += "  return " + " ".join(f"{r['eval_return']:.1f}" for r in last)
            if None not in scores:
                line += "  normalised " + " ".join(f"{s:.1f}" for s in scores)
        line += (f"  penalty {last[0]['rollout_penalty']:.3f}  {speed:.0f} SAC steps/s"
                 f"  ETA {eta / 60:.1f} min")
        print(line, flush=True)
        if "final_eval_return" in last[0]:
            print(f"final evaluation ({last[0]['final_eval_episodes']} fresh episodes): return "
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


def _available_bytes() -> int | None:
    """Memory the run can use: the local accelerators' limit, or the host's available memory."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) * jax.local_device_count()
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(config: TrainConfig, grid: Grid, data) -> None:
    """Refuse, before any fit or write, sizes whose sure allocations exceed the available memory,
    naming the flags that set them."""
    n, o, a = data.observations.shape[0], data.observations.shape[1], data.actions.shape[1]
    size = len(grid.seeds) * len(grid.penalty_coefs)
    parts: dict[str, int] = {}
    for h in grid.rollout_lengths:
        one = memory_estimate(dataclasses.replace(config, rollout_length=h), n, o, a, size)
        parts = {k: parts.get(k, 0) + v for k, v in one.items()}
    parts["data"] = one["data"]
    need, available = sum(parts.values()), _available_bytes()
    if available is not None and need > available:
        detail = ", ".join(f"{k} {v / 2**30:.1f} GiB" for k, v in parts.items())
        raise ValueError(
            f"this run needs at least {need / 2**30:.1f} GiB ({detail}) but {available / 2**30:.1f} "
            "GiB is available: lower --rollout-batch-size, --model-retain-epochs or "
            "--rollout-length, or train fewer policies at once (--num-seeds, --penalty-coef values)")


def _check_same_settings(config: TrainConfig, coefs, lengths, options: RunOptions) -> None:
    """Refuse, in every process and before any work, a multi-process run whose processes were
    started with different settings (all flags but --process-id)."""
    mine = dataclasses.asdict(options) | {"process_id": None}
    text = json.dumps([config_to_dict(config), list(coefs), list(lengths), mine], sort_keys=True)
    differ = processes_differing(hashlib.sha256(text.encode()).digest())
    if differ:
        raise ValueError(f"processes {differ} were started with other flags than process 0: start "
                         "every process with the same command (only --process-id differs)")


def _process_zero_first(name: str, build):
    """`build()` in process 0, then in the others: they find what it cached (data, ensembles) and
    do not build it again (on hosts without a shared cache they build the same thing themselves)."""
    if jax.process_index() == 0:
        value = build()
        barrier(name)
        return value
    barrier(name)
    return build()


def execute(config: TrainConfig, coefs, lengths, options: RunOptions, argv: list[str]) -> int:
    """Run the train command once its flags parsed; returns the exit code."""
    if options.coordinator:
        _start_processes(options)
        _check_same_settings(config, coefs, lengths, options)
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
        models, model_keys = _process_zero_first(
            "ensembles", lambda: _models(config, options, data, dataset, grid.seeds))
        info = dataset.info
        env = functools.partial(make_eval_env, info.task) if info.task else info.env_id
        if options.overwrite and writer:
            clear_run_files(run_dir)
        meta = _meta(options, dataset, model_keys, argv)
        spec = RunSpec(config, grid, run_dir, meta, (info.ref_min_score, info.ref_max_score),
                       checkpoint_seconds=60.0 * options.checkpoint_minutes,
                       num_devices=options.num_devices, resume=options.resume)
        callbacks = [_printer(config, grid)] if options.progress and writer else []
        tracker = make_tracker(options.track, run_dir, meta) if options.track != "none" and writer else None
        if tracker is not None:
            callbacks.append(tracker.log_rows)
        try:
            results = run(spec, data, models, callbacks=callbacks,
                          evaluate=lambda actors, seeds: evaluate_policies(actors, env, seeds))
        finally:
            if tracker is not None:
                tracker.close()
    if writer:
        print(json.dumps({"run_dir": str(run_dir), **{k: results[k] for k in (
            "dataset", "epochs", "policy_ids", "final_return_mean", "final_normalized_score",
            "ref_source", "dataset_source")}}))
    return 0
