"""The train command's checks before any work: run-dir reuse, resume identity, memory, process agreement."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import jax

from mopo_jax import paths
from mopo_jax.cli.train_flags import RunOptions
from mopo_jax.mopo.config import TrainConfig, config_to_dict
from mopo_jax.mopo.grid import Grid
from mopo_jax.mopo.run import resume_mismatch
from mopo_jax.mopo.train import memory_estimate
from mopo_jax.run_layout import CONFIG_FILE, RUN_FILES, holds_run
from mopo_jax.sharding import processes_differing


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
        saved_path = run_dir / CONFIG_FILE
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


def available_bytes() -> int | None:
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
    per_h = [memory_estimate(dataclasses.replace(config, rollout_length=h), n, o, a, size)
             for h in grid.rollout_lengths]  # one compiled group per h; the data are shared
    parts = {k: per_h[0][k] if k == "data" else sum(e[k] for e in per_h) for k in per_h[0]}
    need, available = sum(parts.values()), available_bytes()
    if available is not None and need > available:
        detail = ", ".join(f"{k} {v / 2**30:.1f} GiB" for k, v in parts.items())
        raise ValueError(
            f"this run needs at least {need / 2**30:.1f} GiB ({detail}) but {available / 2**30:.1f} "
            "GiB is available: lower --rollout-batch-size, --model-retain-epochs or "
            "--rollout-length, or train fewer policies at once (--num-seeds, --penalty-coef values)")


def check_same_settings(config: TrainConfig, coefs, lengths, options: RunOptions) -> None:
    """Refuse, in every process and before any work, a multi-process run whose processes were
    started with different settings (all flags but --process-id)."""
    mine = dataclasses.asdict(options) | {"process_id": None}
    text = json.dumps([config_to_dict(config), list(coefs), list(lengths), mine], sort_keys=True)
    differ = processes_differing(hashlib.sha256(text.encode()).digest())
    if differ:
        raise ValueError(f"processes {differ} were started with other flags than process 0: start "
                         "every process with the same command (only --process-id differs)")
