"""Real envs for MOPO's out-of-distribution tasks: the target-reward evaluation env and the
capped-velocity training env of the halfcheetah-jump behaviour policy."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from mopo_jax.envs.extras import RecordStepExtras
from mopo_jax.envs.make import make_env
from mopo_jax.envs.ood import (ANT_CONTACT_COST, ANT_CTRL_COST, ANT_GOAL_ANGLE, ANT_HEALTHY_REWARD,
                               CHEETAH_CTRL_COST, CHEETAH_JUMP_WEIGHT, CHEETAH_MAX_VEL, get_task)

_LAYOUTS = {"halfcheetah": {"skipped_qpos": 1, "qpos": 8, "qvel": 9},
            "ant": {"skipped_qpos": 2, "qpos": 13, "qvel": 14}}
_ANT_HEALTHY_Z = (0.2, 1.0)


class TargetRewardWrapper(gym.Wrapper):
    """A source env (HalfCheetah-v5 / Ant-v5) whose reward is an OOD task's target reward.

    The reward is computed from the simulator with the original's definitions (mopo_jax.envs.ood):
    named joints' qpos before and after the step, the rootz right after the last reset, the action,
    data.cfrc_ext; never from observations or from `RecordStepExtras`, so it checks both the jnp
    reward functions' index mapping and the recorded extras. Observations, terminations and
    truncations are the source env's; info keeps the source reward as "source_reward" and adds the
    target reward's terms ("target_*").
    """

    def __init__(self, env: gym.Env, task_name: str):
        super().__init__(env)
        self.task = get_task(task_name)
        base = env.unwrapped
        structure = getattr(base, "observation_structure", None)
        expected = _LAYOUTS[self.task.source_env]
        if structure is None or any(structure.get(k) != v for k, v in expected.items()):
            raise ValueError(
                f"{self.task.name} needs the default {self.task.env_id} observation layout "
                f"{expected}; this env has {structure}.")
        model = base.model
        self._dt = float(base.dt)
        if self.task.source_env == "halfcheetah":
            self._x_qpos = int(model.joint("rootx").qposadr[0])
            self._z_qpos = int(model.joint("rootz").qposadr[0])
        else:
            self._root_qpos = int(model.joint("root").qposadr[0])  # free joint: x, y, z, quaternion
        self._reset_z = float("nan")

    def reset(self, **kwargs):
        """Reset the source env; remembers the torso's reset height for the jump term."""
        obs, info = self.env.reset(**kwargs)
        if self.task.source_env == "halfcheetah":
            self._reset_z = float(self.env.unwrapped.data.qpos[self._z_qpos])
        return obs, info

    def step(self, action):
        """Step the source env; reward = target reward from the simulator state. Same 5-tuple."""
        data = self.env.unwrapped.data
        qpos_before = np.array(data.qpos, dtype=np.float64)
        obs, source_reward, terminated, truncated, info = self.env.step(action)
        action = np.asarray(action, dtype=np.float64)
        if self.task.source_env == "halfcheetah":
            terms = self._cheetah_terms(qpos_before, data, action)
        else:
            terms = self._ant_terms(qpos_before, data, action)
        reward = float(sum(terms.values()))
        info = dict(info, source_reward=source_reward, **terms)
        return obs, reward, terminated, truncated, info

    def _cheetah_terms(self, qpos_before, data, action) -> dict[str, float]:
        v_x = (float(data.qpos[self._x_qpos]) - qpos_before[self._x_qpos]) / self._dt
        # The torso frame sits at (rootx, 0, 0.7 m + rootz): its rise above its height at the
        # reset is the change of the rootz slide since then.
        rise = float(data.qpos[self._z_qpos]) - self._reset_z
        return {
            "target_run": min(v_x, CHEETAH_MAX_VEL),
            "target_ctrl": -CHEETAH_CTRL_COST * float(np.sum(action ** 2)),
            "target_jump": CHEETAH_JUMP_WEIGHT * rise,
        }

    def _ant_terms(self, qpos_before, data, action) -> dict[str, float]:
        q = self._root_qpos
        v_xy = (np.array(data.qpos[q:q + 2]) - qpos_before[q:q + 2]) / self._dt
        goal = np.array([math.cos(ANT_GOAL_ANGLE), math.sin(ANT_GOAL_ANGLE)])
        contact = ANT_CONTACT_COST * float(np.sum(np.clip(data.cfrc_ext, -1.0, 1.0) ** 2))
        z = data.qpos[q + 2]
        finite = np.isfinite(data.qpos).all() and np.isfinite(data.qvel).all()
        healthy = bool(finite and _ANT_HEALTHY_Z[0] <= z <= _ANT_HEALTHY_Z[1])
        return {
            "target_angle": float(v_xy @ goal),
            "target_ctrl": -ANT_CTRL_COST * float(np.sum(action ** 2)),
            "target_contact": -contact,
            "target_survive": ANT_HEALTHY_REWARD * healthy,
        }


def make_eval_env(task_name: str, **kwargs: Any) -> gym.Env:
    """The source env of `task_name` (`mopo_jax.envs.make.make_env(env_id, **kwargs)`: 27-dim Ant)
    recording its step extras (info["step_extras"], `RecordStepExtras`), reward = the target reward.

    kwargs go to gym.make (e.g. render_mode, max_episode_steps); they must keep the default
    position-excluding observation layout.
    """
    task = get_task(task_name)
    return TargetRewardWrapper(RecordStepExtras(make_env(task.env_id, **kwargs)), task.name)


class CappedVelocityRewardWrapper(gym.Wrapper):
    """HalfCheetah-v5 with MOPO's behaviour reward for the halfcheetah-jump data:
    r = min(v_x, max_velocity) − 0.1·‖a‖² (v_x = the env's own finite-difference `x_velocity`).

    The env's reward is kept in info["source_reward"]; everything else is unchanged.
    """

    def __init__(self, env: gym.Env, max_velocity: float = CHEETAH_MAX_VEL):
        super().__init__(env)
        if "HalfCheetah" not in str(env.spec.id if env.spec else env.unwrapped):
            raise ValueError(f"the capped-velocity reward is defined for HalfCheetah, not {env.spec}")
        self.max_velocity = max_velocity

    def step(self, action):
        """Step the env; reward = min(x_velocity, max_velocity) + the env's control reward."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, source_reward=reward)
        capped = min(float(info["x_velocity"]), self.max_velocity) + float(info["reward_ctrl"])
        return obs, capped, terminated, truncated, info
