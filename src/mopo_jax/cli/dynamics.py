"""`python -m mopo_jax.dynamics`: fit the MOPO dynamics ensemble on a dataset and save it."""

from __future__ import annotations

import dataclasses
import functools
import time

import tyro

from mopo_jax.cli.common import (DatasetName, exit_process, fail, interrupted, setup_logging,
                                 sigterm_as_interrupt)
from mopo_jax.dynamics.config import DynamicsConfig

PROG = "python -m mopo_jax.dynamics"


@dataclasses.dataclass(frozen=True)
class DynamicsFlags:
    """Fit the MOPO dynamics ensemble on a dataset and save it. By default it goes into the model
    cache, where `python -m mopo_jax.train` finds it when run on the same data (its --dataset-steps
    is --num-steps here) with the same --seed and --dynamics.* flags."""

    dataset: DatasetName
    num_steps: int | None = None  # use only the first N transitions of the dataset (None: all)
    seed: int = 0  # PRNG seed of the fit
    # checkpoint prefix: writes PREFIX.msgpack and PREFIX.json (default: the model cache entry
    # that the train command reads for this dataset, size, seed and config). While fitting, the
    # fit's state is kept in PREFIX.partial.*: after Ctrl-C, the same command continues it.
    out: str | None = None
    offline: bool = False  # never try a dataset download
    max_epochs: int | None = None  # the older spelling of --dynamics.max-epochs (this one wins)
    dynamics: DynamicsConfig = DynamicsConfig()  # the ensemble and its fit, spelled as in train

    def config(self) -> DynamicsConfig:
        """The DynamicsConfig of the fit (ValueError names an invalid value)."""
        if self.max_epochs is None:
            return self.dynamics
        return dataclasses.replace(self.dynamics, max_epochs=self.max_epochs)


def parse(argv: list[str] | None) -> DynamicsFlags:
    """The flags of a dynamics command line (SystemExit for a usage error or --help)."""
    return tyro.cli(DynamicsFlags, args=argv, prog=PROG)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user error; 130: interrupted, the fit saved)."""
    flags = parse(argv)
    setup_logging()
    with sigterm_as_interrupt():
        try:
            return _run(flags)
        except KeyboardInterrupt as err:
            return interrupted(err)


def out_prefix(flags: DynamicsFlags, dataset_info, num_rows: int):
    """Where the fit is saved: --out, or the model cache entry train looks for (its cache key)."""
    from mopo_jax.dynamics import io

    return flags.out or io.cache_prefix(dataset_info, num_rows, flags.seed, flags.config())


def _run(flags: DynamicsFlags) -> int:
    """Load the data, fit (resuming a saved partial fit), save, print a summary; the exit code."""
    import jax
    import jax.numpy as jnp

    from mopo_jax.data.flat import check_env_dims
    from mopo_jax.data.load import DatasetError, load_dataset
    from mopo_jax.dynamics import io, resumable
    from mopo_jax.dynamics.fit import FitFailed
    from mopo_jax.keys import dynamics_key

    try:
        config = flags.config()
        if flags.out:
            io.check_writable(flags.out)
        dataset = load_dataset(flags.dataset, num_steps=flags.num_steps,
                               allow_download=False if flags.offline else None)
        check_env_dims(dataset, dataset.info)  # before the fit
        transitions = jax.tree.map(jnp.asarray, dataset.transitions())
        out = out_prefix(flags, dataset.info, dataset.size)
        print(f"fitting {config.num_members} members on {dataset.size} transitions of "
              f"{dataset.info.name} (obs {transitions.observations.shape[1]}, act "
              f"{transitions.actions.shape[1]})", flush=True)
        start = time.perf_counter()
        state = resumable.FitStateFile(
            resumable.partial_prefix(out),
            io.cache_key(dataset.info, dataset.size, flags.seed, config), flags.seed)
        model, report = resumable.fit_resumable(dynamics_key(flags.seed), transitions, config,
                                                state, on_epoch=functools.partial(
                                                    io.log_epoch, patience=config.patience))
        jax.block_until_ready(model)
        wall = time.perf_counter() - start
        io.check_fit(report, dataset.info.name)
        io.save(out, model, config, dataset_info=dataset.info, num_rows=dataset.size)
        resumable.remove_state(state.prefix)
    except (ValueError, DatasetError, FitFailed, OSError) as err:
        return fail(err)
    _print_summary(report, wall, out, dataset.info.name)
    return 0


def _print_summary(report, wall: float, out, dataset_name: str) -> None:
    """The fit's outcome, where it was saved, and the train command that uses it."""
    import numpy as np

    from mopo_jax import checkpoint

    np.set_printoptions(precision=3, suppress=False, linewidth=120)
    print(f"epochs run:                {int(report.epochs)}")
    print(f"holdout MSE per member:    {np.asarray(report.holdout_mse)}")
    print(f"best epoch per member:     {np.asarray(report.best_epoch)}")
    print(f"elites (best first):       {np.asarray(report.elite_idx)}")
    print(f"elite holdout MSE per dim: {np.asarray(report.elite_holdout_mse_per_dim)}  (Δobs..., reward)")
    print(f"wall time:                 {wall:.1f} s (including compilation)")
    print(f"saved:                     {checkpoint.msgpack_path(out)}, {checkpoint.json_path(out)}")
    print("use it with:               python -m mopo_jax.train --dataset "
          f"{dataset_name} --dynamics-path {out}")


if __name__ == "__main__":
    exit_process(main())
