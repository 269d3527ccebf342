"""Minari's HDF5 episode file written and read with h5py's low-level API (the same file, faster)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

log = logging.getLogger("mopo_jax.data")
MAIN_FILE = "main_data.hdf5"  # minari.dataset._storages.hdf5_storage._MAIN_FILE_NAME
STEP_KEYS = ("actions", "rewards", "terminations", "truncations")  # [T] per episode; observations [T+1]
PROGRESS_EPISODES = 10_000  # episodes between progress lines
PARALLEL_MIN_EPISODES = 4_000  # fewer episodes are written / read in this process


def io_workers(num_episodes: int) -> int:
    """Processes that write or read `num_episodes` episodes: the CPUs this process may use, or 1
    under PARALLEL_MIN_EPISODES (starting processes would cost more than it saves)."""
    return len(os.sched_getaffinity(0)) if num_episodes >= PARALLEL_MIN_EPISODES else 1


def _pool(workers: int) -> ProcessPoolExecutor:
    """Spawned worker processes (never a fork of a process that may hold JAX)."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges splitting range(n) into `parts` (at most n) nearly equal pieces."""
    bounds = np.linspace(0, n, min(parts, n) + 1).round().astype(int).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def episode_slices(steps: dict, first_id: int = 0):
    """Yield (episode id, seed or None, {key: array}) per episode of a steps dict
    (`collect.collect_steps`), ids from `first_id`: observations [T+1, o], actions [T, a],
    rewards, terminations, truncations [T]; seeds < 0 mean unknown (None)."""
    t0 = o0 = 0
    for i, (length, seed) in enumerate(zip(steps["episode_lengths"].tolist(),
                                           steps["episode_seeds"].tolist()), first_id):
        arrays = {"observations": steps["observations"][o0:o0 + length + 1]}
        arrays.update({k: steps[k][t0:t0 + length] for k in STEP_KEYS})
        yield i, (seed if seed >= 0 else None), arrays
        t0, o0 = t0 + length, o0 + length + 1


class _Writer:
    """Caches of the HDF5 types and property lists that h5py's high-level calls would rebuild
    for every object (Group.create_group, AttributeManager.__setitem__, Group.create_dataset)."""

    def __init__(self):
        from h5py import h5p, h5s, h5t

        self.h5p, self.h5s, self.h5t = h5p, h5s, h5t
        self.types: dict = {}
        self.dcpls: dict = {}
        self.gcpl = h5p.create(h5p.GROUP_CREATE)
        self.gcpl.set_obj_track_times(False)
        self.lcpl = h5p.create(h5p.LINK_CREATE)
        self.lcpl.set_create_intermediate_group(True)
        self.lcpl.set_char_encoding(h5t.CSET_ASCII)
        self.scalar = h5s.create_simple(())

    def type_of(self, dtype: np.dtype, logical: bool):
        key = (dtype.str, logical)
        if key not in self.types:
            self.types[key] = self.h5t.py_create(dtype, logical=logical)
        return self.types[key]

    def dcpl_of(self, shape: tuple, dtype: np.dtype):
        """What h5py's fill_dcpl makes for chunks=True, maxshape=(None, *shape[1:])."""
        from h5py._hl import filters

        key = (shape, dtype.str)
        if key not in self.dcpls:
            dcpl = filters.fill_dcpl(self.h5p.create(self.h5p.DATASET_CREATE), shape, dtype,
                                     True, None, None, None, None, (None, *shape[1:]), None, None)
            dcpl.set_obj_track_times(False)
            self.dcpls[key] = dcpl
        return self.dcpls[key]

    def attr(self, gid, name: bytes, value: int) -> None:
        from h5py import h5a

        dtype = np.dtype(np.int64)  # what h5py makes of a Python int
        attr = h5a.create(gid, name, self.type_of(dtype, True), self.scalar)
        attr.write(np.asarray(value, dtype), mtype=self.type_of(dtype, False))
        attr.close()

    def dataset(self, gid, name: bytes, data: np.ndarray) -> None:
        from h5py import h5d

        data = np.ascontiguousarray(data)
        space = self.h5s.create_simple(data.shape, (self.h5s.UNLIMITED, *data.shape[1:]))
        dset = h5d.create(gid, name, self.type_of(data.dtype, True), space,
                          dcpl=self.dcpl_of(data.shape, data.dtype))
        dset.write(self.h5s.ALL, self.h5s.ALL, data, mtype=self.type_of(data.dtype, False))
        dset.close()


