"""`python -m mopo_jax.train`: dataset → dynamics ensembles → a grid of MOPO policies, into a run dir."""

from __future__ import annotations

import sys

from mopo_jax.cli.common import fail, setup_logging
from mopo_jax.cli.train_flags import parse


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a user error, printed without a traceback)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config, coefs, lengths, options = parse(argv)
    except ValueError as err:
        return fail(err)
    setup_logging()
    from mopo_jax.cli import train_run  # the JAX side, imported once the flags are valid

    try:
        return train_run.execute(config, coefs, lengths, options, argv)
    except train_run.USER_ERRORS as err:
        return fail(err)


if __name__ == "__main__":
    sys.exit(main())
