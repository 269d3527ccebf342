"""`python -m mopo_jax.report`: the results table and figures of training run directories."""

from __future__ import annotations

import argparse
import sys

from mopo_jax.cli.common import fail, setup_logging
from mopo_jax.report import report
from mopo_jax.rundir import RunDirError


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m mopo_jax.report`."""
    parser = argparse.ArgumentParser(prog="python -m mopo_jax.report", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="training run directories (their policies are pooled per dataset, h, λ)")
    parser.add_argument("--out", default=None,
                        help="folder for report.md and the PNGs (default: the first RUN_DIR)")
    parser.add_argument("--no-plots", action="store_true", help="write only the table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints the table and returns the exit code (2 for unusable run directories)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        result = report(args.run_dirs, args.out, plots=not args.no_plots)
    except (RunDirError, ValueError, OSError) as err:
        return fail(err)
    print(result["table"])
    print()
    print(result["notes"])
    if result["plots_skipped"] and not args.no_plots:
        print(f"plots skipped: {result['plots_skipped']}", file=sys.stderr)
    for path in result["plots"]:
        print(f"wrote {path}")
    print(f"wrote {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