def write_episodes(data_dir: Path, steps: dict, num_workers: int | None = None) -> tuple[int, int]:
    """Write every episode of `steps` into `<data_dir>/main_data.hdf5` as Minari's
    HDF5Storage.update_episodes writes the EpisodeBuffers of a fresh storage: a group
    `episode_<i>` per episode with int64 attributes id, seed (when known) and total_steps, and the
    chunked, resizable (maxshape (None, ...)) datasets observations [T+1, o], actions [T, a],
    rewards, terminations, truncations [T] in the steps' dtypes. The file must be the empty one
    `MinariStorage.new` makes. One process writes the very same bytes as Minari; `num_workers` > 1
    (None: io_workers) write parts in parallel, copied in order into the file (H5Ocopy: the
    same objects, laid out in another order). Returns (total_steps, total_episodes)."""
    num_episodes = len(steps["episode_lengths"])
    workers = io_workers(num_episodes) if num_workers is None else num_workers
    start = time.perf_counter()
    path = Path(data_dir) / MAIN_FILE
    if workers <= 1:
        _write_file(path, steps, 0, "a")
    else:
        _write_parallel(path, steps, workers)
    log.info("wrote %d episodes in %.1f s (%d process%s)", num_episodes,
             time.perf_counter() - start, workers, "es" if workers > 1 else "")
    return int(steps["episode_lengths"].sum()), num_episodes


def _write_file(path: Path, steps: dict, first_id: int, mode: str) -> None:
    """Episodes of `steps` as groups episode_<first_id + j> of HDF5 file `path` opened in `mode`
    ('a' on the empty file: how minari opens it)."""
    import h5py
    from h5py import h5g

    start, writer = time.perf_counter(), _Writer()
    num_episodes = len(steps["episode_lengths"])
    with h5py.File(path, mode, track_order=True) as f:
        for i, seed, arrays in episode_slices(steps, first_id):
            if first_id == 0 and i and i % PROGRESS_EPISODES == 0:
                log.info("wrote %d/%d episodes (%.1f s)", i, num_episodes,
                         time.perf_counter() - start)
            gid = h5g.create(f.id, b"episode_%d" % i, lcpl=writer.lcpl, gcpl=writer.gcpl)
            writer.attr(gid, b"id", i)
            if seed is not None:
                writer.attr(gid, b"seed", seed)
            writer.attr(gid, b"total_steps", len(arrays["rewards"]))
            for key in ("observations", *STEP_KEYS):
                writer.dataset(gid, key.encode(), arrays[key])
            gid.close()


def episode_range(steps: dict, lo: int, hi: int) -> dict:
    """Episodes [lo, hi) of a steps dict, as a steps dict."""
    lengths = steps["episode_lengths"]
    t0, t1 = int(lengths[:lo].sum()), int(lengths[:hi].sum())
    part = {k: steps[k][t0:t1] for k in STEP_KEYS}
    part["observations"] = steps["observations"][t0 + lo:t1 + hi]
    part.update(episode_lengths=lengths[lo:hi], episode_seeds=steps["episode_seeds"][lo:hi])
    return part


def _write_parallel(path: Path, steps: dict, workers: int) -> None:
    """Parts of ~equal episode counts written by `workers` processes into a temporary folder next
    to `path`'s folder, each copied into `path` (in episode order) as soon as it is done."""
    import h5py
    from h5py import h5o

    num_episodes = len(steps["episode_lengths"])
    parts_dir = Path(tempfile.mkdtemp(prefix=".parts-", dir=path.parent.parent))
    try:
        ranges = _ranges(num_episodes, 4 * workers)
        files = [parts_dir / f"part-{lo}.hdf5" for lo, _ in ranges]
        with _pool(workers) as pool, h5py.File(path, "a", track_order=True) as main:
            jobs = [pool.submit(_write_file, part, episode_range(steps, lo, hi), lo, "w")
                    for part, (lo, hi) in zip(files, ranges)]
            for job, part, (lo, hi) in zip(jobs, files, ranges):
                job.result()
                with h5py.File(part, "r") as src:
                    for i in range(lo, hi):
                        h5o.copy(src.id, b"episode_%d" % i, main.id, b"episode_%d" % i)
                part.unlink()
                if hi // PROGRESS_EPISODES > lo // PROGRESS_EPISODES or hi == num_episodes:
                    log.info("wrote %d/%d episodes", hi, num_episodes)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def plain_arrays(data_dir: Path) -> bool:
    """Whether Minari data folder `data_dir` holds an HDF5 file of plain arrays that `read_episodes`
    reads: Box observation and action spaces, not JPEG-encoded images."""
    from gymnasium.spaces import Box
    from minari.dataset.minari_storage import is_image_space
    from minari.serialization import deserialize_space

    meta = json.loads((Path(data_dir) / "metadata.json").read_text())
    if meta.get("data_format", "hdf5") != "hdf5":
        return False
    spaces = [deserialize_space(meta[k]) for k in ("observation_space", "action_space")]
    jpeg = bool(meta.get("jpeg_encoding", True))
    return all(isinstance(sp, Box) and not (jpeg and is_image_space(sp)) for sp in spaces)


