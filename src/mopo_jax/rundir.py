"""The file layer of run directories: lock, atomic text/JSON, JSONL logs, policies, checkpoint generations."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from mopo_jax import files, generations
from mopo_jax.generations import (checkpoint_metadata, has_checkpoint, load_checkpoint,
                                  save_checkpoint)
from mopo_jax.run_layout import CHECKPOINTS, LOCK_FILE, POLICIES, RunDirError
from mopo_jax.sac import policy_io
from mopo_jax.sac.config import SACConfig

__all__ = ["RunDirError", "RunLock", "append_lines", "append_records", "checkpoint_metadata",
           "clean_stale_temp_files", "has_checkpoint", "load_checkpoint", "read_jsonl",
           "resume_differences", "rewind_jsonl", "save_checkpoint", "save_run_policy", "write_json",
           "write_text_atomic"]

log = logging.getLogger("mopo_jax")


class RunLock:
    """Exclusive lock on a run directory: fcntl.flock on `<dir>/.lock` (which records the holder's
    pid), taken without waiting. `__enter__` creates the directory if needed and raises RunDirError
    naming it (and the recorded pid, if readable) when another process, or another RunLock in this
    process, holds it. Released on exit, and by the kernel when the holder dies (SIGKILL too)."""

    def __init__(self, run_dir: str | Path):
        """Prepare (but do not take) the lock of `run_dir`."""
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> Self:
        """Take the lock or raise RunDirError."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise RunDirError(f"cannot open the lock file {self.path} ({err}); check that the run "
                              f"directory is writable and that {LOCK_FILE} is a plain file") from err
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
    files.atomic_write_bytes(path, text.encode("utf-8"))


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


def _json_lines(records: Iterable[dict]) -> list[str]:
    return [json.dumps(r) + "\n" for r in records]


def append_records(path: str | Path, records: Iterable[dict]) -> None:
    """`append_lines` of each record as one line of JSON (a JSONL log: metrics, evaluations)."""
    append_lines(path, _json_lines(records))


def write_json(path: str | Path, obj: Any) -> None:
    """`write_text_atomic` of `obj` as JSON indented by 2 (config.json, results.json)."""
    write_text_atomic(path, json.dumps(obj, indent=2))


def rewind_jsonl(path: str | Path, keep: Callable[[dict], bool], write: bool = True) -> list[dict]:
    """Cut a JSONL log back to a checkpoint on resume: the records `keep` accepts, in file order
    (a torn last line dropped). With `write` (the run's writer) the file is rewritten atomically to
    hold exactly them; without it (other processes of the run) the file is only read."""
    records = [r for r in read_jsonl(path, repair=write) if keep(r)]
    if write:
        write_text_atomic(path, "".join(_json_lines(records)))
    return records


def resume_differences(saved: dict, wanted: dict, may_differ: Iterable[str] = ()) -> list[str]:
    """Where a run's saved settings differ from those of the command resuming it: one
    "dotted.path: saved X, requested Y" per differing leaf, keys sorted at each level. Only the
    top-level keys of `wanted` are compared; paths in `may_differ` are never a difference."""
    allowed, diffs = set(may_differ), []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b and path not in allowed:
            diffs.append(f"{path}: saved {a!r}, requested {b!r}")

    walk({k: saved.get(k) for k in wanted}, wanted, "")
    return diffs


def save_run_policy(run_dir: str | Path, name: str, actor_params: Any, sac_config: SACConfig,
                metadata: dict) -> None:
    """Write one actor (unstacked params) as `<run_dir>/policies/<name>.{msgpack,json}` with
    `sac.policy_io.save_policy`, the one policy-file writer (`load_policy` reads it back)."""
    policy_io.save_policy(Path(run_dir) / POLICIES / name, actor_params, sac_config, metadata)


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
            if is_dir and generations.is_temporary(entry.name):
                shutil.rmtree(entry.path)
            elif not is_dir and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
            else:
                continue
            removed += 1
    return removed
