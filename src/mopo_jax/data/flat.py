"""Flat arrays of a local Minari dataset: read through a .npz cache, fitted to the evaluation env's
observation layout (105-dim Ant data cut to 27) and checked before use."""

from __future__ import annotations

import functools
import hashlib
import logging
import os

import numpy as np

from mopo_jax import paths, stale
from mopo_jax.data import minari_io
from mopo_jax.envs.catalog import ENVS, env_family, parse_dataset_name
from mopo_jax.envs.make import make_env

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


def data_stamp(minari_id: str, cut_from=None) -> str:
    """Hex sha256 of the Minari id and its data files' `file_stamp`, and of `cut_from` (the source
    observation dim of data cut by `fit_observations`, or None): models cached for the uncut data
    never match the cut data."""
    identity = (minari_id, file_stamp(minari_id))
    if cut_from is not None:
        identity += (("observations cut from", int(cut_from)),)
    return hashlib.sha256(repr(identity).encode()).hexdigest()


def rebuild_hint(name: str) -> str:
    """The remedy sentence for a damaged local copy of dataset `name`."""
    return (f"run `python -m mopo_jax.data --dataset {name} --rebuild` to rebuild or re-download "
            "it.")


def load_flat(minari_id: str, name: str) -> dict:
    """Flat arrays of Minari dataset `minari_id` (the dict of `minari_io.read_flat`), via a .npz
    cache keyed by its data files' `file_stamp`. Whichever way they were read, they are fitted to
    the evaluation env of dataset `name` (`fit_observations`: 105-dim Ant data cut to its first 27
    columns, adding "cut_from" [] = 105) and their values are checked (`check_values`): a cache
    that fails is re-read from the dataset, a dataset that fails raises DatasetError naming
    `name`'s --rebuild. The cache holds the fitted arrays, so it never serves uncut data."""
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
            arrays = fit_observations(arrays, minari_id, name)
            check_values(arrays, minari_id, name)
            return arrays
        except DatasetError as err:  # a cache is only a cache: read the dataset itself again
            log.warning("flat cache %s holds bad values; re-reading the Minari dataset (%s)",
                        cache, err)
    try:
        arrays = minari_io.read_flat(minari_id)
    except minari_io.UnreadableDataset as err:
        raise DatasetError(f"{err} The file is corrupt or truncated: {rebuild_hint(name)}") from err
    arrays = fit_observations(arrays, minari_id, name)
    check_values(arrays, minari_id, name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    stale.remove_stale(cache.parent, ("*.tmp*.npz",))  # left by writes killed over a day ago
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


CONTACT_FORCE_WHY = ("Minari's Ant-v5 data keep the 78 contact-force dims of the Ant-v5 default "
                     "(include_cfrc_ext_in_observation=True); MOPO's Ant, which this project "
                     "evaluates on, observes only qpos[2:] ‖ qvel, their first 27 columns")


@functools.lru_cache(maxsize=None)
def env_dims(env_id: str, **kwargs) -> tuple[int, int]:
    """(obs_dim, act_dim) of `mopo_jax.envs.make.make_env(env_id, **kwargs)`'s spaces, the env
    the project evaluates on (e.g. (27, 8) for Ant-v5; an OOD task's target-reward env has its
    source env's spaces). Makes the env once per process and closes it."""
    env = make_env(env_id, **kwargs)
    try:
        return int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    finally:
        env.close()


def _contact_force_cut(env_id: str) -> tuple[int, int] | None:
    """(105, 27) for an Ant id: the observation dims with and without Ant-v5's contact forces, as
    this project makes the env; None for the other families."""
    if env_family(env_id) != "ant":
        return None
    return env_dims(env_id, include_cfrc_ext_in_observation=True)[0], env_dims(env_id)[0]


def fit_observations(arrays: dict, minari_id: str, name: str) -> dict:
    """`arrays` with observations/next_observations [N, 105] of an Ant dataset cut to their first
    27 columns [N, 27] (C-contiguous), since the evaluation env of dataset `name` observes 27:
    Ant-v5 with include_cfrc_ext_in_observation=True appends the 78 contact forces to MOPO's
    qpos[2:] ‖ qvel. The cut adds "cut_from" (a 0-d int array: 105) and logs one line on the
    'mopo_jax.data' logger; arrays that already carry "cut_from" (read from the flat cache) are
    not cut again, but the line is logged again. Any other arrays are returned unchanged
    (`check_env_dims` refuses those that do not fit)."""
    cut = _contact_force_cut(ENVS[parse_dataset_name(name)[0]].env_id)
    if "cut_from" not in arrays:
        shapes = {arrays[k].shape[1:] for k in ("observations", "next_observations")}
        if cut is None or shapes != {(cut[0],)}:
            return arrays
        arrays = dict(arrays, cut_from=np.asarray(cut[0]), **{
            k: np.ascontiguousarray(arrays[k][:, :cut[1]])
            for k in ("observations", "next_observations")})
    source, kept = int(arrays["cut_from"]), arrays["observations"].shape[1]
    log.info("%s: observation dims %d -> %d (its first %d columns kept): %s", minari_id, source,
             kept, kept, CONTACT_FORCE_WHY)
    return arrays


def check_env_dims(data, info) -> None:
    """Raise DatasetError unless `data`'s dims are the evaluation env's: observations and
    next_observations [N, o] with o == the env's observation dim, actions [N, a] with a == its
    action dim (`env_dims(info.env_id)`).

    Args:
      data: anything with those arrays (a `load.Dataset`, `types.Transitions`).
      info: the dataset's `load.DatasetInfo` (name, env_id, minari_id, path are read).
    Call it right after loading, before a fit or any write: a mismatch otherwise shows only at
    the first evaluation, after the dynamics fit.
    """
    want_obs, want_act = env_dims(info.env_id)
    got = {"observations": tuple(data.observations.shape[1:]),
           "next_observations": tuple(data.next_observations.shape[1:]),
           "actions": tuple(data.actions.shape[1:])}
    want = {"observations": (want_obs,), "next_observations": (want_obs,), "actions": (want_act,)}
    bad = [f"{k} [N, {', '.join(map(str, got[k]))}] vs [N, {want[k][0]}]" for k in got
           if got[k] != want[k]]
    if bad:
        raise DatasetError(
            f"dataset {info.name!r} ({info.minari_id} at {info.path}) does not fit its evaluation "
            f"env {info.env_id} (observation ({want_obs},), action ({want_act},)): "
            f"{'; '.join(bad)} (data vs env). These data were not collected in {info.env_id} as "
            f"this project makes it (mopo_jax.envs.make.make_env): move {info.path} out of the "
            f"Minari root and load {info.name!r} again, so that it is downloaded or built here.")
