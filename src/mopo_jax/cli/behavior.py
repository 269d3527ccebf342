"""`python -m mopo_jax.behavior`: train a behaviour policy online, or `export` a snapshot as a policy file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mopo_jax.cli.common import fail, setup_logging
from mopo_jax.behavior.config import TRAINING_REWARDS, BehaviorConfig, default_logdir
from mopo_jax.sac.config import SACConfig


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 256,256, got {text!r}")
    return sizes


def _parsers():
    d = BehaviorConfig()
    train = argparse.ArgumentParser(prog="python -m mopo_jax.behavior", description=__doc__,
                                    epilog="export: python -m mopo_jax.behavior export --help")
    train.add_argument("--env", required=True, help="Gymnasium id, e.g. Hopper-v5")
    train.add_argument("--steps", type=int, default=d.total_steps, help="env steps (1000000)")
    train.add_argument("--logdir", help="run directory (default: where dataset builds look, "
                       "~/.cache/mopo_jax/behavior/<env>[-vel3][-seed<s>])")
    train.add_argument("--seed", type=int, default=d.seed)
    train.add_argument("--resume", action="store_true", help="continue the run in --logdir")
    train.add_argument("--eval-every", type=int, default=d.eval_every)
    train.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    train.add_argument("--start-steps", type=int, default=d.start_steps, help="random-action steps")
    train.add_argument("--update-after", type=int, help="first update step (default: start steps)")
    train.add_argument("--update-every", type=int, default=d.update_every)
    train.add_argument("--hidden", type=_hidden, default=d.sac.hidden_sizes, help="e.g. 256,256")
    train.add_argument("--batch-size", type=int, default=d.sac.batch_size)
    train.add_argument("--max-episode-steps", type=int, help="training-env time limit override")
    train.add_argument("--reward", choices=TRAINING_REWARDS, default=d.reward,
                       help="training reward: the env's, or halfcheetah-vel3 = min(v_x, 3) - 0.1|a|^2 "
                            "(MOPO's behaviour task for the halfcheetah-jump data)")
    train.add_argument("--no-progress", action="store_true")
    export = argparse.ArgumentParser(prog="python -m mopo_jax.behavior export",
                                     description="Ship a snapshot of a run as a small policy file.")
    export.add_argument("--logdir", required=True)
    export.add_argument("--level", required=True, choices=["medium", "expert"],
                        help="expert: best snapshot; medium: first reaching --fraction of the best")
    export.add_argument("--out", required=True, help="output prefix (.msgpack and .json)")
    export.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    export.add_argument("--seed", type=int, default=0, help="first evaluation reset seed")
    export.add_argument("--fraction", type=float, default=1 / 3,
                        help="medium: the share of the best return to reach, in (0, 1] (default 1/3)")
    return train, export


def _train_with_progress(train_behavior, config, logdir, resume: bool, show: bool) -> dict:
    """`train_behavior` with a tqdm bar and one printed line per evaluation (unless not `show`)."""
    from tqdm import tqdm

    bars = []  # made at the first step, so an early error prints no empty bar

    def on_steps(step: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, initial=step, unit="step", disable=not show))
        bars[0].update(step - bars[0].n)

    def on_eval(row: dict) -> None:
        if show:
            bars[0].write(f"step {row['step']:8d}  return {row['return_mean']:9.1f} ± "
                          f"{row['return_std']:7.1f}  {row['steps_per_second']:7.1f} env+update "
                          f"steps/s  alpha {row['alpha']:.3f}")

    try:
        return train_behavior(config, logdir, resume=resume, on_steps=on_steps, on_eval=on_eval)
    finally:
        for bar in bars:
            bar.close()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (train, or `export`); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    train_parser, export_parser = _parsers()
    if argv[:1] == ["export"]:
        export_parser.parse_args(argv[1:])  # --help and usage errors before the heavy imports
    else:
        train_parser.parse_args(argv)
    setup_logging()
    from mopo_jax.behavior.artifacts import export_policy, select_snapshot
    from mopo_jax.behavior.train import train_behavior
    from mopo_jax.rundir import RunDirError

    try:
        if argv[:1] == ["export"]:
            args = export_parser.parse_args(argv[1:])
            if not Path(args.logdir).is_dir():
                raise FileNotFoundError(f"--logdir {args.logdir} does not exist")
            if args.episodes < 1:
                raise ValueError("--episodes must be positive")
            if not 0 < args.fraction <= 1:
                raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")
            step, selection = select_snapshot(args.logdir, args.level, args.fraction)
            meta = export_policy(args.logdir, step, args.out, args.level, {"selection": selection},
                                 episodes=args.episodes, seed=args.seed)
            print(json.dumps({k: meta[k] for k in ("env_id", "level", "step", "return_mean",
                                                   "return_std")}))
            return 0
        args = train_parser.parse_args(argv)
        config = BehaviorConfig(
            env_id=args.env, total_steps=args.steps, start_steps=args.start_steps,
            update_after=args.update_after, update_every=args.update_every,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes, seed=args.seed,
            sac=SACConfig(hidden_sizes=args.hidden, batch_size=args.batch_size),
            max_episode_steps=args.max_episode_steps, reward=args.reward)
        logdir = args.logdir or default_logdir(config)
        summary = _train_with_progress(train_behavior, config, logdir, args.resume,
                                       show=not args.no_progress)
    except (ValueError, FileNotFoundError, RunDirError) as err:
        return fail(err)
    print(json.dumps(summary))
    return 0
