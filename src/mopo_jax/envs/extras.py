"""Per-step simulator quantities that observations leave out, recorded with each transition so the
out-of-distribution target rewards (mopo_jax.envs.ood) can be relabelled exactly.

With Gymnasium's default position-excluding layout a MuJoCo observation holds neither the root's
x (and, for Ant, y) position nor anything about the episode's start, and Ant's 27-dim observation
holds no contact forces. The target rewards need all three, so every step records, from the
simulator:
  positions          [p]  root position before the step: qpos[:p], p = the env's
                          observation_structure["skipped_qpos"] (x; x, y for Ant). Gymnasium v5
                          reports the same numbers as info["x_position"] (, info["y_position"]).
  next_positions     [p]  the same after the step.
  reset_heights      []   qpos[p] right after the episode's reset, i.e. obs[0] of its first
                          observation (the torso height coordinate: rootz, or torso z for Ant).
  contact_forces_sq  []   Σ clip(cfrc_ext, −1, 1)² after the step (all bodies; the world body's
                          row is zero), the sum MOPO's Ant contact cost weights by 5e-4.
`RecordStepExtras` adds them to each step's info; the behaviour history stores them per row
(mopo_jax.behavior.artifacts), and `step_extras` turns stored rows into the reward functions' input.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

EXTRA_FIELDS = ("positions", "next_positions", "reset_heights", "contact_forces_sq")
INFO_KEY = "step_extras"


class StepExtras(NamedTuple):
    """What the OOD target rewards need beyond (s, a, s'); the leading axes are the rewards' [N].

    Fields:
      displacements:     [N, p] root position after minus before the step (metres; x, or x, y),
                         formed in float64 before any cast so large positions lose no precision.
      reset_heights:     [N] obs[0] of the reset observation of the row's episode.
      contact_forces_sq: [N] Σ clip(cfrc_ext, −1, 1)² after the step.
    """

    displacements: Any
    reset_heights: Any
    contact_forces_sq: Any


def position_dim(env: gym.Env) -> int:
    """p: how many leading qpos entries (the root position) the observation of `env` excludes."""
    structure = getattr(env.unwrapped, "observation_structure", None) or {}
    p = int(structure.get("skipped_qpos", 0))
    if p < 1:
        raise ValueError(f"{env.spec.id if env.spec else env}: recording step extras needs the default "
                         f"position-excluding observation layout; observation_structure={structure}")
    return p


def root_position(env: gym.Env, p: int) -> np.ndarray:
    """qpos[:p] of `env`'s simulator as a float64 copy [p]."""
    return np.array(env.unwrapped.data.qpos[:p], dtype=np.float64)


def contact_forces_sq(env: gym.Env) -> float:
    """Σ clip(cfrc_ext, −1, 1)² over all bodies of `env`'s simulator (a float)."""
    return float(np.sum(np.square(np.clip(env.unwrapped.data.cfrc_ext, -1.0, 1.0))))


class RecordStepExtras(gym.Wrapper):
    """Adds info["step_extras"] = {field: value} for the fields of EXTRA_FIELDS to every step.

    Values: positions / next_positions [p] float64, reset_heights and contact_forces_sq floats.
    Observations, rewards, terminations and truncations are untouched.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.position_dim = position_dim(env)
        self._reset_height = float("nan")

    def reset(self, **kwargs):
        """Reset the env and remember the new episode's reset height qpos[p]."""
        obs, info = self.env.reset(**kwargs)
        self._reset_height = float(self.env.unwrapped.data.qpos[self.position_dim])
        return obs, info

    def step(self, action):
        """Step the env; the returned info carries the step's extras under "step_extras"."""
        before = root_position(self.env, self.position_dim)
        obs, reward, terminated, truncated, info = self.env.step(action)
        extras = dict(zip(EXTRA_FIELDS, (before, root_position(self.env, self.position_dim),
                                         self._reset_height, contact_forces_sq(self.env))))
        return obs, reward, terminated, truncated, dict(info, **{INFO_KEY: extras})


def stack_infos(infos: list[dict]) -> dict[str, np.ndarray]:
    """The "step_extras" of a list of step infos stacked per field: positions [N, p] etc. [N]."""
    return {k: np.asarray([info[INFO_KEY][k] for info in infos], np.float64) for k in EXTRA_FIELDS}


def step_extras(recorded: dict) -> StepExtras:
    """Recorded per-step fields (a dict with the EXTRA_FIELDS keys: positions [N, p],
    next_positions [N, p], reset_heights [N], contact_forces_sq [N]) -> StepExtras (numpy float64).

    Raises ValueError naming the missing fields, or the first and count of rows that are NaN
    (rows recorded before these fields existed, kept as NaN when a run was resumed).
    """
    missing = [k for k in EXTRA_FIELDS if k not in recorded]
    if missing:
        raise ValueError(f"the per-step extras {missing} were not recorded")
    arrays = {k: np.asarray(recorded[k], np.float64) for k in EXTRA_FIELDS}
    bad = ~np.isfinite(arrays["positions"]).all(-1) | ~np.isfinite(arrays["next_positions"]).all(-1)
    bad |= ~np.isfinite(arrays["reset_heights"]) | ~np.isfinite(arrays["contact_forces_sq"])
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {bad.size} rows have no recorded extras (first: row "
                         f"{int(np.argmax(bad))}); they were recorded before the extras existed")
    return StepExtras(arrays["next_positions"] - arrays["positions"], arrays["reset_heights"],
                      arrays["contact_forces_sq"])
