"""Dataset names, their resolution (local Minari cache, download, local build) and flat loading."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import flax.struct
import numpy as np

from mopo_jax.transitions import Transitions

log = logging.getLogger("mopo_jax.data")

DEFAULT_NUM_STEPS = 1_000_000
OUR_NAMESPACE = "mopo_jax"
OFFLINE_ENV_VAR = "MOPO_JAX_OFFLINE"
CACHE_ENV_VAR = "MOPO_JAX_CACHE_DIR"
D4RL_REF_SOURCE = "D4RL v2 reference constants (random/expert returns measured on the -v2 envs)"


@dataclasses.dataclass(frozen=True)
class EnvInfo:
    """A MuJoCo task: its Gymnasium id and D4RL reference returns used for normalised scores."""

    env_id: str
    ref_min_score: float
    ref_max_score: float


ENVS: dict[str, EnvInfo] = {
    "hopper": EnvInfo("Hopper-v5", -20.272305, 3234.3),
    "halfcheetah": EnvInfo("HalfCheetah-v5", -280.178953, 12135.0),
    "walker2d": EnvInfo("Walker2d-v5", 1.629008, 4592.3),
    "ant": EnvInfo("Ant-v5", -325.6, 3879.7),
}
LEVELS = ("random", "medium", "expert", "medium-expert", "medium-replay", "simple")
BUILDABLE_LEVELS = ("random", "medium", "expert", "medium-expert", "medium-replay")
# MOPO's out-of-distribution tasks (mopo_jax.ood): name -> (env, level); evaluated on the target reward.
OOD_DATASETS = {"halfcheetah-jump": ("halfcheetah", "jump"), "ant-angle": ("ant", "angle")}
OOD_REF_SOURCE = "none: MOPO reports raw returns for the out-of-distribution tasks"
HISTORY_LEVELS = ("medium-replay", "jump", "angle")  # cut from a behaviour run: size set by the run


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
    task: str = ""  # an OOD task name (mopo_jax.ood) when the evaluation env has a target reward


class Dataset(flax.struct.PyTreeNode):
    """Flat float32 transition arrays of one dataset (N transitions) plus static `info`.

    observations/next_observations [N, obs_dim]; actions [N, act_dim]; rewards [N];
    terminals [N] (1.0 only for true terminations); timeouts [N] (1.0 where an episode was
    truncated: time limit or the end of the data); episode_ends [N] (terminals or timeouts).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_ends: np.ndarray
    info: DatasetInfo = flax.struct.field(pytree_node=False)

    def transitions(self) -> Transitions:
        """The (observations, actions, rewards, next_observations, terminals) view, each [N, ...]."""
        return Transitions(self.observations, self.actions, self.rewards,
                           self.next_observations, self.terminals)

    @property
    def size(self) -> int:
        """Number of transitions N."""
        return int(self.rewards.shape[0])


def dataset_names() -> list[str]:
    """All valid dataset names, e.g. 'hopper-random'."""
    return [f"{env}-{level}" for env in ENVS for level in LEVELS] + list(OOD_DATASETS)


def parse_dataset_name(name: str) -> tuple[str, str]:
    """Split 'hopper-medium-replay' into ('hopper', 'medium-replay'); ValueError lists valid names."""
    if name.strip().lower() in OOD_DATASETS:
        return OOD_DATASETS[name.strip().lower()]
    env, _, level = name.strip().lower().partition("-")
    if env not in ENVS or level not in LEVELS:
        raise ValueError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(dataset_names())}."
        )
    return env, level


def normalized_score(raw_return, info: DatasetInfo):
    """100 · (return − ref_min) / (ref_max − ref_min), with the reference named in info.ref_source
    (NaN for the OOD tasks, which have no reference)."""
    return 100.0 * (np.asarray(raw_return) - info.ref_min_score) / (
        info.ref_max_score - info.ref_min_score)


def cache_dir() -> Path:
    """Where derived files go: MOPO_JAX_CACHE_DIR, default ~/.cache/mopo_jax."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "mopo_jax")


def _local_minari_ids(prefix: str) -> list[str]:
    """Local Minari ids `prefix-v<k>` and `prefix-n<size>-v<k>`, found on disk (newest first)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    parent = get_dataset_path(prefix.rsplit("/", 1)[0])
    stem = prefix.rsplit("/", 1)[1]
    pattern = re.compile(rf"{re.escape(stem)}(-n\d+)?-v(\d+)")
    if not parent.is_dir():
        return []
    found = [d.name for d in parent.iterdir() if pattern.fullmatch(d.name) and (d / "data").is_dir()]
    found.sort(key=lambda n: int(pattern.fullmatch(n).group(2)), reverse=True)
    return [f"{prefix.rsplit('/', 1)[0]}/{n}" for n in found]


def _built_size(minari_id: str) -> int:
    match = re.search(r"-n(\d+)-v\d+$", minari_id)
    if match:
        return int(match.group(1))
    level = minari_id.rsplit("/", 1)[-1].rsplit("-v", 1)[0]
    if level in HISTORY_LEVELS:
        return 2**62  # holds the whole run; a too-large request fails at load with the real size
    return 2 * DEFAULT_NUM_STEPS if level == "medium-expert" else DEFAULT_NUM_STEPS


