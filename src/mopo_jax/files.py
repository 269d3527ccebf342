"""Durable file writes without JAX: new files never through a symlink, atomic replacement, folder fsync."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any, BinaryIO

_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create(path: str | os.PathLike) -> BinaryIO:
    """A new file open for writing, mode 0o666 & ~umask; FileExistsError if `path` exists (also a symlink)."""
    return os.fdopen(os.open(path, _NEW_FILE_FLAGS, 0o666), "wb")


def write_new_file(path: str | os.PathLike, data: bytes) -> None:
    """Create `path` (it must not exist; never through a symlink) with mode 0o666 & ~umask, write
    `data` and fsync it."""
    with _create(path) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a directory, making the renames and deletions inside it durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(f)` on a new `<path>.<random>.tmp` in the same folder, fsync, os.replace it onto
    `path`, fsync the folder. Readers see the old file or the new one, never a mix; the file gets
    the mode a plain open() would give (0o666 & ~umask). A kill leaves at most the `*.tmp` file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with _create(tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`atomic_write` of the bytes `data`."""
    atomic_write(path, lambda f: f.write(data))
