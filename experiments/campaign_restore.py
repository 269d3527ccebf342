"""Putting runs made elsewhere into the campaign root: published runs back after a cache was lost,
and finished runs brought back from a device machine."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tarfile
from pathlib import Path

from campaign_lib import STATE_FILE, holds_run, now_iso, progress, write_state
from campaign_publish import MANIFEST, RUN_STATE_COPY
from mopo_jax.run_layout import CONFIG_FILE, METRICS_FILE, POLICIES, RESULTS_FILE

WALL_CLOCK_COLUMN = 9  # the README table's wall-clock column (1-based, after the leading '|')


def publications(results: Path) -> list[Path]:
    """The campaign publications under `results` (folders holding a campaign manifest), by name."""
    return sorted(p.parent for p in results.glob(f"*/{MANIFEST}")
                  if re.fullmatch(r"\d{4}-\d{2}-\d{2}-.+", p.parent.name))


def _published_wall_clock(publication: Path, run: str) -> str | None:
    """The wall-clock cell of `run`'s row in the publication's README table, verbatim."""
    try:
        lines = (publication / "README.md").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > WALL_CLOCK_COLUMN and cells[1] == run:
            return cells[WALL_CLOCK_COLUMN]
    return None


def _restored_state(publication: Path, run: str, manifest: dict) -> dict:
    """The run's campaign state: its published copy (attempts included) where the publication has
    one, else a finished state carrying the published wall-clock text."""
    saved = publication / run / RUN_STATE_COPY
    if saved.exists():
        state = json.loads(saved.read_text(encoding="utf-8"))
    else:
        state = {"state": "finished", "attempts": [],
                 "wall_clock": _published_wall_clock(publication, run)}
    return state | {"pid": None, "published": manifest.get("published"),
                    "published_to": str(publication), "restored_from": str(publication),
                    "restored": now_iso()}


def _occupied(dest: Path) -> bool:
    """Whether a run folder already holds a run (or the campaign's record of one)."""
    return holds_run(dest) or (dest / STATE_FILE).exists()


def _move_into(assembled: Path, dest: Path) -> None:
    """Rename a run folder assembled beside its place into it (an empty leftover is replaced)."""
    if dest.exists():
        dest.rmdir()
    assembled.rename(dest)


def restore_run(publication: Path, run: str, root: Path, manifest: dict) -> bool:
    """Rebuild <root>/<run> from the publication's copy (config, results, metrics unzipped,
    best/final actors, campaign state); False when <root>/<run> already holds a run (left as is).
    The folder is assembled under a temporary name and renamed into place."""
    dest = root / run
    if _occupied(dest):
        return False
    src, tmp = publication / run, root / f".{run}.restoring"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / POLICIES).mkdir(parents=True)
    for name in (CONFIG_FILE, RESULTS_FILE):
        shutil.copy2(src / name, tmp / name)
    with gzip.open(src / f"{METRICS_FILE}.gz", "rb") as packed, open(tmp / METRICS_FILE, "wb") as out:
        shutil.copyfileobj(packed, out)
    for path in sorted((src / POLICIES).glob("*")):
        shutil.copy2(path, tmp / POLICIES / path.name)
    write_state(tmp, _restored_state(publication, run, manifest))
    _move_into(tmp, dest)
    return True


def restore(results: Path, root: Path, only: set[str] | None = None) -> list[tuple[str, bool]]:
    """Restore every run of every publication under `results` (newest publication of a group
    wins; `only`: these groups) into `root`; returns (run, restored) pairs."""
    root.mkdir(parents=True, exist_ok=True)
    newest: dict[str, tuple[Path, dict]] = {}
    for pub in publications(results):
        manifest = json.loads((pub / MANIFEST).read_text(encoding="utf-8"))
        if only is None or manifest.get("group") in only:
            newest[manifest["group"]] = (pub, manifest)  # sorted by date: the last is the newest
    done = []
    for pub, manifest in newest.values():
        done += [(run, restore_run(pub, run, root, manifest)) for run in manifest.get("runs", [])]
    return done


def _run_folders(tar: tarfile.TarFile) -> list[str]:
    """Top-level folders of the archive that hold a campaign run (campaign.json and config.json)."""
    names = set(tar.getnames())
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    return sorted(t for t in tops if {f"{t}/{STATE_FILE}", f"{t}/{CONFIG_FILE}"} <= names)


def adopt(archive: Path, root: Path, epochs: dict[str, int]) -> list[tuple[str, str]]:
    """Put the finished campaign runs of a device's packed.tar.gz (`experiments/gpu/detached.py`)
    into `root` (`epochs`: each queued run's epochs, default 1000); returns (run, what happened)
    pairs. A run whose folder already holds a run is left alone; an unfinished one is refused
    (its checkpoint stayed on the device, so it cannot continue here). Each run is extracted
    beside its place and renamed into it."""
    done = []
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for run in _run_folders(tar):
            dest, tmp = root / run, root / f".{run}.adopting"
            if _occupied(dest):
                done.append((run, "kept: the root already has it"))
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            members = [m for m in tar.getmembers() if m.name == run or m.name.startswith(f"{run}/")]
            tar.extractall(tmp, members=members, filter="data")
            total_epochs = epochs.get(run, 1000)
            prog = progress(tmp / run, total_epochs)
            if not prog.complete:
                shutil.rmtree(tmp)
                done.append((run, f"refused: unfinished ({prog.epochs_done}/{total_epochs} epochs; "
                                  "its checkpoint stayed on the device)"))
                continue
            _move_into(tmp / run, dest)
            tmp.rmdir()
            done.append((run, "adopted"))
    return done
