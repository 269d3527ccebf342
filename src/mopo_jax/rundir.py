"""The files of a training run directory: its lock, atomic text files, JSONL logs, checkpoint generations."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from mopo_jax import checkpoint

log = logging.getLogger("mopo_jax")

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.msgpack"
META_FILE = "meta.json"
KEEP_GENERATIONS = 2
_GENERATION = re.compile(r"^gen-(\d{8})$")
_GENERATION_TMP = re.compile(r"^gen-\d{8}\.tmp-\d+$")


class RunDirError(RuntimeError):
    """A run directory is unusable; the message says what to do."""


class RunLock:
    """Exclusive lock on a run directory: fcntl.flock on `<dir>/.lock` (which records the holder's
    pid), taken without waiting. `__enter__` creates the directory if needed and raises RunDirError
    naming it (and the recorded pid, if readable) when another process, or another RunLock in this
    process, holds it. Released on exit, and by the kernel when the holder dies (SIGKILL too)."""

    def __init__(self, run_dir: str | Path):
        """Prepare (but do not take) the lock of `run_dir`."""
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> Self:
        """Take the lock or raise RunDirError."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise RunDirError(f"cannot open the lock file {self.path} ({err}); check that the run "
                              "directory is writable and that .lock is a plain file") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _recorded_pid(fd)
            os.close(fd)
            by = f" (pid {holder})" if holder else ""
            raise RunDirError(f"run directory {self.run_dir} is in use by another process{by}; wait "
                              "for it to end or stop it, or use another run directory") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        """Release the lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _recorded_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically: temp file in the same folder + fsync + os.replace.

    The file gets the usual mode (0o666 & ~umask). RunDirError if `path` is a symlink: it is never
    replaced, nor is its target written.
    """
    path = Path(path)
    if path.is_symlink():
        raise RunDirError(f"{path} is a symbolic link; refusing to replace it (remove the link, or "
                          "use another run directory)")
    checkpoint.atomic_write_bytes(path, text.encode("utf-8"))


def _open_no_follow(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RunDirError(f"{path} is a symbolic link; refusing to write through it (remove the "
                              "link, or use another run directory)") from err
        raise


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append complete lines to `path`, then flush and fsync.

    Each line must end in "\\n" and hold no other newline (ValueError otherwise, nothing written).
    The file is opened with O_NOFOLLOW (a symlink at `path` gives RunDirError and its target is
    untouched) and, when new, created with mode 0o666 & ~umask.
    """
    bad = [line for line in lines if not line.endswith("\n") or "\n" in line[:-1]]
    if bad:
        raise ValueError(f"append_lines takes lines that each end in one newline; got {bad[0]!r}")
    data = "".join(lines).encode("utf-8")
    fd = _open_no_follow(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_record(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError
        return None
    return record if isinstance(record, dict) else None


def _truncate(path: Path, size: int, dropped: int) -> None:
    try:
        fd = _open_no_follow(path, os.O_WRONLY)
    except PermissionError:
        log.warning("%s: ignoring a torn last line (%d bytes); the file is read-only", path, dropped)
        return
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted write", path, dropped)


def read_jsonl(path: str | Path, repair: bool = True) -> list[dict]:
    """The JSON objects of a JSONL file, one per line; a missing file gives [].

    A torn last line (no trailing newline, or an unparsable last line) is dropped; with `repair`
    (the writer's own reads) the file is also truncated to its last complete line (unless
    read-only), so appends continue cleanly. Readers of a run another process may be writing
    (reports) pass repair=False and never modify the file. Any other
    line that is not a JSON object raises RunDirError naming the file and line number. Never reads
    through a symlink (RunDirError).
    """
    path = Path(path)
    try:
        fd = _open_no_follow(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    *complete, torn = data.split(b"\n")  # `torn` is b"" when the file ends with a newline
    records, size = [], 0
    for number, raw in enumerate(complete, 1):
        record = _parse_record(raw)
        if record is None:
            if number == len(complete) and not torn:
                break  # the last line: torn by a kill
            raise RunDirError(f"{path}, line {number}: not a JSON object ({raw[:80]!r}); fix or "
                              "delete that line")
        records.append(record)
        size += len(raw) + 1
    if size < len(data) and repair:
        _truncate(path, size, len(data) - size)
    return records


def _generations(run_dir: str | Path) -> list[tuple[int, Path]]:
    """[(number, folder)] of the complete generation folders, newest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / m.group(0)) for m in map(_GENERATION.match, os.listdir(folder)) if m]
    return sorted(found, reverse=True)


def _remove_generation(folder: Path) -> None:
    """Delete a generation: first renamed to a temp name (so a kill never leaves a half-deleted
    gen-N), then removed."""
    doomed = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    if os.path.lexists(doomed):
        shutil.rmtree(doomed)
    os.rename(folder, doomed)
    shutil.rmtree(doomed)