def _read(gid, name: bytes) -> np.ndarray:
    """Dataset `name` of group `gid` as a numpy array in its stored dtype."""
    from h5py import h5d, h5s

    dset = h5d.open(gid, name)
    out = np.empty(dset.shape, dset.dtype)
    if out.size:
        dset.read(h5s.ALL, h5s.ALL, out)
    dset.close()
    return out


def read_episodes(data_dir: Path, num_episodes: int, num_steps: int,
              num_workers: int | None = None) -> dict:
    """Episodes episode_0 .. episode_<num_episodes - 1> of `<data_dir>/main_data.hdf5` (a Minari
    HDF5 file of plain arrays: `plain_arrays`) as flat float32 arrays: observations,
    next_observations [N, o], actions [N, a], rewards, terminations, truncations, episode_ends [N];
    N must be `num_steps` (the metadata's total_steps), else ValueError. The values are those of
    concatenating minari's EpisodeData arrays and casting to float32. `num_workers` > 1 (None:
    io_workers) read ranges of episodes in that many processes."""
    path = Path(data_dir) / MAIN_FILE
    workers = io_workers(num_episodes) if num_workers is None else num_workers
    if workers <= 1:
        out = _read_range(path, 0, num_episodes)
    else:
        with _pool(workers) as pool:
            jobs = [pool.submit(_read_range, path, lo, hi)
                    for lo, hi in _ranges(num_episodes, 4 * workers)]
            parts = [job.result() for job in jobs]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if len(out["rewards"]) != num_steps:
        raise ValueError(f"the episodes hold {len(out['rewards'])} steps, the metadata says "
                         f"{num_steps}")
    return out


def _read_range(path: Path, lo: int, hi: int) -> dict:
    """Episodes [lo, hi) of HDF5 file `path` as the flat float32 arrays of `read_episodes`."""
    import h5py
    from h5py import h5g

    start, episodes = time.perf_counter(), []
    with h5py.File(path, "r") as f:
        for i in range(lo, hi):
            if lo == 0 and i and i % PROGRESS_EPISODES == 0:
                log.info("read %d/%d episodes (%.1f s)", i, hi, time.perf_counter() - start)
            gid = h5g.open(f.id, b"episode_%d" % i)
            episode = {k: _read(gid, k.encode()) for k in ("observations", *STEP_KEYS)}
            gid.close()
            if len(episode["observations"]) != len(episode["rewards"]) + 1:
                raise ValueError(f"episode_{i} holds {len(episode['observations'])} observations "
                                 f"for {len(episode['rewards'])} steps")
            episodes.append(episode)
    lengths = np.asarray([len(e["rewards"]) for e in episodes], np.int64)
    out = _allocate(int(lengths.sum()), episodes[0]["observations"].shape[1:],
                    episodes[0]["actions"].shape[1:])
    t = 0
    for episode, length in zip(episodes, lengths.tolist()):
        out["observations"][t:t + length] = episode["observations"][:-1]
        out["next_observations"][t:t + length] = episode["observations"][1:]
        for key in STEP_KEYS:
            out[key][t:t + length] = episode[key]
        t += length
    out["episode_ends"][np.cumsum(lengths) - 1] = 1.0
    return out


def _allocate(n: int, obs_shape: tuple, act_shape: tuple) -> dict:
    """Zeroed float32 arrays [n, ...] of the flat layout."""
    shapes = dict(observations=obs_shape, next_observations=obs_shape, actions=act_shape,
                  rewards=(), terminations=(), truncations=(), episode_ends=())
    return {k: np.zeros((n, *s), np.float32) for k, s in shapes.items()}
