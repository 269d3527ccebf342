"""`python -m mopo_jax.data`: prepare a dataset (local cache, download or local build) and summarise it."""

from __future__ import annotations

import argparse
import sys

from mopo_jax.cli.common import fail, setup_logging
from mopo_jax.envs.catalog import dataset_names


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m mopo_jax.data`."""
    parser = argparse.ArgumentParser(prog="python -m mopo_jax.data", description=__doc__)
    parser.add_argument("--dataset", required=True,
                        help=f"one of: {', '.join(dataset_names())}; Minari ids "
                        "(mujoco/hopper/medium-v0) and D4RL names (hopper-medium-v2) work too")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="keep (and build) only the first N transitions; default: all (1M)")
    parser.add_argument("--offline", action="store_true",
                        help="never try a download (same as MOPO_JAX_OFFLINE=1)")
    parser.add_argument("--download-timeout", type=float, default=60.0,
                        help="seconds before a Minari download attempt is abandoned")
    parser.add_argument("--rebuild", action="store_true",
                        help="remove broken local copies of the dataset and build this size "
                        "again (the old copy is replaced only once the new one is complete)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a user error, printed without a traceback)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    from mopo_jax.data.load import DatasetError, load_dataset, summary

    try:
        dataset = load_dataset(args.dataset, num_steps=args.num_steps,
                               allow_download=False if args.offline else None,
                               download_timeout_s=args.download_timeout, rebuild=args.rebuild)
    except (ValueError, DatasetError, OSError) as err:  # OSError: e.g. a read-only Minari root
        return fail(err)
    print(summary(dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