def _try_download(prefix: str, timeout_s: float) -> str | None:
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


def _flatten_minari(minari_id: str, name: str) -> dict:
    """Read a Minari dataset through minari.load_dataset into flat float32 arrays."""
    import minari

    try:
        dataset = minari.load_dataset(minari_id)
        episodes = list(dataset.iterate_episodes())
    except Exception as err:  # h5py raises OSError/KeyError/ValueError on damaged files
        from minari.storage.datasets_root_dir import get_dataset_path

        path = get_dataset_path(minari_id)
        raise DatasetError(
            f"Minari dataset {minari_id} at {path} cannot be read ({type(err).__name__}: {err}). "
            f"The file is corrupt or truncated: delete {path} and run "
            f"`python -m mopo_jax.data --dataset {name} --rebuild` to rebuild or re-download it."
        ) from err
    cat = lambda key: np.concatenate([getattr(ep, key) for ep in episodes])  # noqa: E731
    arrays = dict(
        observations=np.concatenate([ep.observations[:-1] for ep in episodes]),
        next_observations=np.concatenate([ep.observations[1:] for ep in episodes]),
        actions=cat("actions"), rewards=cat("rewards"),
        terminals=cat("terminations"), timeouts=cat("truncations"),
    )
    ends = np.zeros(len(arrays["rewards"]), bool)
    ends[np.cumsum([len(ep.rewards) for ep in episodes]) - 1] = True
    arrays["episode_ends"] = ends
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    meta = dataset.storage.metadata
    arrays["ref_scores"] = np.asarray(
        [meta.get("ref_min_score", np.nan), meta.get("ref_max_score", np.nan)], np.float64)
    return arrays


def _load_flat(minari_id: str, name: str) -> dict:
    """Flat arrays of a Minari dataset, via a .npz cache keyed by the data file's size and mtime."""
    from minari.storage.datasets_root_dir import get_dataset_path

    data_dir = get_dataset_path(minari_id) / "data"
    stamp = [f.stat().st_size for f in sorted(data_dir.iterdir())] + [
        f.stat().st_mtime_ns for f in sorted(data_dir.iterdir())]
    cache = cache_dir() / (minari_id.replace("/", "__") + ".npz")
    if cache.exists():
        try:
            with np.load(cache) as npz:
                if npz["stamp"].tolist() == stamp:
                    return {k: npz[k] for k in npz.files if k != "stamp"}
            log.info("flat cache %s is stale; re-reading the Minari dataset", cache)
        except Exception as err:  # a damaged cache is only a cache: rebuild it
            log.info("flat cache %s unreadable (%s); re-reading the Minari dataset", cache, err)
    arrays = _flatten_minari(minari_id, name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, stamp=np.asarray(stamp), **arrays)
    os.replace(tmp, cache)
    return arrays


def _resolve(env: str, level: str, num_steps: int | None, allow_download: bool,
             download_timeout_s: float, rebuild: bool) -> tuple[str, str]:
    """Find or make the Minari dataset for (env, level); returns (minari_id, source)."""
    name = f"{env}-{level}"
    official, ours = f"mujoco/{env}/{level}", f"{OUR_NAMESPACE}/{env}/{level}"
    need = num_steps or 0
    if rebuild:
        from minari.storage.datasets_root_dir import get_dataset_path

        for minari_id in _local_minari_ids(ours):
            log.info("--rebuild: removing %s", minari_id)
            shutil.rmtree(get_dataset_path(minari_id))
    local = [i for i in _local_minari_ids(official) if not rebuild]
    local += [i for i in _local_minari_ids(ours) if _built_size(i) >= need]
    if local:
        log.info("[a] local Minari cache: found %s", local[0])
        return local[0], "local Minari cache"
    log.info("[a] local Minari cache: no %s-v* or %s-v*", official, ours)
    if not allow_download or name in OOD_DATASETS:
        log.info("[b] Minari download: skipped (%s)", "no official dataset" if name in OOD_DATASETS
                 else f"offline: {OFFLINE_ENV_VAR}=1 or --offline")
    else:
        downloaded = _try_download(official, download_timeout_s)
        if downloaded:
            log.info("[b] Minari download: got %s", downloaded)
            return downloaded, "Minari download"
    def unavailable(why: str) -> DatasetError:
        return DatasetError(
            f"Dataset {name!r} is not in the local Minari cache (tried {official}-v* and {ours}-v* "
            f"under {_minari_root_str()}) and could not be downloaded; {why} Or download it where "
            f"the network allows (`minari download {official}-v0`) and copy the folder into "
            f"MINARI_DATASETS_PATH here.")

    if level not in BUILDABLE_LEVELS + HISTORY_LEVELS:
        raise unavailable(f"this project does not build {level!r} itself (it builds "
                          f"{', '.join(BUILDABLE_LEVELS)} and {', '.join(OOD_DATASETS)}).")
    from mopo_jax.dataset_levels import RecipeInputMissing, build_level

    default = 2 * DEFAULT_NUM_STEPS if level == "medium-expert" else DEFAULT_NUM_STEPS
    size = default if level in HISTORY_LEVELS else (num_steps or default)
    minari_id = f"{ours}-v0" if size == default else f"{ours}-n{size}-v0"
    log.info("[c] building %s locally", minari_id)
    try:
        build_level(env, level, minari_id, size)
    except RecipeInputMissing as err:
        raise unavailable(f"it cannot be built here: {err}") from err
    return minari_id, "built locally"


