"""Real-environment evaluation with deterministic actions: one policy serially, or many policies at once."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax.envs.make import make_env as make_env_from_id
from mopo_jax.sac.policy import Params, deterministic_action

EnvSource = str | Callable[[], gym.Env]

_act = jax.jit(deterministic_action)


def _cpu() -> jax.Device:
    """The host CPU device (looked up at call time, so importing this module starts no backend)."""
    return jax.local_devices(backend="cpu")[0]  # this process's own


def _env_factory(make_env: EnvSource) -> Callable[[], gym.Env]:
    """A zero-argument env factory: for a Gymnasium id `mopo_jax.envs.make.make_env` (the
    project's per-family defaults, e.g. 27-dim Ant observations), else `make_env` itself."""
    if isinstance(make_env, str):
        return lambda: make_env_from_id(make_env)
    return make_env


def evaluate_policy(actor_params: Params, env_id: EnvSource, episodes: int = 10,
                    seed: int = 0) -> np.ndarray:
    """Run `episodes` episodes of `env_id` with tanh(μ(obs)); returns their returns [episodes] float64.

    The reference implementation: one env, one episode after the other, one jitted actor call
    per step on a single observation [1, obs_dim]. `env_id` is a Gymnasium id (made with
    `mopo_jax.envs.make.make_env`) or a zero-argument factory returning an env, e.g.
    `lambda: mopo_jax.envs.ood_env.make_eval_env("ant-angle")`; the env is closed afterwards.
    Episode i is reset with seed `seed + i`. The env's own time limit (1000 steps) applies.
    The actor runs on the CPU device (params copied there), as in `evaluate_policies`.
    """
    params = jax.device_put(actor_params, _cpu())
    env = _env_factory(env_id)()
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done = False
            while not done:
                action = np.asarray(_act(params, obs[None].astype(np.float32)))[0]  # index on the host
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[i] += reward
                done = terminated or truncated
    finally:
        env.close()
    return returns


def _row_action(actor_params: Params, obs: jax.Array, running: jax.Array) -> jax.Array:
    """One policy's action for one observation: obs [o], running [] bool -> [a] (zeros if not running).

    Computed as the one-row call deterministic_action(params, obs[None]), the serial path's call.
    """
    def act():
        return deterministic_action(actor_params, obs[None])[0]

    out = jax.eval_shape(act)
    return jax.lax.cond(running, act, lambda: jnp.zeros(out.shape, out.dtype))


def batched_actions(actor_params: Params, obs: jax.Array, running: jax.Array) -> jax.Array:
    """Deterministic actions of P policies for E observations each, rows that are not running skipped.

    actor_params: leaves [P, ...]; obs [P, E, o] float32; running [P, E] bool -> actions [P, E, a]
    (zeros where not running). Every row is bit-identical to the one-row call
    `deterministic_action(params_p, obs[p, e][None])[0]`: the rows go through nested lax.map
    loops (policies, then observations), each iteration one single-row network evaluation,
    rather than one matmul over all rows, because XLA's CPU matmul rounds a row differently
    depending on how many rows it multiplies at once, and a last-bit change of an action makes
    a MuJoCo trajectory drift. The cond also skips the work of finished rows.
    """
    def one_policy(args):
        params, obs_p, running_p = args
        return jax.lax.map(lambda row: _row_action(params, *row), (obs_p, running_p))

    return jax.lax.map(one_policy, (actor_params, obs, running))


_batched_act = jax.jit(batched_actions)


def check_episode_seeds(episode_seeds, actor_params: Params) -> np.ndarray:
    """episode_seeds as an int64 array [P, E], P checked against the params' leading axis
    (ValueError naming the shapes otherwise)."""
    seeds = np.asarray(episode_seeds)
    if seeds.ndim != 2 or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"episode_seeds must be an integer array [P, E], got {seeds.dtype} "
                         f"{seeds.shape}")
    leading = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(actor_params)}
    if leading != {seeds.shape[0]}:
        raise ValueError(f"actor_params leaves must have a leading policy axis of size "
                         f"{seeds.shape[0]} (episode_seeds rows), got {sorted(leading, key=str)}")
    return seeds.astype(np.int64)


def _run_episodes(params: Params, envs: list[gym.Env], seeds: np.ndarray) -> np.ndarray:
    """Step envs[p·E + e] from reset(seed=seeds[p, e]) to its end; returns [P, E] float64."""
    num_policies, num_episodes = seeds.shape
    first = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds.ravel())]
    obs = np.stack(first).astype(np.float32).reshape(num_policies, num_episodes, -1)
    running = np.ones(seeds.shape, bool)
    returns = np.zeros(seeds.shape)
    while running.any():
        actions = np.asarray(_batched_act(params, obs, running))  # blocks before obs/running change
        for p, e in zip(*np.nonzero(running)):
            next_obs, reward, terminated, truncated, _ = envs[p * num_episodes + e].step(actions[p, e])
            returns[p, e] += reward
            obs[p, e] = next_obs
            running[p, e] = not (terminated or truncated)
    return returns


def evaluate_policies(actor_params: Params, make_env: EnvSource, episode_seeds) -> np.ndarray:
    """Evaluate P policies on E episodes each, all P·E episodes stepped together; returns [P, E] float64.

    actor_params: a pytree whose leaves have a leading policy axis P, e.g. the
    `state.sac.actor_params` of a vmapped training state. make_env: a Gymnasium id (made with
    `mopo_jax.envs.make.make_env`) or a zero-argument env factory; one env is made per episode
    and all are closed afterwards.
    episode_seeds: int [P, E], the reset seed of each (policy, episode). The env's own time
    limit applies. Actions are tanh(μ(obs)), from ONE jitted `batched_actions` call per step for
    all episodes; finished episodes stay in the batch as masked padding, so its input shapes are
    fixed and it compiles once per (P, E, network shape).

    Row p equals `evaluate_policy(params_p, make_env, E, seed)` exactly whenever
    episode_seeds[p] = seed + arange(E): same float32 observations, bit-identical actions (see
    `batched_actions`), rewards summed in the same order.

    The actor runs on the CPU device: the params are copied there first. On a GPU/TPU machine
    the evaluation thus does not queue behind, or wait for, work on the accelerator: once the
    params have been fetched, the training's next chunk can run there while the CPU evaluates.
    """
    seeds = check_episode_seeds(episode_seeds, actor_params)
    if seeds.size == 0:
        return np.zeros(seeds.shape)
    params = jax.device_put(actor_params, _cpu())
    factory = _env_factory(make_env)
    envs: list[gym.Env] = []
    try:
        for _ in range(seeds.size):
            envs.append(factory())
        return _run_episodes(params, envs, seeds)
    finally:
        for env in envs:
            env.close()