def save_checkpoint(run_dir: str | Path, tree: Any, metadata: dict) -> Path:
    """Write one checkpoint generation of `tree` + JSON-serialisable `metadata` as one atomic unit.

    A folder `<run_dir>/checkpoints/gen-<NNNNNNNN>.tmp-<pid>` gets state.msgpack and meta.json (the
    metadata plus the msgpack's sha256, as `checkpoint.save_pytree` writes), both fsynced; the
    folder is fsynced, renamed to `gen-<NNNNNNNN>` (N = newest + 1) and the parent fsynced. Only then
    are generations beyond the newest KEEP_GENERATIONS deleted (a failure there is only logged), so
    the previous good checkpoint survives until the new one is complete. Returns the new folder.
    """
    payload, meta = checkpoint.encode_pytree(tree, metadata)  # fails before anything is written
    parent = Path(run_dir) / CHECKPOINTS
    parent.mkdir(parents=True, exist_ok=True)
    older = _generations(run_dir)
    final = parent / f"gen-{(older[0][0] + 1 if older else 1):08d}"
    tmp = parent / f"{final.name}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):  # left by a dead process that had our pid
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        checkpoint.write_new_file(tmp / STATE_FILE, payload)
        checkpoint.write_new_file(tmp / META_FILE, meta)
        checkpoint.fsync_dir(tmp)
        os.rename(tmp, final)  # fails (rather than merging) if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    checkpoint.fsync_dir(parent)
    for _, folder in older[KEEP_GENERATIONS - 1:]:
        try:
            _remove_generation(folder)
        except OSError as err:  # the new generation is complete; a failed cleanup is not fatal
            log.warning("could not delete the old checkpoint %s: %s", folder, err)
    return final


def _newest_readable(run_dir: str | Path, read: Callable[[Path, dict, bytes], Any]) -> Any:
    """`read(folder, full metadata, msgpack bytes)` of the newest generation it succeeds on (logging
    a warning for each newer one skipped); None without generations; RunDirError if all fail."""
    generations = _generations(run_dir)
    problems = []
    for _, folder in generations:
        try:
            meta = checkpoint.read_metadata_file(folder / META_FILE)
            return read(folder, meta, (folder / STATE_FILE).read_bytes())
        except (OSError, ValueError) as err:
            problems.append(f"{folder.name}: {err}")
            log.warning("checkpoint %s is unreadable (%s); trying an older generation", folder, err)
    if generations:
        raise RunDirError(f"no readable checkpoint in {Path(run_dir) / CHECKPOINTS} ("
                          + "; ".join(problems) + "); delete that folder to start the run over, or "
                          "use another run directory")
    return None


def load_checkpoint(run_dir: str | Path, template: Any) -> tuple[Any, dict] | None:
    """(tree with numpy leaves, metadata) of the newest complete generation whose checksum verifies
    and whose arrays match `template` (see `checkpoint.decode_pytree`).

    A damaged newest generation is skipped with a warning on the 'mopo_jax' logger and an older one
    used. None when there is no checkpoint; RunDirError naming each generation and its problem when
    generations exist but none is readable.
    """
    def read(folder, meta, payload):
        return checkpoint.decode_pytree(payload, meta, template, folder / STATE_FILE, folder / META_FILE)

    return _newest_readable(run_dir, read)


def checkpoint_metadata(run_dir: str | Path) -> dict | None:
    """The metadata of the generation `load_checkpoint` would pick (its checksum is verified, its
    arrays are not decoded); None without generations, RunDirError when none is readable."""
    def read(folder, meta, payload):
        if not checkpoint.payload_matches(meta, payload):
            raise ValueError(f"{folder / STATE_FILE} does not match the checksum in {META_FILE}")
        return checkpoint.user_metadata(meta)

    return _newest_readable(run_dir, read)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether `<run_dir>/checkpoints` holds any complete generation folder (readable or not)."""
    return bool(_generations(run_dir))


def clean_stale_temp_files(run_dir: str | Path, extra_dirs: Iterable[str | Path] = ()) -> int:
    """Remove leftovers of interrupted writes: `*.tmp` files and `gen-*.tmp-*` folders in the run
    directory, its checkpoints/ folder and `extra_dirs` (relative to the run directory). Returns how
    many were removed. Call it at the start of a run, holding the RunLock. Symlinks are unlinked,
    never followed."""
    removed = 0
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINTS, *(Path(run_dir) / d for d in extra_dirs)):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and _GENERATION_TMP.match(entry.name):
                shutil.rmtree(entry.path)
            elif not is_dir and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
            else:
                continue
            removed += 1
    return removed
