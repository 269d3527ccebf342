"""Exact episode-parallel stepping: a serial chain finds where episodes end, workers replay them.

The randomness of a build (collect.collect_random_steps / collect_policy_steps) is one stream
shared by all episodes: the action space is seeded once (random level), or one PCG64 draws the
policy noise ε of every step (medium / expert). Step t of the build consumes the t-th draw,
whatever episode it is in, so episode i's actions depend on how many steps episodes 0..i-1 took.
Everything else about an episode depends on its own seed only: `env.reset(seed=123 + i)` reseeds
the env's RNG and `mj_resetData` clears the whole MuJoCo state. Hence two passes:

  1. chain (this process, serial): the MuJoCo model stepped with the exact calls `env.step`
     makes (`do_simulation`, then the env's own termination rule) and the TimeLimit cut, skipping
     observations, rewards and infos unless the policy needs them; each step's action drawn in
     the serial order (random: `sample_actions`, bit-identical to per-step sampling). Yields every
     episode's length, hence where its actions start in the stream. With pre-drawn actions
     (random level) `fast_chain` rolls episodes out in C where that pays (mujoco.rollout, same
     states bit for bit) with the termination rule vectorised, and skips the physics of envs
     that never terminate; policy levels step one env step at a time (the next action needs
     the obs).
  2. replay (worker processes): blocks of whole episodes run through `collect.step_episodes`, the
     serial loop itself, with their seeds and their slice of the actions. Each block checks that
     its episodes end exactly where the chain said; any mismatch (an env whose `step` differs from
     the chain's model) raises ReplayMismatch and the build falls back to the serial loop.

The chain stays serial and is mostly MuJoCo itself (Hopper, Walker2d and Ant integrate with RK4:
4 mj_forward per mj_step, 4 or 5 mj_steps per env step), so rolling out in C only trims the Python
around it (chain CPU time: Hopper-v5 +11%, Ant-v5 +5%; Walker2d-v5 stays per step, where it is
faster). A Hopper chain step costs about half a serial `env.step` (9.1k vs 4.4k steps/s of one
core), which bounds the speedup on many cores near 2x; HalfCheetah's chain is free.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Iterator

import numpy as np

from mopo_jax.data import fast_chain
from mopo_jax.data.collect import PROGRESS_EVERY, collect_steps, step_episodes
from mopo_jax.envs.make import make_env

log = logging.getLogger("mopo_jax.data")
PARALLEL_MIN_STEPS = 50_000  # below this a build is stepped serially unless workers are asked for
JOB_STEPS = 10_000  # env steps per replay job (whole episodes, so a few more)
WORKER_NICE = 5  # replay workers yield to the serial chain, the critical path


class ReplayMismatch(RuntimeError):
    """A replayed block of episodes did not end where the serial chain said."""


def default_workers(num_steps: int) -> int:
    """Processes for a build of `num_steps` steps: the CPUs this process may use, or 1 (serial)
    for builds under PARALLEL_MIN_STEPS, where starting workers costs more than it saves."""
    return len(os.sched_getaffinity(0)) if num_steps >= PARALLEL_MIN_STEPS else 1


def sample_actions(space, n: int) -> np.ndarray:
    """The next `n` draws of `space.sample()` [n, a] in one call: for a 1-D float Box bounded on
    both sides, Box.sample draws `np_random.uniform(low, high)` (one 64-bit draw per entry, in
    order) and casts to the space's dtype, which a single [n, a] uniform call repeats exactly;
    other spaces are sampled draw by draw."""
    if (len(space.shape) == 1 and space.dtype.kind == "f" and np.all(space.bounded_below)
            and np.all(space.bounded_above)):
        draws = space.np_random.uniform(low=space.low, high=space.high, size=(n, *space.shape))
        return draws.astype(space.dtype)
    return np.stack([space.sample() for _ in range(n)])


def _termination_rule(u) -> Callable[[], bool]:
    """What `u.step` computes as `terminated` after its `do_simulation`, for the Gymnasium MuJoCo
    envs: `(not self.is_healthy) and self._terminate_when_unhealthy` (never for HalfCheetah)."""
    if getattr(u, "_terminate_when_unhealthy", False) and hasattr(u, "is_healthy"):
        return lambda: not u.is_healthy
    return lambda: False


def chain_lengths(env, num_steps: int, first_seed: int, actions: np.ndarray,
                  choose: Callable | None = None) -> Iterator[int]:
    """Pass 1: yield the length of episode 0, 1, ... of the serial build, stepping `env`'s MuJoCo
    model (`env.unwrapped`, a MujocoEnv) with `actions` [num_steps, a]; with `choose`, fill
    `actions[t] = choose(obs)` first from the env's own `_get_obs()`. Pre-drawn actions (no
    `choose`) of an env with a `fast_chain.vector_rule` are rolled out in C (`fast_chain.Roller`)
    where that pays, or not at all if it never terminates; other builds, and an episode whose
    rollout raised a MuJoCo warning, are stepped one env step at a time (`_step_episode`)."""
    u = env.unwrapped
    limit = env.get_wrapper_attr("_max_episode_steps") if _has_time_limit(env) else None
    rule = fast_chain.vector_rule(u) if choose is None else None
    if rule is fast_chain.never:
        yield from fast_chain.fixed_lengths(num_steps, limit)
        return
    roller = fast_chain.Roller(u) if rule and fast_chain.rollout_pays(u) else None
    terminated = _termination_rule(u)
    t, seed = 0, first_seed
    while t < num_steps:
        obs, _ = u.reset(seed=seed)
        stop = min(limit or num_steps, num_steps - t)
        k = roller.episode_length(u.data, actions[t:t + stop], rule) if roller else None
        if k is None:  # the roller has its own MjData: u.data is still at the reset state
            k = _step_episode(u, obs, actions[t:t + stop], choose, terminated)
        yield k
        t, seed = t + k, seed + 1


def _step_episode(u, obs: np.ndarray, actions: np.ndarray, choose: Callable | None,
                  terminated: Callable[[], bool]) -> int:
    """One episode of the chain, one env step at a time from the env `u` just reset (its
    observation `obs` [o]), with `actions` [stop, a] (filled by `choose(obs)` if given): the
    calls `u.step` makes, `do_simulation` then the termination rule. Returns its length."""
    k, stop = 0, len(actions)
    while k < stop:
        if choose is not None:
            actions[k] = choose(obs)
        u.do_simulation(actions[k], u.frame_skip)
        k += 1
        if terminated():
            break
        if choose is not None:
            obs = u._get_obs()
    return k


def _has_time_limit(env) -> bool:
    try:
        return env.get_wrapper_attr("_max_episode_steps") is not None
    except AttributeError:
        return False


_WORKER_ENVS: dict = {}


def _worker_init() -> None:
    os.nice(WORKER_NICE)


def replay_block(env_id: str, first_seed: int, lengths: list[int], actions: np.ndarray,
                 final: bool) -> dict:
    """Pass 2, in a worker: the serial loop (`collect.step_episodes`) over episodes seeded
    first_seed, first_seed + 1, ... with `actions` [sum(lengths), a]; raises ReplayMismatch
    unless the episodes have exactly `lengths` and (unless `final`, the block cut at the build's
    end) the last one ends by itself. Returns the dict of `collect.collect_steps`."""
    if env_id not in _WORKER_ENVS:
        _WORKER_ENVS[env_id] = make_env(env_id)
    rows = iter(actions)
    steps, ended = step_episodes(_WORKER_ENVS[env_id], len(actions), lambda obs: next(rows),
                                 first_seed, progress=False)
    if steps["episode_lengths"].tolist() != list(lengths) or not (ended or final):
        raise ReplayMismatch(f"episodes from seed {first_seed}: lengths "
                             f"{steps['episode_lengths'].tolist()[:8]}..., expected "
                             f"{list(lengths)[:8]}... (last ended by itself: {ended})")
    return steps


def join_blocks(blocks: list[dict]) -> dict:
    """Consecutive blocks of episodes (dicts of `collect_steps`) as one such dict."""
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def collect_exact(env_id: str, num_steps: int, first_seed: int, num_workers: int, *,
                  action_seed: int | None = None, make_choose: Callable | None = None) -> dict:
    """The dict of `collect.collect_steps` for `num_steps` steps of `env_id`, episode i reset
    with seed first_seed + i, equal array for array to the serial build, stepped by `num_workers`
    replay processes (spawned: no fork of a process that may hold JAX). Actions: the action space
    seeded with `action_seed` sampled once per step, or `choose(obs [o]) -> action [a]` from
    `make_choose()` (a fresh policy with its noise stream at the start; called in this process, in
    the serial order). Falls back to the serial loop for an env that is not a Gymnasium MujocoEnv,
    or when a replay does not match the chain (logged as a warning), with fresh actions."""
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    env = make_env(env_id)
    if not isinstance(env.unwrapped, MujocoEnv):
        log.info("%s is not a MuJoCo env: stepping it serially", env_id)
        return _serial(env, num_steps, first_seed, action_seed, make_choose)
    choose = make_choose() if make_choose is not None else None
    if choose is None:
        env.action_space.seed(action_seed)
        actions = sample_actions(env.action_space, num_steps)
    else:
        actions = np.empty((num_steps, env.action_space.shape[0]), np.float32)
    job_steps = max(1, min(JOB_STEPS, math.ceil(num_steps / (4 * num_workers))))
    try:
        return _run_passes(env, env_id, num_steps, first_seed, actions, choose, num_workers,
                           job_steps)
    except ReplayMismatch as err:
        log.warning("parallel replay of %s did not match its chain (%s): stepping serially",
                    env_id, err)
        return _serial(make_env(env_id), num_steps, first_seed, action_seed, make_choose)


def _serial(env, num_steps: int, first_seed: int, action_seed: int | None,
            make_choose: Callable | None) -> dict:
    """The serial build (`collect.collect_steps`), its action stream started afresh."""
    if make_choose is not None:
        return collect_steps(env, num_steps, make_choose(), first_seed)
    env.action_space.seed(action_seed)
    return collect_steps(env, num_steps, lambda obs: env.action_space.sample(), first_seed)


def _run_passes(env, env_id, num_steps, first_seed, actions, choose, num_workers,
                job_steps) -> dict:
    """Run the chain here, submitting each `job_steps` worth of whole episodes to the pool."""
    start = time.perf_counter()
    log.info("collecting %d steps of %s: serial chain here, replay in %d worker processes",
             num_steps, env_id, num_workers)
    futures, block, t0, seed0, t, next_log = [], [], 0, first_seed, 0, PROGRESS_EVERY
    ctx = get_context("spawn")
    with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_worker_init) as pool:
        for length in chain_lengths(env, num_steps, first_seed, actions, choose):
            block.append(length)
            t += length
            if t - t0 >= job_steps or t == num_steps:
                futures.append(pool.submit(replay_block, env_id, seed0, block, actions[t0:t],
                                           t == num_steps))
                seed0, t0, block = seed0 + len(block), t, []
            if t >= next_log:
                _log_chain(t, num_steps, start, futures, job_steps)
                next_log += PROGRESS_EVERY
        chained = time.perf_counter() - start
        blocks = [f.result() for f in futures]
    env.close()
    steps = join_blocks(blocks)
    log.info("collected %d steps in %d episodes in %.1f s (chain %.1f s, %.0f steps/s)",
             num_steps, len(steps["episode_lengths"]), time.perf_counter() - start, chained,
             num_steps / (time.perf_counter() - start))
    return steps


def _log_chain(t: int, total: int, start: float, futures: list, job_steps: int) -> None:
    seconds = time.perf_counter() - start
    done = sum(f.done() for f in futures)
    log.info("chain %d/%d env steps (%.0f steps/s); replayed ~%d steps (%d/%d jobs)", t, total,
             t / max(seconds, 1e-9), done * job_steps, done, len(futures))
