"""Stepping real envs into flat per-episode step dicts: random actions, a policy's actions, flat data."""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from mopo_jax.envs.make import make_env  # no JAX here: the replay workers import this module

log = logging.getLogger("mopo_jax.data")
PROGRESS_EVERY = 100_000  # env steps between progress lines of long collections


def _log_progress(done: int, total: int, start: float) -> None:
    """One progress line: steps done, rate and time left."""
    seconds = time.perf_counter() - start
    rate = done / max(seconds, 1e-9)
    log.info("collected %d/%d env steps (%.0f steps/s, %.0f s left)", done, total, rate,
             (total - done) / max(rate, 1e-9))

FIRST_RESET_SEED = 123  # the Minari/Farama recipe: episode i is reset with seed 123 + i


def collect_random_steps(env_id: str, num_steps: int, first_seed: int = FIRST_RESET_SEED,
                         num_workers: int | None = None) -> dict:
    """Step env `env_id` (made by `mopo_jax.envs.make.make_env`) with uniform
    `action_space.sample()` actions for `num_steps` steps.

    The action space is seeded once with `first_seed`, so the data is exactly reproducible.
    `num_workers` > 1 replays the episodes in that many processes (`mopo_jax.data.parallel`: the
    same arrays, bit for bit); None: `parallel.default_workers(num_steps)`. Returns the dict of
    `collect_steps`.
    """
    from mopo_jax.data import parallel

    workers = parallel.default_workers(num_steps) if num_workers is None else num_workers
    if workers > 1:
        return parallel.collect_exact(env_id, num_steps, first_seed, workers, action_seed=first_seed)
    env = make_env(env_id)
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
    steps, _ = step_episodes(env, num_steps, choose_action, first_seed)
    env.close()
    return steps


def step_episodes(env, num_steps: int, choose_action: Callable[[np.ndarray], np.ndarray],
                  first_seed: int, progress: bool = True) -> tuple[dict, bool]:
    """The loop of `collect_steps` (`env` left open): (its dict, whether the last episode ended by
    itself, terminated or truncated by the env, rather than being cut at `num_steps`)."""
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
    obs_row, seed, episode_len, ended = 0, first_seed, 0, False
    obs, _ = env.reset(seed=seed)
    observations[obs_row] = obs
    started = time.perf_counter()
    for t in range(num_steps):
        if progress and t and t % PROGRESS_EVERY == 0:
            _log_progress(t, num_steps, started)
        action = choose_action(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        obs_row += 1
        observations[obs_row] = obs
        actions[t], rewards[t] = action, reward
        terminations[t], truncations[t] = terminated, truncated
        episode_len += 1
        if terminated or truncated or t == num_steps - 1:
            ended = bool(terminated or truncated)
            truncations[t] = truncations[t] or not terminated
            lengths.append(episode_len)
            seeds.append(seed)
            episode_len = 0
            if t < num_steps - 1:
                seed += 1
                obs, _ = env.reset(seed=seed)
                obs_row += 1
                observations[obs_row] = obs
    return dict(
        observations=observations[: obs_row + 1],
        actions=actions,
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        episode_lengths=np.asarray(lengths, np.int64),
        episode_seeds=np.asarray(seeds, np.int64),
    ), ended


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


def collect_policy_steps(env_id: str, actor_params, num_steps: int, seed: int = 0,
                         first_reset_seed: int = FIRST_RESET_SEED,
                         policy_meta: dict | None = None, num_workers: int | None = None) -> dict:
    """`num_steps` steps of `env_id` (made by `mopo_jax.envs.make.make_env`) with the stochastic
    policy tanh(μ(s) + σ(s)·ε), ε ~ N(0, I) drawn from numpy's PCG64(seed); episode i reset with
    seed first_reset_seed + i.

    The policy runs in this process; `num_workers` > 1 replays its actions in that many processes
    (`mopo_jax.data.parallel`: the same arrays); None: `parallel.default_workers(num_steps)`.
    Returns the dict of `collect_steps`.
    """
    import jax

    from mopo_jax.data import parallel
    from mopo_jax.sac.config import SACConfig
    from mopo_jax.sac.policy import actor_from_params

    sac = (policy_meta or {}).get("sac")
    bounds = SACConfig(log_std_min=sac["log_std_min"], log_std_max=sac["log_std_max"]) if sac else None
    actor = actor_from_params(actor_params, bounds)
    mean_log_std = jax.jit(lambda p, o: actor.apply({"params": p}, o[None].astype(np.float32)))

    def make_choose() -> Callable[[np.ndarray], np.ndarray]:
        """The policy with its noise stream at the start: PCG64(seed)."""
        rng = np.random.default_rng(seed)

        def choose(obs: np.ndarray) -> np.ndarray:
            # np.asarray before [0]: indexing the JAX array would dispatch 2 more ops (same values)
            mean, log_std = (np.asarray(x, np.float64)[0] for x in mean_log_std(actor_params, obs))
            return np.tanh(mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)

        return choose

    workers = parallel.default_workers(num_steps) if num_workers is None else num_workers
    if workers > 1:
        return parallel.collect_exact(env_id, num_steps, first_reset_seed, workers,
                                      make_choose=make_choose)
    return collect_steps(make_env(env_id), num_steps, make_choose(), first_reset_seed)
