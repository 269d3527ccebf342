"""`python -m mopo_jax.train`: dataset → dynamics ensembles → a grid of MOPO policies, into a run dir."""

from __future__ import annotations

import sys

from mopo_jax.cli.common import (exit_process, fail, interrupted, setup_logging,
                                 sigterm_as_interrupt, storage_error)
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
    from mopo_jax.dynamics.resumable import FitInterrupted
    from mopo_jax.mopo.run import RunStopped

    try:
        with sigterm_as_interrupt():
            return train_run.execute(config, coefs, lengths, options, argv)
    except KeyboardInterrupt as err:  # the fit saved its state; training resumes from its checkpoint
        message = str(err) if isinstance(err, (FitInterrupted, RunStopped)) else (
            "training stopped; the run continues from its last checkpoint with --resume (a run "
            "in the default directory: the same command again)")
        return interrupted(KeyboardInterrupt(message))
    except train_run.USER_ERRORS as err:
        return fail(err)
    except OSError as err:
        message = storage_error(err)
        if message is None:
            raise
        return fail(message)


if __name__ == "__main__":
    exit_process(main())
