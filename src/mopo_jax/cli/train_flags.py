"""The train command's flags, generated from the TrainConfig dataclass (tyro), with presets as defaults."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path
from typing import Annotated

import tyro

from mopo_jax.mopo.config import TrainConfig, config_from_dict, field_type_problems, preset, tiny

GRID_FIELDS = {"penalty_coef": float, "rollout_length": int}  # TrainConfig scalars a run may sweep
TRACKERS = ("none", "tensorboard", "wandb")


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
    track: str = "none"  # also log to: none, tensorboard, wandb (offline)
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


def _field_help(cls) -> dict[str, str]:
    """Help text of each field: its trailing `# comment` in the class source."""
    source = inspect.getsource(cls)
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^    (\w+): [^=\n]+=[^#\n]*#(.*)$", source, re.M)}


def _flags_class(config: TrainConfig, saved: dict):
    """A dataclass with every RunOptions field and every TrainConfig field (the grid-capable
    scalars as tuples), defaulting to `config` and, with --config, to the saved run's options."""
    hints = typing.get_type_hints(TrainConfig)
    helps = _field_help(TrainConfig) | _field_help(RunOptions)
    fields = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name in GRID_FIELDS:
            grid = saved.get("grid", {}).get(f"{f.name}s") if saved else None
            value = tuple(grid) if grid else (value,)
            kind = tuple[GRID_FIELDS[f.name], ...]
            text = f"{helps.get(f.name, f.name)}; one or more values: a grid"
            fields.append((f.name, Annotated[kind, tyro.conf.arg(help=text)],
                           dataclasses.field(default=value)))
        else:
            kind = hints[f.name]
            if f.name in helps:
                kind = Annotated[kind, tyro.conf.arg(help=helps[f.name])]
            fields.append((f.name, kind, dataclasses.field(default=value)))
    run_hints = typing.get_type_hints(RunOptions)
    for f in dataclasses.fields(RunOptions):
        default = f.default
        if saved and f.name in SAVED_OPTIONS:
            default = saved.get(f.name, default)
        kind = Annotated[run_hints[f.name], tyro.conf.arg(help=helps.get(f.name, f.name))]
        fields.append((f.name, kind, dataclasses.field(default=default)))
    return dataclasses.make_dataclass("TrainFlags", fields, frozen=True)


def parse(argv: list[str]) -> tuple[TrainConfig, tuple[float, ...], tuple[int, ...], RunOptions]:
    """Parse the train command line -> (config, λ grid, h grid, run options).

    Every TrainConfig, SACConfig and DynamicsConfig field is a flag (`--epochs`, `--sac.actor-lr`,
    `--dynamics.num-members`); `--penalty-coef` and `--rollout-length` take one or more values.
    Raises ValueError (invalid values) or SystemExit (usage, --help) as argparse does.
    """
    config, saved = _defaults(argv)
    flags_cls = _flags_class(config, saved)
    flags = tyro.cli(flags_cls, args=argv, prog="python -m mopo_jax.train",
                     description="Train MOPO: dataset -> dynamics ensemble -> SAC policies (a grid "
                                 "of seeds x penalty coefficients x rollout lengths), with "
                                 "evaluation, checkpoints and resume.")
    values = {f.name: getattr(flags, f.name) for f in dataclasses.fields(flags)}
    options = RunOptions(**{f.name: values.pop(f.name) for f in dataclasses.fields(RunOptions)})
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
