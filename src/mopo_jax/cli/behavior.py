"""`python -m mopo_jax.behavior`: train a behaviour policy online, or `export` a snapshot as a policy file."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from mopo_jax.behavior.config import TRAINING_REWARDS, BehaviorConfig, default_behavior_logdir
from mopo_jax.cli.common import (command_line, exit_process, fail, interrupted, setup_logging,
                                 sigterm_as_interrupt)

PROG = "python -m mopo_jax.behavior"


# Every BehaviorConfig field is a flag (these overrides change only how one is spelled or shown);
# the flags are only parsed, and checked when `config` makes the BehaviorConfig.
@dataclasses.dataclass(frozen=True)
class BehaviorFlags(BehaviorConfig):
    """Train a behaviour policy with online SAC into a run directory: evaluations, actor snapshots
    and the whole transition history (what the medium, expert and out-of-distribution datasets are
    built from). Ship a snapshot with `python -m mopo_jax.behavior export` (see its --help)."""

    # Gymnasium id, e.g. Hopper-v5
    env_id: Annotated[str, tyro.conf.arg(name="env")] = BehaviorConfig.env_id
    total_steps: Annotated[int, tyro.conf.arg(name="steps")] = BehaviorConfig.total_steps  # env steps
    # training reward: the env's, or halfcheetah-vel3 = min(v_x, 3) − 0.1|a|² (MOPO's behaviour task
    # for the halfcheetah-jump data)
    reward: Literal[TRAINING_REWARDS] = BehaviorConfig.reward
    # run directory (default: where dataset builds look,
    # ~/.cache/mopo_jax/behavior/<env>[-vel3][-seed<s>])
    logdir: str | None = None
    resume: bool = False  # continue the run in --logdir
    # stop after the evaluation at this env step (a multiple of --eval-every; --resume continues):
    # e.g. the first 100000 steps of a 1M-step run, exactly as that run has them
    stop_at: int | None = None
    progress: bool = True  # a progress bar (one line per evaluation is printed either way)
    # the older spelling of --sac.hidden-sizes, comma-separated: 256,256
    hidden: Annotated[str | None, tyro.conf.arg(metavar="W,W,...")] = None
    batch_size: int | None = None  # the older spelling of --sac.batch-size

    def __post_init__(self):
        """Nothing to check yet (see the comment above the class)."""

    def config(self) -> BehaviorConfig:
        """The run's BehaviorConfig (ValueError names an invalid value)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(BehaviorConfig)}
        sac = self.sac
        if self.hidden is not None:
            sac = dataclasses.replace(sac, hidden_sizes=_widths(self.hidden))
        if self.batch_size is not None:
            sac = dataclasses.replace(sac, batch_size=self.batch_size)
        return BehaviorConfig(**values | {"sac": sac})


def _widths(text: str) -> tuple[int, ...]:
    """Layer widths from "256,256"."""
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--hidden: expected positive sizes like 256,256, got {text!r}")
    return sizes


@dataclasses.dataclass(frozen=True)
class ExportFlags:
    """Ship a snapshot of a behaviour run as a small policy file (PREFIX.msgpack and PREFIX.json),
    with its returns measured afresh."""

    logdir: str  # the behaviour run directory
    # expert: the best snapshot; medium: the first reaching --fraction of the best
    level: Literal["medium", "expert"]
    out: str  # output prefix (.msgpack and .json)
    episodes: int = 10  # evaluation episodes
    seed: int = 0  # first evaluation reset seed
    fraction: float = 1 / 3  # medium: the share of the best return to reach, in (0, 1]


def _train_with_progress(train_behavior, config, logdir, resume: bool, show: bool,
                         command: str, stop_at: int | None = None) -> dict:
    """`train_behavior` with a tqdm bar (unless not `show`) and one printed line per evaluation."""
    from tqdm import tqdm

    bars = []  # made at the first step, so an early error prints no empty bar

    def on_steps(step: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, initial=step, unit="step", disable=not show))
        bars[0].update(step - bars[0].n)

    def on_eval(row: dict) -> None:
        bars[0].write(f"step {row['step']:8d}  return {row['return_mean']:9.1f} ± "
                      f"{row['return_std']:7.1f}  {row['steps_per_second']:7.1f} env+update "
                      f"steps/s  alpha {row['alpha']:.3f}")  # also without the bar: logs show it

    try:
        return train_behavior(config, logdir, resume=resume, on_steps=on_steps, on_eval=on_eval,
                              command=command, stop_at=stop_at)
    finally:
        for bar in bars:
            bar.close()


def _train(flags: BehaviorFlags, command: str) -> int:
    """Train (or resume) a run; prints its summary; returns the exit code."""
    setup_logging()
    from mopo_jax.behavior.train import train_behavior
    from mopo_jax.rundir import RunDirError

    try:
        config = flags.config()
        logdir = flags.logdir or default_behavior_logdir(config)
        with sigterm_as_interrupt():
            summary = _train_with_progress(train_behavior, config, logdir, flags.resume,
                                           show=flags.progress, command=command,
                                           stop_at=flags.stop_at)
    except KeyboardInterrupt:
        return interrupted(KeyboardInterrupt(
            "training stopped; `--resume` continues the run from its last evaluation's checkpoint"))
    except (ValueError, FileNotFoundError, RunDirError) as err:
        return fail(err)
    print(json.dumps(summary))
    return 0


def _export(flags: ExportFlags) -> int:
    """Select the level's snapshot, measure it and write the policy file; returns the exit code."""
    setup_logging()
    from mopo_jax.behavior.artifacts import export_policy, select_snapshot
    from mopo_jax.rundir import RunDirError

    try:
        if not Path(flags.logdir).is_dir():
            raise FileNotFoundError(f"--logdir {flags.logdir} does not exist")
        if flags.episodes < 1:
            raise ValueError("--episodes must be positive")
        if not 0 < flags.fraction <= 1:
            raise ValueError(f"--fraction must be in (0, 1], got {flags.fraction}")
        step, selection = select_snapshot(flags.logdir, flags.level, flags.fraction)
        meta = export_policy(flags.logdir, step, flags.out, flags.level, {"selection": selection},
                             episodes=flags.episodes, seed=flags.seed)
    except (ValueError, FileNotFoundError, RunDirError) as err:
        return fail(err)
    print(json.dumps({k: meta[k] for k in ("env_id", "level", "step", "return_mean", "return_std")}))
    return 0


def parse(argv: list[str]) -> BehaviorFlags | ExportFlags:
    """The flags of a behavior command line: ExportFlags after `export`, else BehaviorFlags
    (SystemExit for a usage error or --help)."""
    if argv[:1] == ["export"]:
        return tyro.cli(ExportFlags, args=argv[1:], prog=f"{PROG} export")
    required_env = BehaviorFlags(env_id=tyro.MISSING)  # --env has no default
    return tyro.cli(BehaviorFlags, args=argv, prog=PROG, default=required_env)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (train, or `export`); returns the exit code. A run records this command
    line as given (`command_line`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = parse(argv)
    if isinstance(flags, ExportFlags):
        return _export(flags)
    return _train(flags, command_line(PROG, argv))


if __name__ == "__main__":
    exit_process(main())
