"""Loading a dataset by name: resolve (local Minari cache, download, local build), flatten, cache, compose."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil

import flax.struct
import numpy as np

from mopo_jax import paths
from mopo_jax.data import minari_io, recipes
from mopo_jax.envs.catalog import (BUILDABLE_LEVELS, D4RL_REF_SOURCE, ENVS, HISTORY_LEVELS,
                                   OOD_DATASETS, OOD_REF_SOURCE, canonical_name, normalize_return,
                                   parse_dataset_name)
from mopo_jax.types import Transitions

log = logging.getLogger("mopo_jax.data")

DEFAULT_NUM_STEPS = 1_000_000
OUR_NAMESPACE = "mopo_jax"


class DatasetError(RuntimeError):
    """A dataset cannot be resolved, built or read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static metadata of a loaded dataset (hashable, so it can ride along as pytree aux data)."""

    name: str
    env_name: str
    env_id: str
    source: str  # "local Minari cache", "Minari download" or "built locally"
    minari_id: str
    path: str
    num_episodes: int
    ref_min_score: float
    ref_max_score: float
    ref_source: str
    task: str = ""  # an OOD task name (mopo_jax.envs.ood) when the evaluation env has a target reward
    data_stamp: str = ""  # sha256 of the Minari id and its data files' sizes and mtimes


class Dataset(flax.struct.PyTreeNode):
    """Flat float32 transition arrays of one dataset (N transitions) plus static `info`.

    observations/next_observations [N, obs_dim]; actions [N, act_dim]; rewards [N];
    terminations [N] (1.0 only for true terminations); truncations [N] (1.0 where an episode was
    cut: time limit or the end of the data); episode_ends [N] (terminations or truncations).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_ends: np.ndarray
    info: DatasetInfo = flax.struct.field(pytree_node=False)

    def transitions(self) -> Transitions:
        """The (observations, actions, rewards, next_observations, terminations) view, each [N, ...]."""
        return Transitions(self.observations, self.actions, self.rewards,
                           self.next_observations, self.terminations)

    @property
    def size(self) -> int:
        """Number of transitions N."""
        return int(self.rewards.shape[0])


def normalized_score(raw_return, info: DatasetInfo):
    """100 · (return − ref_min) / (ref_max − ref_min), with the reference named in info.ref_source
    (NaN for the OOD tasks, which have no reference)."""
    return normalize_return(raw_return, info.ref_min_score, info.ref_max_score)


def _built_size(minari_id: str) -> int:
    match = re.search(r"-n(\d+)-v\d+$", minari_id)
    if match:
        return int(match.group(1))
    level = minari_id.rsplit("/", 1)[-1].rsplit("-v", 1)[0]
    if level in HISTORY_LEVELS:
        return 2**62  # holds the whole run; a too-large request fails at load with the real size
    return 2 * DEFAULT_NUM_STEPS if level == "medium-expert" else DEFAULT_NUM_STEPS


def _file_stamp(minari_id: str) -> list[int]:
    data_dir = paths.minari_dataset_dir(minari_id) / "data"
    files = sorted(data_dir.iterdir())
    return [f.stat().st_size for f in files] + [f.stat().st_mtime_ns for f in files]


def _load_flat(minari_id: str, name: str) -> dict:
    """Flat arrays of a Minari dataset, via a .npz cache keyed by the data file's size and mtime."""
    stamp = _file_stamp(minari_id)
    cache = paths.flat_cache_path(minari_id)
    if cache.exists():
        try:
            with np.load(cache) as npz:
                if npz["stamp"].tolist() == stamp:
                    return {k: npz[k] for k in npz.files if k != "stamp"}
            log.info("flat cache %s is stale; re-reading the Minari dataset", cache)
        except Exception as err:  # a damaged cache is only a cache: rebuild it
            log.info("flat cache %s unreadable (%s); re-reading the Minari dataset", cache, err)
    try:
        arrays = minari_io.read_flat(minari_id)
    except minari_io.UnreadableDataset as err:
        raise DatasetError(f"{err} The file is corrupt or truncated: run `python -m mopo_jax.data "
                           f"--dataset {name} --rebuild` to rebuild or re-download it.") from err
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, stamp=np.asarray(stamp), **arrays)
    os.replace(tmp, cache)
    return arrays


