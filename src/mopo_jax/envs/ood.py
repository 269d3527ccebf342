"""MOPO's out-of-distribution tasks halfcheetah-jump and ant-angle: target rewards and relabelling.

Data (Yu et al. 2020, "MOPO: Model-based Offline Policy Optimization", NeurIPS, arXiv 2005.13239,
§5.2 "Evaluation on tasks requiring out-of-distribution generalization"): "The trajectories of the
batch data in these datasets are from policies trained for the original dynamics and reward
functions HalfCheetah and Ant in OpenAI Gym which incentivize the cheetah and ant to move forward
as fast as possible. Note that for HalfCheetah, we set the maximum velocity to be 3. Concretely, we
train SAC for 1M steps and use the entire training replay buffer as the trajectories for the batch
data. Then, we assign these trajectories with new rewards that incentivize the cheetah to jump and
the ant to run towards the top right corner with a 30 degree angle." So each dataset is the whole
1M-transition replay buffer of one online SAC run on the source task, relabelled.

The original rewards (gym + mujoco-py, frame_skip 5, dt = 0.05 s), from the environment code of
MOPO co-author G. Thomas, github.com/gwthomas/force, env/mujoco/half_cheetah_vel_jump.py
(HalfCheetahVelJumpEnv, goal_vel=3) and env/mujoco/ant_angle.py (AntAngleEnv, goal=30°; the same
Ant, logging `reward_angle`, is tianheyu927/mopo mopo/env/ant.py, whose observation is
qpos[2:] ‖ qvel, 27 dims):
  halfcheetah-jump  r = min((x' − x)/dt, 3) − 0.1·‖a‖² + 15·(z_torso' − z_init); x = rootx qpos;
                    z_init = torso height right after the episode's reset (0.7 m plus U(−0.1, 0.1)
                    noise); the jump term is not clipped. Behaviour policy: SAC on
                    min(v_x, 3) − 0.1·‖a‖².
  ant-angle         r = ((x', y') − (x, y))/dt · (cos 30°, sin 30°) − 0.5·‖a‖²
                    − 5e-4·Σ clip(cfrc_ext, −1, 1)² + 1; done iff not (finite and 0.2 ≤ z ≤ 1.0).
                    Behaviour policy: SAC on the forward reward (v_x in place of the projection).

Ours, on Gymnasium v5 (HalfCheetah-v5 obs = qpos[1:] (8) ‖ qvel (9) = 17 dims; Ant-v5 made by
mopo_jax.envs.make.make_env: qpos[2:] (13) ‖ qvel (14) = 27 dims, as the original). Positions,
the reset height and contact forces are not in (s, a, s'), so every transition also carries the
simulator quantities of `mopo_jax.envs.extras.StepExtras`, recorded when the data was collected:
  halfcheetah-jump  r = min(Δx/dt, 3) − 0.1·‖a‖² + 15·(s'[0] − z_reset)
                    Δx = rootx qpos after − before (exactly HalfCheetah-v5's own x_velocity·dt);
                    s'[0] = rootz after the step and z_reset = rootz right after the episode's
                    reset, so s'[0] − z_reset is the torso's rise above its own reset height.
  ant-angle         r = (Δxy/dt)·(cos 30°, sin 30°) − 0.5·‖a‖² − 5e-4·C' + 1·healthy(s')
                    Δxy = root x, y qpos after − before; C' = Σ clip(cfrc_ext, −1, 1)² after the
                    step, recorded from the simulator (27-dim observations cannot show it);
                    healthy(s') = finite and 0.2 ≤ s'[0] ≤ 1.0: no bonus on the terminating step,
                    the v5 convention (the original paid it there too).
Kept differences: (1) positions and heights are read from qpos at the end of the step; the
original read the torso body's xpos, which MuJoCo computes before the last of the 5 sub-steps
(Gymnasium v5 changed its info["x_position"] to qpos for this reason). Per step this moves the
jump term by 15·(one sub-step's rise), RMS 0.12 under random actions, but the shift telescopes
over an episode: returns differ by roughly |3·(z_end − z_start)| + |v_end|/5, a few units.
(2) The contact term is real: under MuJoCo 2.0 with mujoco-py, cfrc_ext read as zeros (openai/gym
issue #1541), so the term was likely 0 in the paper's runs; with Gymnasium's MuJoCo bindings it
is computed (about 0.001 per step under random actions).

`mopo_jax.envs.ood_env.make_eval_env` computes the same rewards from the simulator directly (named
joints, data.cfrc_ext, the action), independently of these jnp functions and of the recorder.

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
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax.envs.catalog import ENVS, OOD_DATASETS
from mopo_jax.envs.extras import StepExtras
from mopo_jax.envs.termination import ant_done
from mopo_jax.types import Transitions

RewardFn = Callable[[jax.Array, jax.Array, jax.Array, StepExtras], jax.Array]

DT = 0.05  # seconds per env step of HalfCheetah-v5 and Ant-v5 (timestep 0.01 s, frame_skip 5)

# halfcheetah-jump constants (gwthomas/force env/mujoco/half_cheetah_vel_jump.py).
CHEETAH_MAX_VEL = 3.0
CHEETAH_CTRL_COST = 0.1
CHEETAH_JUMP_WEIGHT = 15.0
CHEETAH_OBS_DIM, CHEETAH_ACT_DIM = 17, 6
_CHEETAH_Z = 0  # obs index of rootz (qpos[1])

# ant-angle constants (gwthomas/force env/mujoco/ant_angle.py; weights equal Ant-v5's defaults).
ANT_GOAL_ANGLE = math.pi / 6  # 30 degrees from the x-axis, towards +y
ANT_CTRL_COST = 0.5
ANT_CONTACT_COST = 5e-4
ANT_HEALTHY_REWARD = 1.0
ANT_ACT_DIM = 8
ANT_OBS_DIMS = (27, 105)  # without (mopo_jax's and the original's) / with clipped cfrc_ext[1:]


def _check_dims(name: str, obs, act, next_obs, extras: StepExtras, obs_dims: tuple[int, ...],
                act_dim: int, position_dim: int) -> None:
    """Static shape check (works under jit: shapes are static)."""
    dim = obs.shape[-1]
    if (dim not in obs_dims or next_obs.shape[-1] != dim or act.shape[-1] != act_dim
            or extras.displacements.shape[-1] != position_dim):
        raise ValueError(
            f"{name} expects obs/next_obs [..., {' or '.join(map(str, obs_dims))}], act "
            f"[..., {act_dim}] and extras.displacements [..., {position_dim}]; got obs {obs.shape}, "
            f"act {act.shape}, next_obs {next_obs.shape}, displacements "
            f"{extras.displacements.shape}.")


def halfcheetah_jump_reward(obs: jax.Array, act: jax.Array, next_obs: jax.Array,
                            extras: StepExtras) -> jax.Array:
    """halfcheetah-jump reward min(Δx/dt, 3) − 0.1·‖a‖² + 15·(next_obs[..., 0] − z_reset).

    Δx = extras.displacements[..., 0] (rootx after − before); next_obs[..., 0] is rootz after the
    step and z_reset = extras.reset_heights the rootz right after the episode's reset, so the
    jump term rewards the torso's rise above its own reset height. See the module docstring.

    Args: obs [B, 17], act [B, 6], next_obs [B, 17] (HalfCheetah-v5 layout), extras with
      displacements [B, 1] and reset_heights [B] (any leading dims B).
    Returns: [B] rewards.
    """
    _check_dims("halfcheetah_jump_reward", obs, act, next_obs, extras, (CHEETAH_OBS_DIM,),
                CHEETAH_ACT_DIM, 1)
    run = jnp.minimum(extras.displacements[..., 0] / DT, CHEETAH_MAX_VEL)
    ctrl = CHEETAH_CTRL_COST * jnp.sum(jnp.square(act), axis=-1)
    jump = CHEETAH_JUMP_WEIGHT * (next_obs[..., _CHEETAH_Z] - extras.reset_heights)
    return run - ctrl + jump


def ant_angle_reward(obs: jax.Array, act: jax.Array, next_obs: jax.Array,
                     extras: StepExtras) -> jax.Array:
    """ant-angle reward (Δxy/dt)·(cos 30°, sin 30°) − 0.5·‖a‖² − 5e-4·C' + 1·healthy(next_obs).

    Δxy = extras.displacements (root x, y after − before); C' = extras.contact_forces_sq, the
    recorded Σ clip(cfrc_ext, −1, 1)² after the step (also for 105-dim observations, whose contact
    dims hold the same forces); healthy = not `ant_done`.

    Args: obs [B, 27 or 105], act [B, 8], next_obs like obs (Ant-v5 layout), extras with
      displacements [B, 2] and contact_forces_sq [B] (any leading dims B).
    Returns: [B] rewards.
    """
    _check_dims("ant_angle_reward", obs, act, next_obs, extras, ANT_OBS_DIMS, ANT_ACT_DIM, 2)
    v_xy = extras.displacements / DT
    direction = jnp.asarray([math.cos(ANT_GOAL_ANGLE), math.sin(ANT_GOAL_ANGLE)], v_xy.dtype)
    angle = jnp.sum(v_xy * direction, axis=-1)
    ctrl = ANT_CTRL_COST * jnp.sum(jnp.square(act), axis=-1)
    contact = ANT_CONTACT_COST * extras.contact_forces_sq
    healthy = ANT_HEALTHY_REWARD * (~ant_done(obs, act, next_obs)).astype(angle.dtype)
    return angle - ctrl - contact + healthy


@dataclasses.dataclass(frozen=True)
class OODTask:
    """One MOPO out-of-distribution task: a target reward on data from a source task. Its source
    env (source_env, env_id, termination) is the catalogue's (`catalog.OOD_DATASETS`, `ENVS`).

    Fields:
      name: "halfcheetah-jump" or "ant-angle" (a key of `catalog.OOD_DATASETS`).
      reward_fn: target reward (obs [B, D], act [B, A], next_obs [B, D], StepExtras [B, ...])
        -> [B], pure jnp.
      constants: the goal constants, as (name, value) pairs.
      behavior: what the behaviour (data) policy was trained on, per the paper.
      description: the target reward in words/maths.
      reference: where the definition comes from.
      paper_results: raw returns reported in MOPO Table 2, as (method, value) pairs.
    """

    name: str
    reward_fn: RewardFn
    constants: tuple[tuple[str, float], ...]
    behavior: str
    description: str
    reference: str
    paper_results: tuple[tuple[str, float], ...]

    @property
    def source_env(self) -> str:
        """The env family of the data and dynamics ("halfcheetah" / "ant")."""
        return OOD_DATASETS[self.name].env

    @property
    def env_id(self) -> str:
        """The Gymnasium id of the source env (its dynamics, termination and time limit)."""
        return ENVS[self.source_env].env_id

    @property
    def termination(self) -> str:
        """Name of the `mopo_jax.envs.termination` rule: the source env's."""
        return self.source_env


