"""Loading a dataset by name: resolve (local Minari cache, download, local build), flatten, cache, compose."""

from __future__ import annotations

import dataclasses
import logging
import re

import flax.struct
import numpy as np

from mopo_jax import paths
from mopo_jax.data import local_cache, minari_io, recipes
from mopo_jax.data.flat import DatasetError, data_stamp, load_flat
from mopo_jax.envs.catalog import (BUILDABLE_LEVELS, D4RL_REF_SOURCE, ENVS, HISTORY_LEVELS,
                                   MINARI_NAMESPACE, MINARI_OFFICIAL_LEVELS, OOD_DATASETS,
                                   OOD_REF_SOURCE, OUR_NAMESPACE, canonical_name,
                                   parse_dataset_name, resolve_name)
from mopo_jax.types import Transitions

log = logging.getLogger("mopo_jax.data")

DEFAULT_NUM_STEPS = 1_000_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static metadata of a loaded dataset (hashable, so it can ride along as pytree aux data)."""

    name: str
    env_name: str
    env_id: str
    source: str  # "local Minari cache", "Minari download", "built locally" or
    # "built locally (download failed: <reason>)"
    minari_id: str
    path: str
    num_episodes: int
    ref_min_score: float
    ref_max_score: float
    ref_source: str
    task: str = ""  # an OOD task name (mopo_jax.envs.ood) when the evaluation env has a target reward
    data_stamp: str = ""  # flat.data_stamp: sha256 of the Minari id, its files' stamp, any cut


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


def _built_size(minari_id: str, level: str) -> int:
    """Transitions in our local build `minari_id` of `level`: its '-n<size>' tag, else the level's
    default size (2**62 for a whole-history level: the run's size is known only at load)."""
    match = re.search(r"-n(\d+)-v\d+$", minari_id)
    if match:
        return int(match.group(1))
    if level in HISTORY_LEVELS:
        return 2**62  # holds the whole run; a too-large request fails at load with the real size
    return 2 * DEFAULT_NUM_STEPS if level == "medium-expert" else DEFAULT_NUM_STEPS


def _build_id(ours: str, level: str, num_steps: int | None) -> tuple[str, int]:
    """(Minari id, size) that a local build of this request gets."""
    default = 2 * DEFAULT_NUM_STEPS if level == "medium-expert" else DEFAULT_NUM_STEPS
    size = default if level in HISTORY_LEVELS else (num_steps or default)
    return (f"{ours}-v0" if size == default else f"{ours}-n{size}-v0"), size


def _unavailable(name: str, official: str | None, ours: str, download: str, why: str) -> DatasetError:
    """The error for a dataset found nowhere: where it was looked for, what the download did, why
    no local build was possible, and how to bring an official copy in by hand."""
    tried = " and ".join(f"{prefix}-v*" for prefix in (official, ours) if prefix)
    hint = (f" Or download it where the network allows (`minari download {official}-v0`) and copy "
            f"the folder into MINARI_DATASETS_PATH here." if official else "")
    return DatasetError(f"Dataset {name!r} is not in the local Minari cache (tried {tried} under "
                        f"{paths.minari_root()}); {download}; {why}{hint}")


def _build(env: str, level: str, num_steps: int | None, rebuild: bool, allow_download: bool,
           download_timeout_s: float) -> str:
    """Build (env, level) locally, swapping it in only when complete; returns its Minari id.
    medium-expert loads its halves like any dataset (download flags passed on). Raises
    RecipeInputMissing or DatasetError when it cannot be built here."""
    ours = f"{OUR_NAMESPACE}/{env}/{level}"
    if level not in BUILDABLE_LEVELS + HISTORY_LEVELS:
        raise recipes.RecipeInputMissing(
            f"this project does not build {level!r} itself (it builds "
            f"{', '.join(BUILDABLE_LEVELS)} and {', '.join(OOD_DATASETS)}).")
    minari_id, size = _build_id(ours, level, num_steps)
    log.info("[c] %s %s locally", "--rebuild: rebuilding" if rebuild else "building", minari_id)
    if level == "medium-expert":
        half, inputs = size // 2, recipes.input_stamps(env, level)
        try:
            flags = dict(allow_download=allow_download, download_timeout_s=download_timeout_s)
            medium = load_dataset(f"{env}-medium", num_steps=half, **flags)
            expert = load_dataset(f"{env}-expert", num_steps=size - half, **flags)
        except DatasetError as err:
            raise recipes.RecipeInputMissing(f"it is {env}-medium followed by {env}-expert, and "
                                             f"one half cannot be made. {err}") from err
        steps = recipes.concat_steps(recipes.flat_steps(medium), recipes.flat_steps(expert))
        recipes.write_steps(minari_id, steps, env, f"{env}-medium ({half} steps of "
                            f"{medium.info.minari_id}) followed by {env}-expert ({size - half} "
                            f"steps of {expert.info.minari_id})", inputs=inputs)
    else:
        recipes.build_level(env, level, minari_id, size)
    paths.flat_cache_path(minari_id).unlink(missing_ok=True)
    return minari_id


def _resolve(env: str, level: str, num_steps: int | None, allow_download: bool,
             download_timeout_s: float, rebuild: bool) -> tuple[str, str]:
    """Find or make the Minari dataset for (env, level); returns (minari_id, source)."""
    name = canonical_name(env, level)
    official = f"{MINARI_NAMESPACE}/{env}/{level}" if level in MINARI_OFFICIAL_LEVELS else None
    ours = f"{OUR_NAMESPACE}/{env}/{level}"
    local_cache.clear_broken([p for p in (official, ours) if p], name, rebuild)
    if rebuild:
        local_cache.drop_bad_official(official, name)
        kept = minari_io.local_ids(official) if official else []
        if kept and level not in BUILDABLE_LEVELS + HISTORY_LEVELS:
            log.info("--rebuild: %s is not built here; keeping the intact %s", name, kept[0])
            return kept[0], "local Minari cache"
    else:
        local = minari_io.local_ids(official) if official else []
        local += [i for i in minari_io.local_ids(ours) if _built_size(i, level) >= (num_steps or 0)
                  and local_cache.inputs_unchanged(i, name)]
        if local:
            log.info("[a] local Minari cache: found %s", local[0])
            return local[0], "local Minari cache"
        log.info("[a] local Minari cache: no %s", " or ".join(f"{p}-v*" for p in (official, ours) if p))
    downloaded, download, failure = _download(official, allow_download, download_timeout_s, rebuild)
    if downloaded:
        return downloaded, "Minari download"
    try:
        built = _build(env, level, num_steps, rebuild, allow_download, download_timeout_s)
    except (recipes.RecipeInputMissing, DatasetError) as err:
        raise _unavailable(name, official, ours, download, f"it cannot be built here: {err}") from err
    return built, "built locally" + (f" (download failed: {failure})" if failure else "")


def _download(official: str | None, allow: bool, timeout_s: float,
              rebuild: bool) -> tuple[str | None, str, str | None]:
    """Step (b): (downloaded id or None, what happened, the failure reason or None)."""
    if official is None:
        note = "Minari has no such dataset, so no download was tried"
    elif not allow:
        note = f"no download was tried (offline: {paths.OFFLINE_ENV_VAR}=1 or --offline)"
    elif rebuild and minari_io.local_ids(official):
        note = f"no download was tried: --rebuild keeps the intact {official} and rebuilds ours"
    else:
        try:
            downloaded = minari_io.try_download(official, timeout_s)
        except minari_io.DownloadFailed as err:
            log.warning("[b] Minari download of %s-v* failed (%s): building it locally instead",
                        official, err)
            return None, f"the Minari download failed ({err})", str(err)
        log.info("[b] Minari download: got %s", downloaded)
        return downloaded, "downloaded", None
    log.info("[b] Minari download: skipped (%s)", note)
    return None, note, None


def load_dataset(name: str, *, num_steps: int | None = None, allow_download: bool | None = None,
                 download_timeout_s: float = 60.0, rebuild: bool = False) -> Dataset:
    """Load dataset `name` (e.g. 'hopper-random') as flat float32 arrays.

    Resolution, each step logged in one line on the 'mopo_jax.data' logger: (a) the local Minari
    cache (MINARI_DATASETS_PATH or ~/.minari/datasets), official `mujoco/<env>/<level>` first, then
    our own builds `mopo_jax/<env>/<level>`; folders whose data file does not open (an interrupted
    download or build) are ignored with a warning, and so is a build of ours whose recorded inputs
    changed since (a policy re-exported, an OOD source run grown: recipes.input_stamps);
    (b) a Minari download into a temporary folder, renamed into place when complete, bounded by
    `download_timeout_s`; only for the levels Minari has (catalog.MINARI_OFFICIAL_LEVELS) and
    skipped when `allow_download` is False (default: unless MOPO_JAX_OFFLINE=1); a failed download
    is logged as a WARNING and named in info.source; (c) a local build (every level but 'simple':
    see mopo_jax.data.recipes). 105-dim Ant data are cut to the env's 27 dims (logged:
    flat.fit_observations), the values are checked (`check_values`) and the first read is
    cached as .npz under MOPO_JAX_CACHE_DIR, so later loads take seconds.

    Args:
      name: '<env>-<level>' (see `mopo_jax.envs.catalog.dataset_names()`), a Minari id
        ('mujoco/hopper/medium-v0') or a D4RL name ('hopper-medium-v2', mapped with a warning).
      num_steps: keep only the first num_steps transitions (and build only that many if building).
      rebuild: remove broken local copies of this dataset (and an official copy whose values fail
        the check), then build this request's size again; the old copy of that size is replaced
        only once the new one is complete, other sizes are kept.
    Returns: Dataset with N = num_steps (or all) transitions.
    """
    canonical, note = resolve_name(name)
    if note:
        log.warning("%s", note)
    env, level = parse_dataset_name(canonical)
    if num_steps is not None and num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    if allow_download is None:
        allow_download = not paths.offline_by_default()
    minari_id, source = _resolve(env, level, num_steps, allow_download, download_timeout_s, rebuild)
    arrays = load_flat(minari_id, canonical)
    return _assemble(arrays, env, canonical, minari_id, source, num_steps)


def _assemble(arrays: dict, env: str, name: str, minari_id: str, source: str,
              num_steps: int | None) -> Dataset:
    """The Dataset of `load_flat`'s arrays: the first `num_steps` rows (the last one marked as an
    episode end by truncation when the cut falls inside an episode) and its DatasetInfo (reference
    scores: the data's, else D4RL's; NaN for an OOD task)."""
    cut_from = arrays.get("cut_from")  # flat.fit_observations: 105-dim Ant data cut to 27
    total = len(arrays["rewards"])
    keep = total if num_steps is None else num_steps
    if keep > total:
        raise DatasetError(f"{minari_id} holds {total} transitions; {num_steps} were requested.")
    arrays = {k: v[:keep] if k != "ref_scores" else v for k, v in arrays.items() if k != "cut_from"}
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
        data_stamp=data_stamp(minari_id, cut_from))
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