def _unavailable(name: str, official: str, ours: str, why: str) -> DatasetError:
    return DatasetError(
        f"Dataset {name!r} is not in the local Minari cache (tried {official}-v* and {ours}-v* "
        f"under {paths.minari_root()}) and could not be downloaded; {why} Or download it where "
        f"the network allows (`minari download {official}-v0`) and copy the folder into "
        f"MINARI_DATASETS_PATH here.")


def _build(env: str, level: str, num_steps: int | None, official: str, ours: str) -> str:
    """Build (env, level) locally; returns its Minari id."""
    name = canonical_name(env, level)
    if level not in BUILDABLE_LEVELS + HISTORY_LEVELS:
        raise _unavailable(name, official, ours, f"this project does not build {level!r} itself "
                           f"(it builds {', '.join(BUILDABLE_LEVELS)} and {', '.join(OOD_DATASETS)}).")
    default = 2 * DEFAULT_NUM_STEPS if level == "medium-expert" else DEFAULT_NUM_STEPS
    size = default if level in HISTORY_LEVELS else (num_steps or default)
    minari_id = f"{ours}-v0" if size == default else f"{ours}-n{size}-v0"
    log.info("[c] building %s locally", minari_id)
    try:
        if level == "medium-expert":
            half = size // 2
            medium = load_dataset(f"{env}-medium", num_steps=half, allow_download=False)
            expert = load_dataset(f"{env}-expert", num_steps=size - half, allow_download=False)
            steps = recipes.concat_steps(recipes.flat_steps(medium), recipes.flat_steps(expert))
            recipes.write_steps(minari_id, steps, env, f"{env}-medium ({half} steps) followed by "
                                f"{env}-expert ({size - half} steps)")
        else:
            recipes.build_level(env, level, minari_id, size)
    except (recipes.RecipeInputMissing, DatasetError) as err:
        raise _unavailable(name, official, ours, f"it cannot be built here: {err}") from err
    return minari_id


def _resolve(env: str, level: str, num_steps: int | None, allow_download: bool,
             download_timeout_s: float, rebuild: bool) -> tuple[str, str]:
    """Find or make the Minari dataset for (env, level); returns (minari_id, source)."""
    name = canonical_name(env, level)
    official, ours = f"mujoco/{env}/{level}", f"{OUR_NAMESPACE}/{env}/{level}"
    need = num_steps or 0
    if rebuild:
        for minari_id in minari_io.local_ids(ours):
            log.info("--rebuild: removing %s", minari_id)
            shutil.rmtree(paths.minari_dataset_dir(minari_id))
    local = [i for i in minari_io.local_ids(official) if not rebuild]
    local += [i for i in minari_io.local_ids(ours) if _built_size(i) >= need]
    if local:
        log.info("[a] local Minari cache: found %s", local[0])
        return local[0], "local Minari cache"
    log.info("[a] local Minari cache: no %s-v* or %s-v*", official, ours)
    if not allow_download or name in OOD_DATASETS:
        log.info("[b] Minari download: skipped (%s)", "no official dataset" if name in OOD_DATASETS
                 else f"offline: {paths.OFFLINE_ENV_VAR}=1 or --offline")
    else:
        downloaded = minari_io.try_download(official, download_timeout_s)
        if downloaded:
            log.info("[b] Minari download: got %s", downloaded)
            return downloaded, "Minari download"
    return _build(env, level, num_steps, official, ours), "built locally"


