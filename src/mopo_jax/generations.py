"""A run directory's checkpoint generations: checkpoints/gen-<N> folders, written whole, read newest first."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mopo_jax import checkpoint, files
from mopo_jax.run_layout import CHECKPOINTS, META_FILE, STATE_FILE, RunDirError

log = logging.getLogger("mopo_jax")

KEEP_GENERATIONS = 2
_GENERATION = re.compile(r"^gen-(\d{8})$")
_GENERATION_TMP = re.compile(r"^gen-\d{8}\.tmp-\d+$")


def is_temporary(name: str) -> bool:
    """Whether a folder name in checkpoints/ is a generation left half-written or half-deleted."""
    return bool(_GENERATION_TMP.match(name))


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
        files.write_new_file(tmp / STATE_FILE, payload)
        files.write_new_file(tmp / META_FILE, meta)
        files.fsync_dir(tmp)
        os.rename(tmp, final)  # fails (rather than merging) if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files.fsync_dir(parent)
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
