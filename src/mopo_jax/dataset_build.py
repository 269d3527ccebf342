"""Writes Minari datasets locally and atomically: step collection, episode splitting, the random build."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

log = logging.getLogger("mopo_jax.data")

FIRST_RESET_SEED = 123  # the Minari/Farama recipe: episode i is reset with seed 123 + i


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


def collect_random_steps(env_id: str, num_steps: int, first_seed: int = FIRST_RESET_SEED) -> dict:
    """Step a Gymnasium env with uniform `action_space.sample()` actions for `num_steps` steps.

    The action space is seeded once with `first_seed`, so the data is exactly reproducible.
    Returns the dict of `collect_steps`.
    """
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(first_seed)
    return collect_steps(env, num_steps, lambda obs: env.action_space.sample(), first_seed)


def collect_steps(env, num_steps: int, choose_action: Callable[[np.ndarray], np.ndarray],
                  first_seed: int = FIRST_RESET_SEED) -> dict:
    """Step `env` (a Gymnasium env, closed at the end) with `choose_action(obs [o]) -> action [a]`.

    Episode i is reset with seed `first_seed + i`. The last episode is cut (truncated) at
    `num_steps`. Returns a dict of numpy arrays: observations [N+E, o] (each episode holds T+1
    observations), actions [N, a], rewards [N], terminations [N], truncations [N],
    episode_lengths [E], episode_seeds [E]; N = num_steps transitions, E episodes.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    observations = np.empty((2 * num_steps + 1, obs_dim), np.float64)  # upper bound: E <= N
    actions = np.empty((num_steps, act_dim), np.float32)
    rewards = np.empty(num_steps, np.float64)
    terminations = np.zeros(num_steps, bool)
    truncations = np.zeros(num_steps, bool)
    lengths, seeds = [], []
    obs_row, seed, episode_len = 0, first_seed, 0
    obs, _ = env.reset(seed=seed)
    observations[obs_row] = obs
    for t in range(num_steps):
        action = choose_action(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        obs_row += 1
        observations[obs_row] = obs
        actions[t], rewards[t] = action, reward
        terminations[t], truncations[t] = terminated, truncated
        episode_len += 1
        if terminated or truncated or t == num_steps - 1:
            truncations[t] = truncations[t] or not terminated
            lengths.append(episode_len)
            seeds.append(seed)
            episode_len = 0
            if t < num_steps - 1:
                seed += 1
                obs, _ = env.reset(seed=seed)
                obs_row += 1
                observations[obs_row] = obs
    env.close()
    return dict(
        observations=observations[: obs_row + 1],
        actions=actions,
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        episode_lengths=np.asarray(lengths, np.int64),
        episode_seeds=np.asarray(seeds, np.int64),
    )


def steps_from_flat(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                    next_observations: np.ndarray, terminations: np.ndarray,
                    episode_ends: np.ndarray) -> dict:
    """Flat transitions [N] in episode order -> the per-episode dict of `collect_steps`.

    An episode ends where `episode_ends` [N] is true (the last row always ends one); it is
    truncated there unless `terminations` says it terminated. Episode seeds are unknown (-1).
    """
    ends = np.asarray(episode_ends, bool).copy()
    ends[-1] = True
    terminations = np.asarray(terminations, bool)
    stops = np.flatnonzero(ends)
    starts = np.concatenate([[0], stops[:-1] + 1])
    obs = [np.concatenate([observations[a:b + 1], next_observations[b:b + 1]])
           for a, b in zip(starts, stops)]
    return dict(
        observations=np.concatenate(obs), actions=np.asarray(actions, np.float32),
        rewards=np.asarray(rewards, np.float64), terminations=terminations,
        truncations=ends & ~terminations, episode_lengths=(stops - starts + 1).astype(np.int64),
        episode_seeds=np.full(len(stops), -1, np.int64))


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


def build_random_dataset(
    dataset_id: str, env_id: str, num_steps: int, *, ref_min_score: float, ref_max_score: float,
    ref_source: str,
) -> Path:
    """Collect `num_steps` uniform-random steps of `env_id` and write them as Minari `dataset_id`.

    Returns the dataset directory. Logs the collection speed.
    """
    start = time.perf_counter()
    log.info("building %s locally: %d uniform-random steps of %s", dataset_id, num_steps, env_id)
    steps = collect_random_steps(env_id, num_steps)
    collect_s = time.perf_counter() - start
    description = (
        f"Built locally by mopo_jax: {num_steps} steps of {env_id} with uniform "
        f"action_space.sample() actions (action space seeded {FIRST_RESET_SEED}), episode i reset "
        f"with seed {FIRST_RESET_SEED}+i, the Minari/Farama random-data recipe. Reference scores: "
        f"{ref_source}."
    )
    path = write_minari_dataset(
        dataset_id, steps, env_id, description=description,
        algorithm_name="uniform random (action_space.sample)",
        ref_min_score=ref_min_score, ref_max_score=ref_max_score,
    )
    total_s = time.perf_counter() - start
    log.info(
        "built %s: %d steps, %d episodes in %.1f s (%.0f env steps/s; writing %.1f s)",
        dataset_id, num_steps, len(steps["episode_lengths"]), total_s, num_steps / collect_s,
        total_s - collect_s,
    )
    return path
