"""Shared CLI plumbing: the `mopo_jax` logger's set-up, recorded command lines, clean exits on errors."""

from __future__ import annotations

import errno
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from typing import Annotated, NoReturn

import tyro

from mopo_jax.envs.catalog import dataset_names

# The --dataset flag of the data and dynamics commands (train's comes from TrainConfig.dataset).
DatasetName = Annotated[str, tyro.conf.arg(
    metavar="NAME", help=f"one of: {', '.join(dataset_names())}; Minari ids (mujoco/hopper/medium-v0) "
    "and D4RL names (hopper-medium-v2) work too")]


class _Formatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")


def setup_logging(level: int = logging.INFO) -> None:
    """Send the package's log lines (logger 'mopo_jax') to stderr with timestamps.

    Only the 'mopo_jax' logger is configured: other libraries' INFO chatter (e.g. JAX's backend
    probing) stays silent. Calling it again does not add a second handler; it points the one
    handler at the current sys.stderr (a caller that redirected it, e.g. a second in-process run).
    """
    logger = logging.getLogger("mopo_jax")
    logger.setLevel(level)
    ours = [h for h in logger.handlers if getattr(h, "_mopo_jax", False)]
    if ours:  # not setStream: it flushes the old stream, which may be closed by now
        with ours[0].lock:
            ours[0].stream = sys.stderr
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        handler._mopo_jax = True
        logger.addHandler(handler)
    logger.propagate = False


def command_line(prog: str, argv: list[str]) -> str:
    """The command as started: `prog` (e.g. "python -m mopo_jax.train") and the arguments as
    given, shell-quoted; never sys.argv[0] (with -m, an absolute path to the module file)."""
    return " ".join([prog, *map(shlex.quote, argv)])


def fail(err: BaseException, code: int = 2) -> int:
    """Print `error: <message>` to stderr (no traceback) and return the exit code."""
    print(f"error: {err}", file=sys.stderr)
    return code


STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "a file-size limit was reached",
                  errno.EDQUOT: "the disk quota is exceeded"}


def storage_error(err: BaseException) -> str | None:
    """A one-line message for a full disk, a file-size cap or a quota (naming the path), or None
    for any other error."""
    if not isinstance(err, OSError) or err.errno not in STORAGE_ERRNOS:
        return None
    where = f" while writing {err.filename}" if err.filename else ""
    return (f"{STORAGE_ERRNOS[err.errno]}{where}. Files already written are intact (every write is "
            "atomic): free space or raise the limit, then run the same command again with --resume "
            "to continue.")


INTERRUPTED = 130  # the shell's status for a command stopped by SIGINT


def interrupted(err: KeyboardInterrupt) -> int:
    """Print `interrupted: <message>` (or `interrupted`) to stderr, no traceback; return 130."""
    message = str(err)
    print(f"interrupted: {message}" if message else "interrupted", file=sys.stderr, flush=True)
    return INTERRUPTED


def exit_process(code: int) -> NoReturn:
    """End a `python -m` command's process with `code`. An interrupted command (INTERRUPTED)
    flushes its output and ends with os._exit: the interrupt can land while XLA compiles on a
    background thread, and the interpreter's normal shutdown then crashes under that thread
    (SIGSEGV, exit -11). What the command keeps was written before it returned."""
    if code == INTERRUPTED:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt as SIGINT does (so a stopped command
    saves what it can and exits cleanly); the previous handler is restored after. A no-op outside
    the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """What `stop_at_chunk_end` yields: `requested()` says whether a stop was asked for."""

    def __init__(self):
        self.signum: int | None = None

    def requested(self) -> bool:
        """Whether SIGINT or SIGTERM arrived inside the block."""
        return self.signum is not None


@contextlib.contextmanager
def stop_at_chunk_end(notice: str):
    """Within the block, the first SIGINT/SIGTERM only records a stop request (the training loop
    asks `requested()` between chunks, then checkpoints and stops) and writes `notice` to stderr;
    a second one raises KeyboardInterrupt at once. The previous handlers are restored after. Outside
    the main thread nothing is installed and `requested()` stays False."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signum is not None:
            raise KeyboardInterrupt(f"stopped by a second signal {signum}")
        request.signum = signum
        os.write(2, f"{notice}\n".encode())  # not print: the main thread may be mid-print

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