_PAPER = "Yu et al. 2020, MOPO, arXiv 2005.13239, §5.2, Table 2 and Appendix G"
_DATA = ("entire replay buffer of a 1M-step SAC run on the source task "
         f"({_PAPER.split(',')[0]}, §5.2)")

OOD_TASKS: dict[str, OODTask] = {
    "halfcheetah-jump": OODTask(
        name="halfcheetah-jump",
        reward_fn=halfcheetah_jump_reward,
        constants=(("max_velocity", CHEETAH_MAX_VEL), ("ctrl_cost_weight", CHEETAH_CTRL_COST),
                   ("jump_weight", CHEETAH_JUMP_WEIGHT), ("dt", DT)),
        behavior="SAC trained on min(v_x, 3) - 0.1*|a|^2 (HalfCheetah capped at velocity 3); "
                 + _DATA,
        description="min((x' - x)/dt, 3) - 0.1*|a|^2 + 15*(rootz' - rootz at the episode's reset)",
        reference=f"{_PAPER}; github.com/gwthomas/force env/mujoco/half_cheetah_vel_jump.py",
        paper_results=(("batch_mean", -1022.6), ("batch_max", 1808.6), ("MOPO", 4016.6),
                       ("MBPO", 2971.4), ("SAC", -3588.2), ("BEAR", 16.8), ("BRAC-p", 1069.9),
                       ("BRAC-v", 871.0)),
    ),
    "ant-angle": OODTask(
        name="ant-angle",
        reward_fn=ant_angle_reward,
        constants=(("goal_angle_rad", ANT_GOAL_ANGLE), ("ctrl_cost_weight", ANT_CTRL_COST),
                   ("contact_cost_weight", ANT_CONTACT_COST),
                   ("healthy_reward", ANT_HEALTHY_REWARD), ("dt", DT)),
        behavior="SAC trained on the standard Ant forward reward (v_x - ctrl - contact + 1); "
                 + _DATA,
        description="((x, y)' - (x, y))/dt . (cos 30deg, sin 30deg) - 0.5*|a|^2 "
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


def relabel(transitions: Transitions, task_name: str, extras: StepExtras) -> Transitions:
    """Replace the rewards of `transitions` with the target reward of `task_name`.

    Args:
      transitions: a `Transitions` (observations [N, D], actions [N, A], next_observations [N, D],
        rewards [N], terminations [N]); any pytree with those fields and `_replace` or `replace`
        (e.g. `mopo_jax.data.Dataset`) works too.
      task_name: "halfcheetah-jump" or "ant-angle".
      extras: the rows' `StepExtras` (displacements [N, p], reset_heights [N],
        contact_forces_sq [N]), e.g. `mopo_jax.behavior.artifacts.history_extras(history)`.
    Returns: the same type with rewards [N] recomputed (same dtype; numpy in, numpy out), every
      other field unchanged (the same objects).
    """
    task = get_task(task_name)
    rewards = _jitted_reward(task.name)(jnp.asarray(transitions.observations),
                                        jnp.asarray(transitions.actions),
                                        jnp.asarray(transitions.next_observations),
                                        jax.tree.map(jnp.asarray, extras))
    old = transitions.rewards
    if isinstance(old, np.ndarray):
        rewards = np.asarray(rewards, dtype=old.dtype)
    else:
        rewards = rewards.astype(jnp.asarray(old).dtype)
    if hasattr(transitions, "_replace"):
        return transitions._replace(rewards=rewards)
    return transitions.replace(rewards=rewards)
