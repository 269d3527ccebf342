"""The train command's flags: TrainConfig's and RunOptions' fields, parsed by tyro, presets as defaults."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import tyro

from mopo_jax.mopo.config import TrainConfig, config_from_dict, field_type_problems, preset, tiny
from mopo_jax.tracking import TRACKERS, TrackerName

GRID_FIELDS = ("penalty_coef", "rollout_length")  # TrainConfig scalars a run may sweep


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Options of one run of the train command (not part of the algorithm's TrainConfig)."""

    seed: int = 0  # first PRNG seed (dynamics fit and policy); seeds are seed, seed+1, ...
    num_seeds: int = 1  # seeds trained at once (vmapped; each fits its own ensemble)
    shared_model: bool = False  # all seeds share the ensemble of --seed instead of one each
    num_devices: int | None = None  # split the policies over at most this many local devices
    dataset_steps: int | None = None  # use (and build) only the first N transitions
    tiny: bool = False  # seconds-long smoke configuration on a small dataset (2,000 steps)
    logdir: str | None = None  # run directory (default runs/<dataset>-<grid>-<config hash>)
    resume: bool = False  # continue the run in --logdir (an empty or missing one starts afresh)
    overwrite: bool = False  # replace a finished or stopped run in --logdir
    config: str | None = None  # repeat a run: take every setting from RUN_DIR/config.json
    dynamics_path: str | None = None  # use this saved ensemble (prefix) for every policy
    offline: bool = False  # never try a dataset download
    download_timeout: float = 60.0  # seconds before a Minari download attempt is abandoned
    checkpoint_minutes: float = 10.0  # wall-clock minutes between checkpoints (and one at the end)
    # processes that run the real-env evaluation episodes (0: this process steps them); the
    # returns are the same either way. Worth it where the compiled epoch is fast (a GPU).
    eval_workers: int = 0
    track: TrackerName = "none"  # also log to this tracker (wandb: offline files, no account)
    progress: bool = True  # print one line per evaluation
    coordinator: str | None = None  # host:port of process 0: run as one of --num-processes (jax.distributed)
    num_processes: int = 1  # processes of a multi-process run (each starts this command)
    process_id: int = 0  # this process's index, 0 .. num_processes-1 (0 writes the run directory)

    def __post_init__(self):
        problems = []
        if self.num_seeds < 1:
            problems.append(f"num_seeds={self.num_seeds}: need >= 1")
        if self.dataset_steps is not None and self.dataset_steps < 2:
            problems.append(f"dataset_steps={self.dataset_steps}: need None or >= 2")
        if self.num_devices is not None and self.num_devices < 1:
            problems.append(f"num_devices={self.num_devices}: need None or >= 1")
        if not self.checkpoint_minutes > 0:
            problems.append(f"checkpoint_minutes={self.checkpoint_minutes}: need > 0")
        if self.eval_workers < 0:
            problems.append(f"eval_workers={self.eval_workers}: need >= 0 (0: evaluate in-process)")
        if not self.download_timeout > 0:
            problems.append(f"download_timeout={self.download_timeout}: need > 0")
        if self.track not in TRACKERS:
            problems.append(f"track={self.track!r}: need one of {TRACKERS}")
        if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
            problems.append(f"num_processes={self.num_processes}, process_id={self.process_id}: "
                            "need num_processes >= 1 and 0 <= process_id < num_processes")
        if self.num_processes > 1 and not self.coordinator:
            problems.append(f"num_processes={self.num_processes} needs --coordinator HOST:PORT")
        if self.resume and self.overwrite:
            problems.append("resume and overwrite: choose one")
        if problems:
            raise ValueError("invalid options: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class TrainFlags(RunOptions, TrainConfig):
    """Every flag of the train command: TrainConfig's fields (`--epochs`, `--sac.actor-lr`,
    `--dynamics.num-members`) and RunOptions' (`--num-seeds`). Only parsed, never used as a
    TrainConfig: penalty_coef and rollout_length hold one or more values (a grid), and values are
    checked when `parse` makes the TrainConfig and RunOptions from them."""

    rollout_length: tuple[int, ...] = ()
    """model rollout horizon h, one or more values (a grid; default: the dataset's preset)"""
    penalty_coef: tuple[float, ...] = ()
    """uncertainty penalty λ: r̃ = r − λ·u(s, a), one or more values (a grid; default: the preset)"""

    def __post_init__(self):
        """Nothing to check yet (see the class docstring)."""


PROG = "python -m mopo_jax.train"
DESCRIPTION = ("Train MOPO: dataset -> dynamics ensemble -> SAC policies (a grid of seeds x penalty "
               "coefficients x rollout lengths), with evaluation, checkpoints and resume.")
TINY_DATASET_STEPS = 2000
# RunOptions that --config takes from the saved run (what it trained on), as the other defaults.
SAVED_OPTIONS = ("seed", "num_seeds", "shared_model", "dataset_steps")


def _defaults(argv: list[str]) -> tuple[TrainConfig, dict]:
    """Phase one: --dataset, --tiny and --config decide the defaults of every other flag."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--dataset", default=None)
    pre.add_argument("--tiny", action="store_true")
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    saved = {}
    if known.config:
        path = Path(known.config)
        path = path / "config.json" if path.is_dir() else path
        try:
            saved = json.loads(path.read_text())
            config = config_from_dict(saved["config"])
            problems = field_type_problems(RunOptions, {k: saved[k] for k in SAVED_OPTIONS if k in saved})
            if problems:
                raise ValueError("invalid options: " + "; ".join(problems))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"--config {path}: not a readable run config.json ({err})") from err
        if known.dataset:
            config = dataclasses.replace(config, dataset=known.dataset.strip().lower())
    else:
        config = (tiny if known.tiny else preset)(known.dataset or "hopper-random")
    return config, saved


def _default_flags(config: TrainConfig, saved: dict) -> TrainFlags:
    """The flags' defaults: `config`'s fields and, with --config, the saved run's grid and options."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    grid = saved.get("grid", {}) if saved else {}
    for name in GRID_FIELDS:
        values[name] = tuple(grid.get(f"{name}s") or (values[name],))
    options = {name: saved[name] for name in SAVED_OPTIONS if name in saved}
    return TrainFlags(**values, **options)


def parse(argv: list[str]) -> tuple[TrainConfig, tuple[float, ...], tuple[int, ...], RunOptions]:
    """Parse the train command line -> (config, λ grid, h grid, run options).

    Every TrainConfig, SACConfig and DynamicsConfig field is a flag (`--epochs`, `--sac.actor-lr`,
    `--dynamics.num-members`); `--penalty-coef` and `--rollout-length` take one or more values.
    Raises ValueError (invalid values) or SystemExit (usage, --help) as argparse does.
    """
    flags = tyro.cli(TrainFlags, args=argv, default=_default_flags(*_defaults(argv)),
                     prog=PROG, description=DESCRIPTION)
    values = {f.name: getattr(flags, f.name) for f in dataclasses.fields(TrainConfig)}
    options = RunOptions(**{f.name: getattr(flags, f.name) for f in dataclasses.fields(RunOptions)})
    coefs, lengths = tuple(values["penalty_coef"]), tuple(values["rollout_length"])
    if options.tiny and options.dataset_steps is None:
        options = dataclasses.replace(options, dataset_steps=TINY_DATASET_STEPS)
    if not coefs or not lengths:
        raise ValueError("--penalty-coef and --rollout-length need at least one value")
    config = TrainConfig(**{**values, "penalty_coef": coefs[0], "rollout_length": lengths[0]})
    for h in lengths:  # validate every grid value, not only the first
        dataclasses.replace(config, rollout_length=h)
    for lam in coefs:
        dataclasses.replace(config, penalty_coef=lam)
    return config, coefs, lengths, options