def _minari_root_str() -> str:
    from minari.storage.datasets_root_dir import get_dataset_path

    return str(get_dataset_path())


def load_dataset(name: str, *, num_steps: int | None = None, allow_download: bool | None = None,
                 download_timeout_s: float = 60.0, rebuild: bool = False) -> Dataset:
    """Load dataset `name` (e.g. 'hopper-random') as flat float32 arrays.

    Resolution, each step logged in one line on the 'mopo_jax.data' logger: (a) the local Minari
    cache (MINARI_DATASETS_PATH or ~/.minari/datasets), official `mujoco/<env>/<level>` first, then
    our own builds `mopo_jax/<env>/<level>`; (b) a Minari download, bounded by
    `download_timeout_s` and skipped when `allow_download` is False or MOPO_JAX_OFFLINE=1; (c) a
    local build (every level but 'simple': see mopo_jax.dataset_levels for what each needs). The first read is cached as .npz under MOPO_JAX_CACHE_DIR
    (default ~/.cache/mopo_jax), so later loads take seconds.

    Args:
      name: '<env>-<level>', see `dataset_names()`.
      num_steps: keep only the first num_steps transitions (and build only that many if building).
      rebuild: delete our own local build of this dataset first and build it again.
    Returns: Dataset with N = num_steps (or all) transitions.
    """
    env, level = parse_dataset_name(name)
    if num_steps is not None and num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    if allow_download is None:
        allow_download = os.environ.get(OFFLINE_ENV_VAR, "") in ("", "0", "false", "False")
    minari_id, source = _resolve(env, level, num_steps, allow_download, download_timeout_s,
                                 rebuild)
    arrays = _load_flat(minari_id, f"{env}-{level}")
    total = len(arrays["rewards"])
    keep = total if num_steps is None else num_steps
    if keep > total:
        raise DatasetError(f"{minari_id} holds {total} transitions; {num_steps} were requested.")
    arrays = {k: v[:keep] if k != "ref_scores" else v for k, v in arrays.items()}
    if keep < total and not arrays["episode_ends"][-1]:  # the cut ends an episode by truncation
        arrays["timeouts"] = arrays["timeouts"].copy()
        arrays["episode_ends"] = arrays["episode_ends"].copy()
        arrays["timeouts"][-1] = arrays["episode_ends"][-1] = 1.0
    ref_min, ref_max = arrays.pop("ref_scores").tolist()
    ref_source = D4RL_REF_SOURCE if ENVS[env].ref_min_score == ref_min else "Minari metadata"
    task = f"{env}-{level}" if f"{env}-{level}" in OOD_DATASETS else ""
    if task:
        ref_min, ref_max, ref_source = float("nan"), float("nan"), OOD_REF_SOURCE
    elif not np.isfinite([ref_min, ref_max]).all():
        ref_min, ref_max, ref_source = ENVS[env].ref_min_score, ENVS[env].ref_max_score, D4RL_REF_SOURCE
    from minari.storage.datasets_root_dir import get_dataset_path

    info = DatasetInfo(
        name=f"{env}-{level}", env_name=env, env_id=ENVS[env].env_id, source=source,
        minari_id=minari_id, path=str(get_dataset_path(minari_id)),
        num_episodes=int(arrays["episode_ends"].sum()), ref_min_score=ref_min,
        ref_max_score=ref_max, ref_source=ref_source, task=task,
    )
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
        f"terminals {int(dataset.terminals.sum())}",
        f"dims         obs {dataset.observations.shape[1]}   action {dataset.actions.shape[1]}",
        f"ep. return   mean {returns.mean():.2f}   min {returns.min():.2f}   "
        f"max {returns.max():.2f}",
        f"ref scores   min {info.ref_min_score}   max {info.ref_max_score}   ({info.ref_source})",
    ])


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m mopo_jax.data --dataset hopper-random` prepares a dataset and summarises it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mopo_jax.data", description=main.__doc__)
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(dataset_names())}")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="keep (and build) only the first N transitions; default: all (1M)")
    parser.add_argument("--offline", action="store_true",
                        help=f"never try a download (same as {OFFLINE_ENV_VAR}=1)")
    parser.add_argument("--download-timeout", type=float, default=60.0,
                        help="seconds before a Minari download attempt is abandoned")
    parser.add_argument("--rebuild", action="store_true",
                        help="delete this project's local build of the dataset and build it again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dataset = load_dataset(args.dataset, num_steps=args.num_steps,
                               allow_download=False if args.offline else None,
                               download_timeout_s=args.download_timeout, rebuild=args.rebuild)
    except (ValueError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
