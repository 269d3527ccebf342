"""Shared CLI plumbing: logging set-up for the `mopo_jax` logger and clean error exits."""

from __future__ import annotations

import logging
import sys


class _Formatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")


def setup_logging(level: int = logging.INFO) -> None:
    """Send the package's log lines (logger 'mopo_jax') to stderr with timestamps.

    Only the 'mopo_jax' logger is configured: other libraries' INFO chatter (e.g. JAX's backend
    probing) stays silent. Calling it again does not add a second handler.
    """
    logger = logging.getLogger("mopo_jax")
    logger.setLevel(level)
    if not any(getattr(h, "_mopo_jax", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        handler._mopo_jax = True
        logger.addHandler(handler)
    logger.propagate = False


def fail(err: BaseException, code: int = 2) -> int:
    """Print `error: <message>` to stderr (no traceback) and return the exit code."""
    print(f"error: {err}", file=sys.stderr)
    return code
