"""Real-environment evaluation of a policy with deterministic actions."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import jax
import numpy as np

from mopo_jax.sac.policy import deterministic_action


_act = jax.jit(deterministic_action)


def evaluate_policy(actor_params, env_id: str | Callable[[], gym.Env], episodes: int = 10,
                    seed: int = 0) -> np.ndarray:
    """Run `episodes` episodes of `env_id` with tanh(μ(obs)); returns their returns [episodes].

    `env_id` is a Gymnasium id (made with gym.make) or a zero-argument factory returning an env,
    e.g. `lambda: mopo_jax.envs.ood.make_eval_env("ant-angle")`; the env is closed afterwards.
    Episode i is reset with seed `seed + i`. The env's own time limit (1000 steps) applies.
    """
    env = gym.make(env_id) if isinstance(env_id, str) else env_id()
    returns = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            action = np.asarray(_act(actor_params, obs[None].astype(np.float32))[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[i] += reward
            done = terminated or truncated
    env.close()
    return returns
