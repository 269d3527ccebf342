"""Everything that touches Minari's files: local ids, downloads, reading to flat arrays, atomic writes."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mopo_jax import paths, stale
from mopo_jax.data import h5io
from mopo_jax.envs.make import env_spec

log = logging.getLogger("mopo_jax.data")
NAMESPACE_METADATA_FILE = "namespace_metadata.json"  # what minari.namespace writes per namespace
INPUTS_KEY = "mopo_jax_inputs"  # metadata of our builds: {input name: fingerprint} (recipes.input_stamps)


class UnreadableDataset(RuntimeError):
    """A Minari dataset on disk that cannot be read (corrupt or truncated files)."""


def read_flat(minari_id: str, num_workers: int | None = None) -> dict:
    """Read a Minari dataset into flat float32 arrays: an HDF5 dataset of array observations and
    actions straight from its file with h5py (`h5io.read_episodes`, in `num_workers` processes;
    None: h5io.io_workers), any other through minari.load_dataset (same values).

    Returns observations, next_observations [N, o], actions [N, a], rewards, terminations,
    truncations, episode_ends [N] (float32) and ref_scores [2] (float64, NaN when absent).
    Raises UnreadableDataset naming the path when the files cannot be read.
    """
    start = time.perf_counter()
    log.info("reading %s into flat arrays (once; cached afterwards)", minari_id)
    data_dir = paths.minari_dataset_dir(minari_id) / "data"
    meta = read_metadata(minari_id)
    try:
        if h5io.plain_arrays(data_dir):
            arrays = h5io.read_episodes(data_dir, int(meta["total_episodes"]), int(meta["total_steps"]),
                                    num_workers)
        else:
            arrays = _read_flat_minari(minari_id)
    except Exception as err:  # h5py raises OSError/KeyError/ValueError on damaged files
        raise UnreadableDataset(f"Minari dataset {minari_id} at {data_dir.parent} cannot be read "
                                f"({type(err).__name__}: {err}).") from err
    arrays["ref_scores"] = np.asarray(
        [meta.get("ref_min_score", np.nan), meta.get("ref_max_score", np.nan)], np.float64)
    log.info("read %d transitions of %s in %.1f s", len(arrays["rewards"]), minari_id,
             time.perf_counter() - start)
    return arrays


def _read_flat_minari(minari_id: str) -> dict:
    """The flat arrays of `read_flat` (without ref_scores), through minari's EpisodeData."""
    import minari

    episodes = list(minari.load_dataset(minari_id).iterate_episodes())
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
    return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


def dataset_state(minari_id: str, root: Path | None = None) -> str:
    """'absent', 'intact' or 'broken' for Minari dataset `minari_id` under `root` (a cheap check).

    Intact means its data file opens: for HDF5 (the format of every Minari MuJoCo dataset and of
    our builds) `data/main_data.hdf5` exists, h5py opens it and it holds the `total_episodes` of
    `data/metadata.json`; another format must load through minari. A killed download or build
    leaves a folder without data/, or data/ with only metadata.json: that counts as broken.
    """
    directory = paths.minari_dataset_dir(minari_id, root)
    if not directory.exists():
        return "absent"
    meta = read_metadata(minari_id, root)
    if not meta:
        return "broken"
    try:
        if meta.get("data_format", "hdf5") != "hdf5":
            import minari

            minari.MinariDataset(directory / "data")
            return "intact"
        import h5py

        with h5py.File(directory / "data" / "main_data.hdf5", "r") as f:
            episodes = len(f)  # one group per episode, as Minari's HDF5 storage counts them
        return "intact" if episodes == int(meta["total_episodes"]) > 0 else "broken"
    except Exception:  # metadata without total_episodes, a missing or truncated data file
        return "broken"


def read_metadata(minari_id: str, root: Path | None = None) -> dict:
    """The `data/metadata.json` of Minari dataset `minari_id` under `root` (default: the Minari
    root); {} when it is missing or cannot be parsed."""
    try:
        path = paths.minari_dataset_dir(minari_id, root) / "data" / "metadata.json"
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _matching_ids(prefix: str) -> list[str]:
    """Ids `prefix-v<k>` and `prefix-n<size>-v<k>` with a folder on disk (newest version first)."""
    namespace, stem = prefix.rsplit("/", 1)
    parent = paths.minari_dataset_dir(namespace)
    pattern = re.compile(rf"{re.escape(stem)}(-n\d+)?-v(\d+)")
    if not parent.is_dir():
        return []
    found = [d.name for d in parent.iterdir() if pattern.fullmatch(d.name) and d.is_dir()]
    found.sort(key=lambda n: int(pattern.fullmatch(n).group(2)), reverse=True)
    return [f"{namespace}/{n}" for n in found]


def local_ids(prefix: str) -> list[str]:
    """Intact local Minari ids `prefix-v<k>` and `prefix-n<size>-v<k>` (newest version first)."""
    return [i for i in _matching_ids(prefix) if dataset_state(i) == "intact"]


def broken_ids(prefix: str) -> list[str]:
    """Local folders of `prefix-v<k>` / `prefix-n<size>-v<k>` that hold no readable dataset."""
    return [i for i in _matching_ids(prefix) if dataset_state(i) == "broken"]


def _new_temp_root(kind: str) -> Path:
    """A hidden folder of ours inside the Minari root, after removing those that interrupted
    builds, downloads and deletions left behind (see mopo_jax.stale)."""
    root = paths.minari_root()
    root.mkdir(parents=True, exist_ok=True)
    stale.remove_stale(root, (".mopo_jax-*",))
    return stale.temp_dir(kind, root)


