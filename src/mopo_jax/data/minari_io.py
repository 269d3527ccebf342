"""Everything that touches Minari's files: local ids, downloads, reading to flat arrays, atomic writes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from mopo_jax import paths

log = logging.getLogger("mopo_jax.data")


class UnreadableDataset(RuntimeError):
    """A Minari dataset on disk that cannot be read (corrupt or truncated files)."""


def read_flat(minari_id: str) -> dict:
    """Read a Minari dataset through minari.load_dataset into flat float32 arrays.

    Returns observations, next_observations [N, o], actions [N, a], rewards, terminations,
    truncations, episode_ends [N] (float32) and ref_scores [2] (float64, NaN when absent).
    Raises UnreadableDataset naming the path when the files cannot be read.
    """
    import minari

    try:
        dataset = minari.load_dataset(minari_id)
        episodes = list(dataset.iterate_episodes())
    except Exception as err:  # h5py raises OSError/KeyError/ValueError on damaged files
        path = paths.minari_dataset_dir(minari_id)
        raise UnreadableDataset(f"Minari dataset {minari_id} at {path} cannot be read "
                                f"({type(err).__name__}: {err}).") from err
    cat = lambda key: np.concatenate([getattr(ep, key) for ep in episodes])  # noqa: E731
    arrays = dict(
        observations=np.concatenate([ep.observations[:-1] for ep in episodes]),
        next_observations=np.concatenate([ep.observations[1:] for ep in episodes]),
        actions=cat("actions"), rewards=cat("rewards"),
        terminations=cat("terminations"), truncations=cat("truncations"),
    )
    ends = np.zeros(len(arrays["rewards"]), bool)
    ends[np.cumsum([len(ep.rewards) for ep in episodes]) - 1] = True
    arrays["episode_ends"] = ends
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    meta = dataset.storage.metadata
    arrays["ref_scores"] = np.asarray(
        [meta.get("ref_min_score", np.nan), meta.get("ref_max_score", np.nan)], np.float64)
    return arrays


def local_ids(prefix: str) -> list[str]:
    """Local Minari ids `prefix-v<k>` and `prefix-n<size>-v<k>`, found on disk (newest first)."""
    parent = paths.minari_dataset_dir(prefix.rsplit("/", 1)[0])
    stem = prefix.rsplit("/", 1)[1]
    pattern = re.compile(rf"{re.escape(stem)}(-n\d+)?-v(\d+)")
    if not parent.is_dir():
        return []
    found = [d.name for d in parent.iterdir() if pattern.fullmatch(d.name) and (d / "data").is_dir()]
    found.sort(key=lambda n: int(pattern.fullmatch(n).group(2)), reverse=True)
    return [f"{prefix.rsplit('/', 1)[0]}/{n}" for n in found]


def try_download(prefix: str, timeout_s: float) -> str | None:
    """Download the newest compatible remote version of `prefix` in a killable subprocess."""
    code = (
        "import sys, minari\n"
        "ids = minari.list_remote_datasets(prefix=sys.argv[1], latest_version=True,"
        " compatible_minari_version=True)\n"
        "ids = [i for i in ids if i.rsplit('-v', 1)[0] == sys.argv[1]]\n"
        "assert ids, 'no remote dataset ' + sys.argv[1]\n"
        "minari.download_dataset(ids[0]); print(ids[0])\n"
    )
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code, prefix], capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.info("[b] Minari download of %s: no answer in %.0f s, giving up", prefix, timeout_s)
        return None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1][:160]
        log.info("[b] Minari download of %s failed after %.1f s: %s", prefix,
                 time.perf_counter() - start, last)
        return None
    return proc.stdout.strip().splitlines()[-1]


def minari_root_str() -> str:
    from minari.storage.datasets_root_dir import get_dataset_path

    return str(get_dataset_path())


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Temporarily point Minari at another datasets root (restored on exit, even on error)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _episode_buffers(steps: dict) -> list:
    """Split flat collected steps into Minari EpisodeBuffers (T+1 observations each)."""
    from minari.data_collector import EpisodeBuffer

    buffers, t0, o0 = [], 0, 0
    for i, (length, seed) in enumerate(zip(steps["episode_lengths"], steps["episode_seeds"])):
        t1 = t0 + int(length)
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=int(seed) if seed >= 0 else None,
                observations=steps["observations"][o0 : o0 + length + 1],
                actions=steps["actions"][t0:t1],
                rewards=steps["rewards"][t0:t1],
                terminations=steps["terminations"][t0:t1],
                truncations=steps["truncations"][t0:t1],
            )
        )
        t0, o0 = t1, o0 + int(length) + 1
    return buffers


def write_minari_dataset(
    dataset_id: str, steps: dict, env_id: str, *, description: str, algorithm_name: str,
    ref_min_score: float, ref_max_score: float,
) -> Path:
    """Write collected steps as ONE Minari dataset `dataset_id`, atomically.

    The dataset is created under a hidden temporary root next to the real Minari root, then renamed
    into place, so a build killed halfway never leaves a dataset that loads as if complete.
    Returns the final dataset directory. Raises FileExistsError if it already exists.
    """
    import minari
    from minari.storage.datasets_root_dir import get_dataset_path

    final_dir = get_dataset_path(dataset_id)
    if final_dir.exists():
        raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {final_dir}.")
    root = get_dataset_path()
    tmp_root = Path(tempfile.mkdtemp(prefix=".mopo_jax-build-", dir=root))
    try:
        with _minari_root(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Minari nags about optional metadata
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=_episode_buffers(steps),
                env=env_id,
                algorithm_name=algorithm_name,
                author="mopo_jax (built locally)",
                description=description,
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
            )
            built_dir = get_dataset_path(dataset_id)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        namespace = dataset_id.split("/")[0]
        tmp_namespace_meta = tmp_root / namespace / "namespace_metadata.json"
        real_namespace_meta = root / namespace / "namespace_metadata.json"
        if tmp_namespace_meta.exists() and not real_namespace_meta.exists():
            shutil.copyfile(tmp_namespace_meta, real_namespace_meta)
        os.rename(built_dir, final_dir)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final_dir
