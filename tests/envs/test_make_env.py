"""make_env: per-family default kwargs (27-dim Ant), and every env made from an id goes through it."""

import gymnasium as gym
import jax
import numpy as np

from mopo_jax.behavior.config import BehaviorConfig
from mopo_jax.behavior.train import make_behavior_env
from mopo_jax.data.collect import collect_random_steps
from mopo_jax.envs.catalog import env_family
from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.envs.make import default_kwargs, env_spec, make_env
from mopo_jax.envs.ood_env import make_eval_env
from mopo_jax.sac.networks import Actor


def test_ant_defaults_to_27_dims_and_callers_can_override():
    ant = make_env("Ant-v5")
    assert ant.observation_space.shape == (27,)
    assert ant.unwrapped.observation_structure["cfrc_ext"] == 0
    assert make_env("Ant-v5", include_cfrc_ext_in_observation=True).observation_space.shape == (105,)
    assert gym.make("Ant-v5").observation_space.shape == (105,)  # what the default would give
    assert make_env("HalfCheetah-v5").observation_space.shape == (17,)
    assert make_env("Ant-v5", max_episode_steps=7).spec.max_episode_steps == 7
    assert env_family("Ant-v5") == "ant" and default_kwargs("Hopper-v5") == {}
    defaults = default_kwargs("Ant-v5")
    defaults["include_cfrc_ext_in_observation"] = True  # a copy: the table is unchanged
    assert default_kwargs("Ant-v5") == {"include_cfrc_ext_in_observation": False}
    assert gym.make(env_spec("Ant-v5")).observation_space.shape == (27,)  # for Minari's writer
    assert gym.spec("Ant-v5").kwargs.get("include_cfrc_ext_in_observation", True)


def test_collection_behaviour_training_and_evaluation_see_27_dim_ant():
    steps = collect_random_steps("Ant-v5", 30)
    assert steps["observations"].shape[1] == 27
    assert make_behavior_env(BehaviorConfig(env_id="Ant-v5")).observation_space.shape == (27,)
    assert make_eval_env("ant-angle").observation_space.shape == (27,)
    actor = Actor(8, (8,))
    params = jax.jit(actor.init)(jax.random.key(0), np.zeros((1, 27), np.float32))["params"]
    returns = evaluate_policy(params, "Ant-v5", 1, seed=0)  # a 27-input actor runs on the id
    assert returns.shape == (1,) and np.isfinite(returns).all()