def remove_dataset(minari_id: str) -> None:
    """Delete a local Minari dataset: renamed aside first, so no half-deleted folder stays in place."""
    trash = _new_temp_root("trash")
    try:
        os.rename(paths.minari_dataset_dir(minari_id), trash / "dataset")
    except FileNotFoundError:
        pass
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _swap_into_place(tmp_root: Path, minari_id: str) -> Path:
    """Move dataset `minari_id` from the temporary root `tmp_root` (a folder inside the Minari root)
    into place, replacing whatever folder is there (a broken copy, the one being rebuilt)."""
    root = paths.minari_root()
    final_dir = paths.minari_dataset_dir(minari_id, root)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    namespace = minari_id.split("/")[0]
    real_meta = root / namespace / NAMESPACE_METADATA_FILE
    if not real_meta.exists():
        tmp_meta = tmp_root / namespace / NAMESPACE_METADATA_FILE
        real_meta.write_text(tmp_meta.read_text() if tmp_meta.exists() else "{}")
    if final_dir.exists():
        os.rename(final_dir, tmp_root / ".replaced")  # removed with tmp_root by the caller
    os.rename(paths.minari_dataset_dir(minari_id, tmp_root), final_dir)
    return final_dir


class DownloadFailed(RuntimeError):
    """A Minari download did not complete (no network, timeout, no such remote dataset)."""


DOWNLOAD_SCRIPT = (  # run as `python -c DOWNLOAD_SCRIPT <prefix>`; prints the id it downloaded
    "import sys, minari\n"
    "ids = minari.list_remote_datasets(prefix=sys.argv[1], latest_version=True,"
    " compatible_minari_version=True)\n"
    "ids = [i for i in ids if i.rsplit('-v', 1)[0] == sys.argv[1]]\n"
    "assert ids, 'no remote dataset ' + sys.argv[1]\n"
    "minari.download_dataset(ids[0]); print(ids[0])\n"
)


def try_download(prefix: str, timeout_s: float) -> str:
    """Download the newest compatible remote version of `prefix`; returns its Minari id.

    The download runs in a killable subprocess whose Minari root (its own environment's
    MINARI_DATASETS_PATH) is a hidden temporary folder inside ours; only a finished download whose
    data file opens is renamed into place, so a killed or timed-out one leaves nothing that looks
    like a dataset. Raises DownloadFailed(reason).
    """
    tmp_root = _new_temp_root("download")
    child_env = dict(os.environ, **{paths.MINARI_ENV_VAR: str(tmp_root)})
    start = time.perf_counter()
    try:
        try:
            proc = subprocess.run([sys.executable, "-c", DOWNLOAD_SCRIPT, prefix], env=child_env,
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DownloadFailed(f"no complete answer in {timeout_s:.0f} s") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1][:160]
            raise DownloadFailed(f"failed after {time.perf_counter() - start:.1f} s: {last}")
        minari_id = (proc.stdout.strip().splitlines() or [""])[-1]
        if not re.fullmatch(rf"{re.escape(prefix)}-v\d+", minari_id):
            raise DownloadFailed(f"the download reported {minari_id!r}, not a version of {prefix}")
        if dataset_state(minari_id, tmp_root) != "intact":
            raise DownloadFailed(f"the downloaded {minari_id} is incomplete (its data file does "
                                 "not open)")
        _swap_into_place(tmp_root, minari_id)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return minari_id


def write_minari_dataset(
    dataset_id: str, steps: dict, env_id: str, *, description: str, algorithm_name: str,
    ref_min_score: float, ref_max_score: float, inputs: dict[str, str] | None = None,
    num_workers: int | None = None,
) -> Path:
    """Write collected steps (the dict of `collect.collect_steps`) as ONE Minari dataset
    `dataset_id`, atomically; returns its folder.

    Its metadata.json comes from Minari's storage API (`MinariStorage.new` takes the data path,
    unlike `minari.create_dataset_from_buffers`, which only writes under $MINARI_DATASETS_PATH),
    its HDF5 file from `h5io.write_episodes` (what `MinariStorage.update_episodes` writes, fast;
    in `num_workers` processes, None: h5io.io_workers). All goes into a
    hidden temporary root inside the Minari root, then is renamed into place, replacing any folder
    already there (a broken copy, or the dataset being rebuilt). A build killed halfway leaves
    nothing that looks like a dataset, and an old copy stays until the new one is complete.
    `inputs` ({input name: fingerprint}, see recipes.input_stamps) is recorded under INPUTS_KEY.
    """
    import minari
    from minari.dataset.minari_storage import MinariStorage

    tmp_root = _new_temp_root("build")
    try:
        data_dir = paths.minari_dataset_dir(dataset_id, tmp_root) / "data"
        data_dir.mkdir(parents=True)
        storage = MinariStorage.new(data_dir, env_spec=env_spec(env_id))  # 27-dim Ant etc.
        storage.update_metadata({
            "dataset_id": dataset_id, "author": {"mopo_jax (built locally)"},
            "algorithm_name": algorithm_name, "description": description,
            "minari_version": minari.__version__,
            "ref_min_score": ref_min_score, "ref_max_score": ref_max_score,
            INPUTS_KEY: dict(inputs or {}),
        })
        start = time.perf_counter()
        log.info("writing %s: %d transitions in %d episodes", dataset_id, len(steps["actions"]),
                 len(steps["episode_lengths"]))
        total_steps, total_episodes = h5io.write_episodes(data_dir, steps, num_workers)
        storage.update_metadata({"total_steps": total_steps, "total_episodes": total_episodes,
                                 "dataset_size": storage.get_size()})  # as update_episodes does
        log.info("wrote %s in %.1f s", dataset_id, time.perf_counter() - start)
        return _swap_into_place(tmp_root, dataset_id)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
