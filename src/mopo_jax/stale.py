"""Temporary entries of interrupted writes in the shared caches: how they are named, when one is
stale, and their removal.

Folders made by `temp_dir` carry the host and process that made them
(`.mopo_jax-<kind>-<host>-<pid>-<random>`): on the same host such a folder is stale as soon as
its process is gone, so a build killed a minute ago is cleaned by the next start. Entries
without that tag (temporary files of an atomic write, folders of older versions) are stale once
older than `max_age_s`, far longer than any write takes, so a write in progress elsewhere is
never touched.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

log = logging.getLogger("mopo_jax.stale")

TAGGED = re.compile(r"^\.mopo_jax-(?P<kind>[a-z]+)-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+$")
MAX_AGE_S = 24 * 3600.0  # untagged entries: no write of this package takes a day


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "host"


def temp_dir(kind: str, parent: Path) -> Path:
    """A new hidden folder `.mopo_jax-<kind>-<host>-<pid>-<random>` in `parent` (which must exist);
    `kind` is lowercase letters (e.g. "build", "download", "trash")."""
    if not kind.isalpha() or not kind.islower():
        raise ValueError(f"temp_dir kind must be lowercase letters, got {kind!r}")
    return Path(tempfile.mkdtemp(prefix=f".mopo_jax-{kind}-{_host()}-{os.getpid()}-", dir=parent))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_stale(path: Path, now: float | None = None, max_age_s: float = MAX_AGE_S) -> bool:
    """Whether temporary entry `path` belongs to no running write: a tagged folder of this host
    whose process has ended, or any entry last modified more than `max_age_s` seconds ago."""
    tag = TAGGED.match(path.name)
    if tag and tag["host"] == _host():
        return not _process_alive(int(tag["pid"]))
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age_s


def remove_stale(folder: str | os.PathLike, patterns: tuple[str, ...], *, now: float | None = None,
                 max_age_s: float = MAX_AGE_S) -> list[Path]:
    """Delete the stale entries (see `is_stale`) directly in `folder` whose names match one of the
    glob `patterns`; returns what was removed. A missing folder is fine; an entry that cannot be
    removed is logged and left."""
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
            continue
        if not is_stale(entry, now, max_age_s):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as err:
            log.warning("could not remove the stale temporary %s (%s)", entry, err)
            continue
        log.info("removed %s, left behind by an interrupted write", entry)
        removed.append(entry)
    return removed
