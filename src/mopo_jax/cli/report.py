"""`python -m mopo_jax.report`: the results table and figures of training run directories."""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import tyro
from tyro.constructors import PrimitiveConstructorSpec

from mopo_jax.cli.common import (exit_process, fail, interrupted, setup_logging,
                                 sigterm_as_interrupt)

PROG = "python -m mopo_jax.report"
# One or more positional directories (a plain tuple positional would accept none).
RunDirs = Annotated[tuple[str, ...], tyro.conf.Positional, PrimitiveConstructorSpec(
    nargs="+", metavar="RUN_DIR [RUN_DIR ...]", instance_from_str=tuple,
    is_instance=lambda x: isinstance(x, tuple), str_from_instance=list)]


@dataclasses.dataclass(frozen=True)
class ReportFlags:
    """The results table (stdout and report.md) and learning curves (PNGs) of training run
    directories."""

    # training run directories (their policies are pooled per dataset, h, λ)
    run_dirs: RunDirs
    out: str | None = None  # folder for report.md and the PNGs (default: the first RUN_DIR)
    plots: bool = True  # draw the PNGs (--no-plots: write only the table)


def parse(argv: list[str] | None) -> ReportFlags:
    """The flags of a report command line (SystemExit for a usage error or --help)."""
    return tyro.cli(ReportFlags, args=argv, prog=PROG)


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints the table and returns the exit code (2 for unusable run directories)."""
    flags = parse(argv)
    setup_logging()
    from mopo_jax.report import report  # imports JAX: after the flags are valid
    from mopo_jax.rundir import RunDirError

    try:
        with sigterm_as_interrupt():
            result = report(list(flags.run_dirs), flags.out, plots=flags.plots)
    except KeyboardInterrupt:
        return interrupted(KeyboardInterrupt(
            "the report is unfinished; each file it wrote is complete (written atomically)"))
    except (RunDirError, ValueError, OSError) as err:
        return fail(err)
    print(result["table"])
    print()
    print(result["notes"])
    if result["plots_skipped"] and flags.plots:
        print(f"plots skipped: {result['plots_skipped']}", file=sys.stderr)
    for path in result["plots"]:
        print(f"wrote {path}")
    print(f"wrote {result['report']}")
    return 0


if __name__ == "__main__":
    exit_process(main())
