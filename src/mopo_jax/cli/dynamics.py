"""`python -m mopo_jax.dynamics`: fit the MOPO dynamics ensemble on a dataset and save it."""

from __future__ import annotations

import argparse
import functools
import sys
import time

from mopo_jax.cli.common import fail, interrupted, setup_logging, sigterm_as_interrupt
from mopo_jax.envs.catalog import dataset_names


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m mopo_jax.dynamics`."""
    parser = argparse.ArgumentParser(prog="python -m mopo_jax.dynamics", description=__doc__)
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(dataset_names())}")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="use only the first N transitions of the dataset (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of the fit (default: 0)")
    parser.add_argument("--out", default=None,
                        help="checkpoint prefix; writes PREFIX.msgpack and PREFIX.json (default: the "
                             "model cache that `python -m mopo_jax.train` reads for this dataset, "
                             "size, seed and config). While fitting, the fit's state is kept in "
                             "PREFIX.partial.*: after Ctrl-C, the same command continues it")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="cap on training epochs (default: none, early stopping decides)")
    parser.add_argument("--offline", action="store_true", help="never try a dataset download")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user error; 130: interrupted, the fit saved)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    with sigterm_as_interrupt():
        try:
            return _run(args)
        except KeyboardInterrupt as err:
            return interrupted(err)


def _run(args: argparse.Namespace) -> int:
    """Load the data, fit (resuming a saved partial fit), save, print a summary; the exit code."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mopo_jax import checkpoint
    from mopo_jax.data.flat import check_env_dims
    from mopo_jax.data.load import DatasetError, load_dataset
    from mopo_jax.dynamics import io, resumable
    from mopo_jax.dynamics.config import DynamicsConfig
    from mopo_jax.dynamics.fit import FitFailed
    from mopo_jax.keys import dynamics_key

    try:
        config = DynamicsConfig(max_epochs=args.max_epochs)
        if args.out:
            io.check_writable(args.out)
        dataset = load_dataset(args.dataset, num_steps=args.num_steps,
                               allow_download=False if args.offline else None)
        check_env_dims(dataset, dataset.info)  # before the fit
        transitions = jax.tree.map(jnp.asarray, dataset.transitions())
        out = args.out or io.cache_prefix(dataset.info, dataset.size, args.seed, config)
        print(f"fitting {config.num_members} members on {dataset.size} transitions of "
              f"{dataset.info.name} (obs {transitions.observations.shape[1]}, act "
              f"{transitions.actions.shape[1]})", flush=True)
        start = time.perf_counter()
        state = resumable.FitStateFile(
            resumable.partial_prefix(out),
            io.cache_key(dataset.info, dataset.size, args.seed, config), args.seed)
        model, report = resumable.fit_resumable(dynamics_key(args.seed), transitions, config,
                                                state, on_epoch=functools.partial(
                                                    io.log_epoch, patience=config.patience))
        jax.block_until_ready(model)
        wall = time.perf_counter() - start
        io.check_fit(report, dataset.info.name)
        io.save(out, model, config, dataset_info=dataset.info, num_rows=dataset.size)
        resumable.remove_state(state.prefix)
    except (ValueError, DatasetError, FitFailed, OSError) as err:
        return fail(err)
    np.set_printoptions(precision=3, suppress=False, linewidth=120)
    print(f"epochs run:                {int(report.epochs)}")
    print(f"holdout MSE per member:    {np.asarray(report.holdout_mse)}")
    print(f"best epoch per member:     {np.asarray(report.best_epoch)}")
    print(f"elites (best first):       {np.asarray(report.elite_idx)}")
    print(f"elite holdout MSE per dim: {np.asarray(report.elite_holdout_mse_per_dim)}  (Δobs..., reward)")
    print(f"wall time:                 {wall:.1f} s (including compilation)")
    print(f"saved:                     {checkpoint.msgpack_path(out)}, {checkpoint.json_path(out)}")
    print("use it with:               python -m mopo_jax.train --dataset "
          f"{dataset.info.name} --dynamics-path {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
