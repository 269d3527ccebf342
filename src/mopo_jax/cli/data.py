"""`python -m mopo_jax.data`: prepare a dataset (local cache, download or local build) and summarise it."""

from __future__ import annotations

import dataclasses

import tyro

from mopo_jax.cli.common import (DatasetName, exit_process, fail, interrupted, setup_logging,
                                 sigterm_as_interrupt)

PROG = "python -m mopo_jax.data"


@dataclasses.dataclass(frozen=True)
class DataFlags:
    """Prepare a dataset (local cache, download or local build) and print its summary."""

    dataset: DatasetName
    num_steps: int | None = None  # keep (and build) only the first N transitions (None: all, 1M)
    offline: bool = False  # never try a download (same as MOPO_JAX_OFFLINE=1)
    download_timeout: float = 60.0  # seconds before a Minari download attempt is abandoned
    rebuild: bool = False
    """build this size again, removing broken local copies (the old copy is replaced once the new
    one is complete)"""


def parse(argv: list[str] | None) -> DataFlags:
    """The flags of a data command line (SystemExit for a usage error or --help)."""
    return tyro.cli(DataFlags, args=argv, prog=PROG)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a user error, printed without a traceback)."""
    flags = parse(argv)
    setup_logging()
    from mopo_jax.data.load import DatasetError, load_dataset, summary

    try:
        with sigterm_as_interrupt():
            dataset = load_dataset(flags.dataset, num_steps=flags.num_steps,
                                   allow_download=False if flags.offline else None,
                                   download_timeout_s=flags.download_timeout, rebuild=flags.rebuild)
    except KeyboardInterrupt:
        return interrupted(KeyboardInterrupt(
            "the dataset was not stored (a build or download stopped midway leaves nothing in "
            "place); the same command starts it again"))
    except (ValueError, DatasetError, OSError) as err:  # OSError: e.g. a read-only Minari root
        return fail(err)
    print(summary(dataset))
    return 0


if __name__ == "__main__":
    exit_process(main())
