"""MOPO's out-of-distribution tasks halfcheetah-jump and ant-angle: rewards, relabelling, eval envs.

Data (Yu et al. 2020, "MOPO: Model-based Offline Policy Optimization", NeurIPS, arXiv 2005.13239,
§5.2 "Evaluation on tasks requiring out-of-distribution generalization"): "The trajectories of the
batch data in these datasets are from policies trained for the original dynamics and reward
functions HalfCheetah and Ant in OpenAI Gym which incentivize the cheetah and ant to move forward
as fast as possible. Note that for HalfCheetah, we set the maximum velocity to be 3. Concretely, we
train SAC for 1M steps and use the entire training replay buffer as the trajectories for the batch
data. Then, we assign these trajectories with new rewards that incentivize the cheetah to jump and
the ant to run towards the top right corner with a 30 degree angle." So each dataset is the whole
1M-transition replay buffer of one online SAC run on the source task, relabelled.

Rewards. The paper puts the exact forms in its Appendix G (not read here); the definitions below
follow the environment code of MOPO co-author G. Thomas, github.com/gwthomas/force,
env/mujoco/half_cheetah_vel_jump.py (HalfCheetahVelJumpEnv, goal_vel=3) and
env/mujoco/ant_angle.py (AntAngleEnv, goal=30°); the same Ant env, logging `reward_angle`, is in
tianheyu927/mopo mopo/env/ant.py. Original (gym + mujoco-py, frame_skip 5, dt = 0.05 s):
  halfcheetah-jump  r = min(v_x, 3) − 0.1·‖a‖² + 15·(z_torso' − z_init), no clipping of the jump
                    term; v_x = (x' − x)/dt; z_init = torso height right after reset (0.7 m plus
                    U(−0.1, 0.1) noise). Behaviour policy: SAC on min(v_x, 3) − 0.1·‖a‖².
  ant-angle         r = (v_x, v_y)·(cos 30°, sin 30°) − 0.5·‖a‖² − 5e-4·Σ clip(cfrc_ext, −1, 1)²
                    + 1 (bonus on every step); (v_x, v_y) = Δ(torso xy)/dt; done iff not (finite
                    and 0.2 ≤ z ≤ 1.0). Behaviour policy: SAC on the forward reward (v_x in place
                    of the projection). Under MuJoCo ≥ 2.0 with mujoco-py, cfrc_ext read as zeros
                    (openai/gym issue #1541), so the contact term was likely 0 in the paper's runs.

Ours, on Gymnasium v5 (HalfCheetah-v5 obs = qpos[1:] (8) ‖ qvel (9) = 17 dims; Ant-v5 obs =
qpos[2:] (13) ‖ qvel (14) ‖ clip(cfrc_ext[1:], −1, 1) (78) = 105 dims by default, 27 without
contact forces). x, y positions are not observed, so each reward is a function of (s, a, s'):
  halfcheetah-jump  r = min(v̄_x, 3) − 0.1·‖a‖² + 15·s'[0]
                    v̄_x = (s[8] + s'[8])/2, the mean of the rootx velocity at both ends of the
                    step. s'[0] is the rootz displacement = torso height − 0.7 m: z_init is the
                    nominal initial height 0.7 m, not the per-episode post-reset height. The reset
                    noise has mean 0, so every policy's expected return is unchanged; episode
                    returns lose a random offset of up to ±1.5 per step (±1500 per episode).
  ant-angle         r = cos30°·v̄_x + sin30°·v̄_y − 0.5·‖a‖² − 5e-4·Σ s'[27:105]² + 1·healthy(s')
                    v̄ = (s[13:15] + s'[13:15])/2 (free-joint linear velocity, world frame). The
                    contact term exists only for 105-dim observations (it is then exactly the v5
                    contact cost; the world-body row of cfrc_ext is zero). healthy(s') = finite and
                    0.2 ≤ s'[0] ≤ 1.0: no bonus on the terminating step, the v5 convention (the
                    original paid it there too).
Velocity: the original finite difference (x' − x)/dt is the mean of the 5 sub-step velocities;
the observations hold only the first and the last, and their mean approximates it (measured on
HalfCheetah-v5/Ant-v5 with random and bang-bang actions: RMS error 0.27 and 0.10 m/s, against 0.39
and 0.27 m/s for the end velocity alone).

`make_eval_env` computes the same quantities from the simulator (named joints' qpos/qvel before and
after the step, data.cfrc_ext, the action), independently of the observation indices used by the
jnp functions; observations, terminations and truncations are the source env's.

Paper results (Table 2: raw undiscounted returns, not normalised; MOPO mean ± std over 6 seeds,
others over 3):
  halfcheetah-jump: batch mean −1022.6, batch max 1808.6, MOPO 4016.6 ± 144, MBPO 2971.4 ± 1262,
                    SAC −3588.2 ± 1436, BEAR 16.8 ± 60, BRAC-p 1069.9 ± 232, BRAC-v 871 ± 41.
  ant-angle:        batch mean 866.7, batch max 2311.9, MOPO 2530.9 ± 137.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax.envs.termination import ant_done
from mopo_jax.types import Transitions

RewardFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# halfcheetah-jump constants (gwthomas/force env/mujoco/half_cheetah_vel_jump.py).
CHEETAH_MAX_VEL = 3.0
CHEETAH_CTRL_COST = 0.1
CHEETAH_JUMP_WEIGHT = 15.0
CHEETAH_OBS_DIM, CHEETAH_ACT_DIM = 17, 6
_CHEETAH_Z, _CHEETAH_VX = 0, 8  # obs index of rootz (qpos[1]) and rootx velocity (qvel[0])

# ant-angle constants (gwthomas/force env/mujoco/ant_angle.py; weights equal Ant-v5's defaults).
ANT_GOAL_ANGLE = math.pi / 6  # 30 degrees from the x-axis, towards +y
ANT_CTRL_COST = 0.5
ANT_CONTACT_COST = 5e-4
ANT_HEALTHY_REWARD = 1.0
ANT_ACT_DIM = 8
ANT_OBS_DIMS = (27, 105)  # without / with clipped cfrc_ext[1:] (Ant-v5 default: 105)
_ANT_VXY = slice(13, 15)  # obs index of the free joint's linear x, y velocity (qvel[0:2])
_ANT_CFRC = slice(27, 105)


def _check_dims(name: str, obs, act, next_obs, obs_dims: tuple[int, ...], act_dim: int) -> None:
    """Static shape check (works under jit: shapes are static)."""
    dim = obs.shape[-1]
    if dim not in obs_dims or next_obs.shape[-1] != dim or act.shape[-1] != act_dim:
        raise ValueError(
            f"{name} expects obs/next_obs [..., {' or '.join(map(str, obs_dims))}] and act "
            f"[..., {act_dim}]; got obs {obs.shape}, act {act.shape}, next_obs {next_obs.shape}.")


def halfcheetah_jump_reward(obs: jax.Array, act: jax.Array, next_obs: jax.Array) -> jax.Array:
    """halfcheetah-jump reward min(v̄_x, 3) − 0.1·‖a‖² + 15·(torso height' − 0.7 m).

    v̄_x = (obs[..., 8] + next_obs[..., 8]) / 2 (rootx velocity at both ends of the step);
    next_obs[..., 0] is the rootz displacement, i.e. the torso height above its nominal initial
    0.7 m. See the module docstring for the original and why these choices.

    Args: obs [B, 17], act [B, 6], next_obs [B, 17] (HalfCheetah-v5 layout; any leading dims).
    Returns: [B] rewards.
    """
    _check_dims("halfcheetah_jump_reward", obs, act, next_obs, (CHEETAH_OBS_DIM,), CHEETAH_ACT_DIM)
    v_x = 0.5 * (obs[..., _CHEETAH_VX] + next_obs[..., _CHEETAH_VX])
    run = jnp.minimum(v_x, CHEETAH_MAX_VEL)
    ctrl = CHEETAH_CTRL_COST * jnp.sum(jnp.square(act), axis=-1)
    jump = CHEETAH_JUMP_WEIGHT * next_obs[..., _CHEETAH_Z]
    return run - ctrl + jump


def ant_angle_reward(obs: jax.Array, act: jax.Array, next_obs: jax.Array) -> jax.Array:
    """ant-angle reward v̄·(cos 30°, sin 30°) − 0.5·‖a‖² − 5e-4·Σ cfrc'² + 1·healthy(next_obs).

    v̄ = (obs[..., 13:15] + next_obs[..., 13:15]) / 2 (torso x, y velocity at both ends of the
    step); the contact term uses next_obs[..., 27:105] (clipped cfrc_ext) when the observation has
    them (105 dims) and is absent for 27-dim observations; healthy = not `ant_done`.

    Args: obs [B, 105 or 27], act [B, 8], next_obs like obs (Ant-v5 layout; any leading dims).
    Returns: [B] rewards.
    """
    _check_dims("ant_angle_reward", obs, act, next_obs, ANT_OBS_DIMS, ANT_ACT_DIM)
    v_xy = 0.5 * (obs[..., _ANT_VXY] + next_obs[..., _ANT_VXY])
    direction = jnp.asarray([math.cos(ANT_GOAL_ANGLE), math.sin(ANT_GOAL_ANGLE)], v_xy.dtype)
    angle = jnp.sum(v_xy * direction, axis=-1)
    ctrl = ANT_CTRL_COST * jnp.sum(jnp.square(act), axis=-1)
    contact = 0.0
    if next_obs.shape[-1] == ANT_OBS_DIMS[1]:
        contact = ANT_CONTACT_COST * jnp.sum(jnp.square(next_obs[..., _ANT_CFRC]), axis=-1)
    healthy = ANT_HEALTHY_REWARD * (~ant_done(obs, act, next_obs)).astype(angle.dtype)
    return angle - ctrl - contact + healthy


@dataclasses.dataclass(frozen=True)
class OODTask:
    """One MOPO out-of-distribution task: a target reward on data from a source task.

    Fields:
      name: "halfcheetah-jump" or "ant-angle".
      source_env: the env family of the data and dynamics ("halfcheetah" / "ant").
      env_id: the Gymnasium id of the source env (its dynamics, termination and time limit).
      reward_fn: target reward (obs [B, D], act [B, A], next_obs [B, D]) -> [B], pure jnp.
      termination: name of the `mopo_jax.envs.termination` rule (same as the source env's).
      constants: the goal constants, as (name, value) pairs.
      behavior: what the behaviour (data) policy was trained on, per the paper.
      description: the target reward in words/maths.
      reference: where the definition comes from.
      paper_results: raw returns reported in MOPO Table 2, as (method, value) pairs.
    """

    name: str
    source_env: str
    env_id: str
    reward_fn: RewardFn
    termination: str
    constants: tuple[tuple[str, float], ...]
    behavior: str
    description: str
    reference: str
    paper_results: tuple[tuple[str, float], ...]


_PAPER = "Yu et al. 2020, MOPO, arXiv 2005.13239, §5.2, Table 2 and Appendix G"
_DATA = ("entire replay buffer of a 1M-step SAC run on the source task "
         f"({_PAPER.split(',')[0]}, §5.2)")

OOD_TASKS: dict[str, OODTask] = {
    "halfcheetah-jump": OODTask(
        name="halfcheetah-jump",
        source_env="halfcheetah",
        env_id="HalfCheetah-v5",
        reward_fn=halfcheetah_jump_reward,
        termination="halfcheetah",
        constants=(("max_velocity", CHEETAH_MAX_VEL), ("ctrl_cost_weight", CHEETAH_CTRL_COST),
                   ("jump_weight", CHEETAH_JUMP_WEIGHT), ("z_init_above_nominal", 0.0)),
        behavior="SAC trained on min(v_x, 3) - 0.1*|a|^2 (HalfCheetah capped at velocity 3); "
                 + _DATA,
        description="min(mean rootx velocity, 3) - 0.1*|a|^2 + 15*(torso height' - 0.7 m)",
        reference=f"{_PAPER}; github.com/gwthomas/force env/mujoco/half_cheetah_vel_jump.py",
        paper_results=(("batch_mean", -1022.6), ("batch_max", 1808.6), ("MOPO", 4016.6),
                       ("MBPO", 2971.4), ("SAC", -3588.2), ("BEAR", 16.8), ("BRAC-p", 1069.9),
                       ("BRAC-v", 871.0)),
    ),
    "ant-angle": OODTask(
        name="ant-angle",
        source_env="ant",
        env_id="Ant-v5",
        reward_fn=ant_angle_reward,
        termination="ant",
        constants=(("goal_angle_rad", ANT_GOAL_ANGLE), ("ctrl_cost_weight", ANT_CTRL_COST),
                   ("contact_cost_weight", ANT_CONTACT_COST),
                   ("healthy_reward", ANT_HEALTHY_REWARD)),
        behavior="SAC trained on the standard Ant forward reward (v_x - ctrl - contact + 1); "
                 + _DATA,
        description="mean torso velocity . (cos 30deg, sin 30deg) - 0.5*|a|^2 "
                    "- 5e-4*sum(clip(cfrc_ext)^2) + 1*healthy",
        reference=f"{_PAPER}; github.com/gwthomas/force env/mujoco/ant_angle.py; "
                  "tianheyu927/mopo mopo/env/ant.py (reward_angle)",
        paper_results=(("batch_mean", 866.7), ("batch_max", 2311.9), ("MOPO", 2530.9)),
    ),
}


def get_task(task_name: str) -> OODTask:
    """The OODTask called `task_name` (case-insensitive); ValueError naming the valid ones."""
    key = str(task_name).strip().lower()
    if key not in OOD_TASKS:
        raise ValueError(
            f"Unknown out-of-distribution task {task_name!r}; valid tasks: {', '.join(OOD_TASKS)}.")
    return OOD_TASKS[key]


@functools.cache
def _jitted_reward(name: str) -> RewardFn:
    return jax.jit(OOD_TASKS[name].reward_fn)


def relabel(transitions: Transitions, task_name: str) -> Transitions:
    """Replace the rewards of `transitions` with the target reward of `task_name`.

    Args:
      transitions: a `Transitions` (observations [N, D], actions [N, A], next_observations [N, D],
        rewards [N], terminations [N]); any pytree with those fields and `_replace` or `replace`
        (e.g. `mopo_jax.data.Dataset`) works too.
      task_name: "halfcheetah-jump" or "ant-angle".
    Returns: the same type with rewards [N] recomputed (same dtype; numpy in, numpy out), every
      other field unchanged (the same objects).
    """
    task = get_task(task_name)
    rewards = _jitted_reward(task.name)(jnp.asarray(transitions.observations),
                                        jnp.asarray(transitions.actions),
                                        jnp.asarray(transitions.next_observations))
    old = transitions.rewards
    if isinstance(old, np.ndarray):
        rewards = np.asarray(rewards, dtype=old.dtype)
    else:
        rewards = rewards.astype(jnp.asarray(old).dtype)
    if hasattr(transitions, "_replace"):
        return transitions._replace(rewards=rewards)
    return transitions.replace(rewards=rewards)


class TargetRewardWrapper(gym.Wrapper):
    """A source env (HalfCheetah-v5 / Ant-v5) whose reward is an OOD task's target reward.

    The reward is computed from the simulator (named joints' qpos/qvel before and after the step,
    data.cfrc_ext, the action), not from observations, so it checks the index mapping of the jnp
    reward functions. Observations, terminations, truncations are the source env's; info keeps the
    source reward as "source_reward" and adds the target reward's terms ("target_*").
    """

    def __init__(self, env: gym.Env, task_name: str):
        super().__init__(env)
        self.task = get_task(task_name)
        base = env.unwrapped
        structure = getattr(base, "observation_structure", None)
        if self.task.source_env == "halfcheetah":
            expected = {"skipped_qpos": 1, "qpos": 8, "qvel": 9}
        else:
            expected = {"skipped_qpos": 2, "qpos": 13, "qvel": 14}
        if structure is None or any(structure.get(k) != v for k, v in expected.items()):
            raise ValueError(
                f"{self.task.name} needs the default {self.task.env_id} observation layout "
                f"{expected}; this env has {structure}.")
        model = base.model
        if self.task.source_env == "halfcheetah":
            self._x_dof = int(model.joint("rootx").dofadr[0])
            self._z_qpos = int(model.joint("rootz").qposadr[0])
        else:
            self._root_qpos = int(model.joint("root").qposadr[0])
            self._root_dof = int(model.joint("root").dofadr[0])
            self._with_contact = structure.get("cfrc_ext", 0) > 0
            self._healthy_z = (0.2, 1.0)

    def step(self, action):
        """Step the source env; reward = target reward from the simulator state. Same 5-tuple."""
        data = self.env.unwrapped.data
        qvel_before = np.array(data.qvel, dtype=np.float64)
        obs, source_reward, terminated, truncated, info = self.env.step(action)
        action = np.asarray(action, dtype=np.float64)
        if self.task.source_env == "halfcheetah":
            terms = self._cheetah_terms(qvel_before, data, action)
        else:
            terms = self._ant_terms(qvel_before, data, action)
        reward = float(sum(terms.values()))
        info = dict(info, source_reward=source_reward, **terms)
        return obs, reward, terminated, truncated, info

    def _cheetah_terms(self, qvel_before, data, action) -> dict[str, float]:
        v_x = 0.5 * (qvel_before[self._x_dof] + data.qvel[self._x_dof])
        # The torso frame sits at (rootx, 0, 0.7 m + rootz): its height above the nominal
        # initial 0.7 m is the rootz slide displacement.
        rise = float(data.qpos[self._z_qpos])
        return {
            "target_run": float(min(v_x, CHEETAH_MAX_VEL)),
            "target_ctrl": -CHEETAH_CTRL_COST * float(np.sum(action ** 2)),
            "target_jump": CHEETAH_JUMP_WEIGHT * rise,
        }

    def _ant_terms(self, qvel_before, data, action) -> dict[str, float]:
        d = self._root_dof
        v_xy = 0.5 * (qvel_before[d:d + 2] + data.qvel[d:d + 2])
        goal = np.array([math.cos(ANT_GOAL_ANGLE), math.sin(ANT_GOAL_ANGLE)])
        contact = 0.0
        if self._with_contact:
            contact = ANT_CONTACT_COST * float(np.sum(np.clip(data.cfrc_ext, -1.0, 1.0) ** 2))
        z = data.qpos[self._root_qpos + 2]
        finite = np.isfinite(data.qpos).all() and np.isfinite(data.qvel).all()
        healthy = bool(finite and self._healthy_z[0] <= z <= self._healthy_z[1])
        return {
            "target_angle": float(v_xy @ goal),
            "target_ctrl": -ANT_CTRL_COST * float(np.sum(action ** 2)),
            "target_contact": -contact,
            "target_survive": ANT_HEALTHY_REWARD * healthy,
        }


def make_eval_env(task_name: str, **kwargs: Any) -> gym.Env:
    """`gym.make(source env_id, **kwargs)` wrapped in `TargetRewardWrapper` for `task_name`.

    kwargs go to gym.make (e.g. render_mode, include_cfrc_ext_in_observation=False for 27-dim Ant
    observations); they must keep the default position-excluding observation layout.
    """
    task = get_task(task_name)
    return TargetRewardWrapper(gym.make(task.env_id, **kwargs), task.name)


class CappedVelocityRewardWrapper(gym.Wrapper):
    """HalfCheetah-v5 with MOPO's behaviour reward for the halfcheetah-jump data:
    r = min(v_x, max_velocity) − 0.1·‖a‖² (v_x = the env's own finite-difference `x_velocity`).

    The env's reward is kept in info["source_reward"]; everything else is unchanged.
    """

    def __init__(self, env: gym.Env, max_velocity: float = 3.0):
        super().__init__(env)
        if "HalfCheetah" not in str(env.spec.id if env.spec else env.unwrapped):
            raise ValueError(f"the capped-velocity reward is defined for HalfCheetah, not {env.spec}")
        self.max_velocity = max_velocity

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, source_reward=reward)
        capped = min(float(info["x_velocity"]), self.max_velocity) + float(info["reward_ctrl"])
        return obs, capped, terminated, truncated, info