def load_dataset(name: str, *, num_steps: int | None = None, allow_download: bool | None = None,
                 download_timeout_s: float = 60.0, rebuild: bool = False) -> Dataset:
    """Load dataset `name` (e.g. 'hopper-random') as flat float32 arrays.

    Resolution, each step logged in one line on the 'mopo_jax.data' logger: (a) the local Minari
    cache (MINARI_DATASETS_PATH or ~/.minari/datasets), official `mujoco/<env>/<level>` first, then
    our own builds `mopo_jax/<env>/<level>`; (b) a Minari download, bounded by
    `download_timeout_s` and skipped when `allow_download` is False (default: unless
    MOPO_JAX_OFFLINE=1); (c) a local build (every level but 'simple': see mopo_jax.data.recipes).
    The first read is cached as .npz under MOPO_JAX_CACHE_DIR, so later loads take seconds.

    Args:
      name: '<env>-<level>', see `mopo_jax.envs.catalog.dataset_names()`.
      num_steps: keep only the first num_steps transitions (and build only that many if building).
      rebuild: delete our own local build of this dataset first and build it again.
    Returns: Dataset with N = num_steps (or all) transitions.
    """
    env, level = parse_dataset_name(name)
    if num_steps is not None and num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    if allow_download is None:
        allow_download = not paths.offline_by_default()
    minari_id, source = _resolve(env, level, num_steps, allow_download, download_timeout_s, rebuild)
    name = canonical_name(env, level)
    arrays = _load_flat(minari_id, name)
    return _assemble(arrays, env, name, minari_id, source, num_steps)


def _assemble(arrays: dict, env: str, name: str, minari_id: str, source: str,
              num_steps: int | None) -> Dataset:
    total = len(arrays["rewards"])
    keep = total if num_steps is None else num_steps
    if keep > total:
        raise DatasetError(f"{minari_id} holds {total} transitions; {num_steps} were requested.")
    arrays = {k: v[:keep] if k != "ref_scores" else v for k, v in arrays.items()}
    if keep < total and not arrays["episode_ends"][-1]:  # the cut ends an episode by truncation
        arrays["truncations"] = arrays["truncations"].copy()
        arrays["episode_ends"] = arrays["episode_ends"].copy()
        arrays["truncations"][-1] = arrays["episode_ends"][-1] = 1.0
    ref_min, ref_max = arrays.pop("ref_scores").tolist()
    ref_source = D4RL_REF_SOURCE if ENVS[env].ref_min_score == ref_min else "Minari metadata"
    task = name if name in OOD_DATASETS else ""
    if task:
        ref_min, ref_max, ref_source = float("nan"), float("nan"), OOD_REF_SOURCE
    elif not np.isfinite([ref_min, ref_max]).all():
        ref_min, ref_max, ref_source = ENVS[env].ref_min_score, ENVS[env].ref_max_score, D4RL_REF_SOURCE
    info = DatasetInfo(
        name=name, env_name=env, env_id=ENVS[env].env_id, source=source,
        minari_id=minari_id, path=str(paths.minari_dataset_dir(minari_id)),
        num_episodes=int(arrays["episode_ends"].sum()), ref_min_score=ref_min,
        ref_max_score=ref_max, ref_source=ref_source, task=task,
        data_stamp=hashlib.sha256(repr((minari_id, _file_stamp(minari_id))).encode()).hexdigest())
    return Dataset(info=info, **arrays)


def episode_returns(dataset: Dataset) -> np.ndarray:
    """Undiscounted return of each episode, [num_episodes] float64."""
    ends = np.flatnonzero(dataset.episode_ends)
    sums = np.cumsum(dataset.rewards, dtype=np.float64)[ends]
    return np.diff(np.concatenate([[0.0], sums]))


def summary(dataset: Dataset) -> str:
    """A human-readable multi-line summary of a loaded dataset."""
    info, returns = dataset.info, episode_returns(dataset)
    return "\n".join([
        f"dataset      {info.name}  ({info.env_id})",
        f"source       {info.source}: {info.minari_id}",
        f"stored at    {info.path}",
        f"transitions  {dataset.size}   episodes {info.num_episodes}   "
        f"terminations {int(dataset.terminations.sum())}",
        f"dims         obs {dataset.observations.shape[1]}   action {dataset.actions.shape[1]}",
        f"ep. return   mean {returns.mean():.2f}   min {returns.min():.2f}   "
        f"max {returns.max():.2f}",
        f"ref scores   min {info.ref_min_score}   max {info.ref_max_score}   ({info.ref_source})",
    ])
