"""Flat arrays of a local Minari dataset: read through a .npz cache, values checked before use."""

from __future__ import annotations

import logging
import os

import numpy as np

from mopo_jax import paths
from mopo_jax.data import minari_io

log = logging.getLogger("mopo_jax.data")

VALUE_BOUND = 1e6  # |observation|, |reward| at or above this is taken as damaged data
ACTION_EPS = 1e-3  # actions may exceed the [-1, 1] box by this much (float rounding)


class DatasetError(RuntimeError):
    """A dataset cannot be resolved, built or read; the message says what to do."""


def file_stamp(minari_id: str) -> list[int]:
    """Sizes, mtimes and inodes of the data files: a rebuild swaps in new files (new inodes), so
    it never matches an old stamp even when size and mtime happen to be equal."""
    files = sorted((paths.minari_dataset_dir(minari_id) / "data").iterdir())
    stats = [f.stat() for f in files]
    return [s.st_size for s in stats] + [s.st_mtime_ns for s in stats] + [s.st_ino for s in stats]


def rebuild_hint(name: str) -> str:
    """The remedy sentence for a damaged local copy of dataset `name`."""
    return (f"run `python -m mopo_jax.data --dataset {name} --rebuild` to rebuild or re-download "
            "it.")


def load_flat(minari_id: str, name: str) -> dict:
    """Flat arrays of Minari dataset `minari_id` (the dict of `minari_io.read_flat`), via a .npz
    cache keyed by its data files' `file_stamp`. The values are checked (`check_values`) whichever
    way they were read: a cache that fails is re-read from the dataset, a dataset that fails
    raises DatasetError naming `name`'s --rebuild."""
    stamp = file_stamp(minari_id)
    cache = paths.flat_cache_path(minari_id)
    arrays = None
    if cache.exists():
        try:
            with np.load(cache) as npz:
                if npz["stamp"].tolist() == stamp:
                    arrays = {k: npz[k] for k in npz.files if k != "stamp"}
                else:
                    log.info("flat cache %s is stale; re-reading the Minari dataset", cache)
        except Exception as err:  # a damaged cache is only a cache: rebuild it
            log.info("flat cache %s unreadable (%s); re-reading the Minari dataset", cache, err)
    if arrays is not None:
        try:
            check_values(arrays, minari_id, name)
            return arrays
        except DatasetError as err:  # a cache is only a cache: read the dataset itself again
            log.warning("flat cache %s holds bad values; re-reading the Minari dataset (%s)",
                        cache, err)
    try:
        arrays = minari_io.read_flat(minari_id)
    except minari_io.UnreadableDataset as err:
        raise DatasetError(f"{err} The file is corrupt or truncated: {rebuild_hint(name)}") from err
    check_values(arrays, minari_id, name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, stamp=np.asarray(stamp), **arrays)
    os.replace(tmp, cache)
    return arrays


def check_values(arrays: dict, minari_id: str, name: str) -> None:
    """Raise DatasetError naming the field and the first bad rows/columns unless every value is
    sane: observations, next_observations [N, o] and rewards [N] finite with |x| < VALUE_BOUND,
    actions [N, a] within [-1 - ACTION_EPS, 1 + ACTION_EPS], flags [N] 0 or 1."""
    for field in ("observations", "next_observations", "rewards", "actions", "terminations",
                  "truncations", "episode_ends"):
        x = arrays[field]
        if field == "actions":
            bad, rule = ~(np.abs(x) <= 1.0 + ACTION_EPS), f"outside [-1, 1] (± {ACTION_EPS}) or NaN"
        elif x.ndim == 1 and field != "rewards":
            bad, rule = ~((x == 0) | (x == 1)), "not 0 or 1"
        else:
            bad, rule = ~(np.abs(x) < VALUE_BOUND), f"NaN, infinite or |x| >= {VALUE_BOUND:g}"
        if bad.any():
            where = np.argwhere(bad.reshape(len(x), -1))
            rows, cols = np.unique(where[:, 0])[:5].tolist(), np.unique(where[:, 1])[:5].tolist()
            first = float(x.reshape(len(x), -1)[tuple(where[0])])
            raise DatasetError(
                f"Minari dataset {minari_id} at {paths.minari_dataset_dir(minari_id)} holds bad "
                f"values in {field!r}: {int(bad.sum())} entries {rule} (the first is {first:g}); "
                f"first bad rows {rows}, columns {cols}. Its data file is damaged: "
                f"{rebuild_hint(name)}")
