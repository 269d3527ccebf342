"""Episode lengths of pre-drawn actions in C: mujoco.rollout, vectorised termination rules."""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator

import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

RECENT = 64  # an episode's first chunk: the FIRST_QUANTILE of this many recent episode lengths
FIRST_QUANTILE = 0.1  # (most episodes run past it, few end before it)
MIN_CHUNK = 3  # env steps per rollout call after the first chunk at least ...
GROWTH = 8  # ... or 1/GROWTH of the steps taken so far (few calls for long episodes)
MAX_CHUNK = 1024  # env steps per rollout call at most

Rule = Callable[[np.ndarray], np.ndarray]  # state vectors [n, nq+nv] -> terminated [n] bool


def never(sv: np.ndarray) -> np.ndarray:
    """The rule of an env that never terminates (HalfCheetah): all false [n]."""
    return np.zeros(len(sv), bool)


def vector_rule(u) -> Rule | None:
    """`terminated` of `u.step` (u: an unwrapped Gymnasium MuJoCo env) as a function of the state
    vectors sv = qpos ‖ qvel [n, nq+nv] after each step (the env's `state_vector()`), in float64
    with the env's own ranges and strictness; `never` for an env that cannot terminate; None for
    an env class without a rule here (its chain steps it one step at a time)."""
    from gymnasium.envs.mujoco import ant_v5, half_cheetah_v5, hopper_v5, walker2d_v5

    kind = type(u)  # exact classes: a subclass may override is_healthy
    if kind is half_cheetah_v5.HalfCheetahEnv:
        return never
    if kind not in (hopper_v5.HopperEnv, walker2d_v5.Walker2dEnv, ant_v5.AntEnv):
        return None
    if not u._terminate_when_unhealthy:
        return never
    if kind is ant_v5.AntEnv:
        return _ant_rule(*u._healthy_z_range)
    (min_z, max_z), (min_angle, max_angle) = u._healthy_z_range, u._healthy_angle_range
    low, high = [min_z, min_angle], [max_z, max_angle]  # sv[:, 1] = z, sv[:, 2] = angle
    if kind is hopper_v5.HopperEnv:  # and state_vector()[2:] in its own range: sv[:, 2:]
        min_state, max_state = u._healthy_state_range
        extra = u.model.nq + u.model.nv - 3
        low = [min_z, max(min_angle, min_state)] + [min_state] * extra
        high = [max_z, min(max_angle, max_state)] + [max_state] * extra
    return _strictly_inside_rule(np.array(low, np.float64), np.array(high, np.float64))


def rollout_pays(u) -> bool:
    """Whether rolling out `u`'s episodes in C beats stepping them one by one (CPU time of the
    chain on 20k random steps, 2 shared cores: Hopper-v5 +11%, Ant-v5 +5%, Walker2d-v5 -9%:
    the chain is mostly MuJoCo, Walker2d's per-step rule is cheap, and the steps rolled past a
    termination and the cost of each rollout call outweigh it)."""
    from gymnasium.envs.mujoco import walker2d_v5

    return type(u) is not walker2d_v5.Walker2dEnv


def _strictly_inside_rule(low: np.ndarray, high: np.ndarray) -> Rule:
    """Hopper-v5 / Walker2d-v5 `not is_healthy`: sv[:, 1:1+m] strictly inside (low, high) [m],
    entry by entry (a < x and b < x iff max(a, b) < x, so overlapping ranges merge exactly; a NaN
    is outside, as in the env's comparisons)."""
    cols = slice(1, 1 + len(low))

    def terminated(sv: np.ndarray) -> np.ndarray:
        x = sv[:, cols]
        return ~((low < x) & (x < high)).all(axis=1)

    return terminated


def _ant_rule(min_z: float, max_z: float) -> Rule:
    """Ant-v5 `not is_healthy`: every entry of sv finite and min_z <= qpos[2] <= max_z."""

    def terminated(sv: np.ndarray) -> np.ndarray:
        z = sv[:, 2]
        return ~(np.isfinite(sv).all(axis=1) & (min_z <= z) & (z <= max_z))

    return terminated


def fixed_lengths(num_steps: int, limit: int | None) -> Iterator[int]:
    """Episode lengths of a build whose episodes never terminate: `limit` (the TimeLimit; None: no
    limit) each, the last cut at `num_steps`."""
    t = 0
    while t < num_steps:
        k = min(limit or num_steps, num_steps - t)
        yield k
        t += k


class Roller:
    """Rolls an env's MuJoCo model forward from the state its `reset` left, with the calls of
    `do_simulation` (data.ctrl = action, then `frame_skip` mj_steps) made in C by mujoco.rollout."""

    def __init__(self, u):
        self.model, self.frame_skip = u.model, u.frame_skip
        self.data = mujoco.MjData(u.model)  # the rollout's own scratch data
        self.rollout = mj_rollout.Rollout(nthread=0)  # in this thread
        self.nstate = mujoco.mj_stateSize(u.model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.sv_at = mujoco.mj_stateSize(u.model, mujoco.mjtState.mjSTATE_TIME)  # qpos, then qvel
        self.sv_end = self.sv_at + u.model.nq + u.model.nv
        self.recent = deque([MIN_CHUNK], maxlen=RECENT)  # episode lengths [<= RECENT]
        self.state0 = np.empty((1, self.nstate))
        self.warm0 = np.empty((1, u.model.nv))
        self.out = np.empty((1, MAX_CHUNK * self.frame_skip, self.nstate))

    def start(self, data) -> None:
        """Start from `data` (the env's, right after its reset): its full physics state and its
        solver warm start qacc_warmstart, which mj_step also reads."""
        mujoco.mj_getState(self.model, data, self.state0[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.warm0[0] = data.qacc_warmstart

    def advance(self, actions: np.ndarray) -> np.ndarray | None:
        """Step on with `actions` [k, a] (k <= MAX_CHUNK): the state vectors qpos ‖ qvel after
        each env step [k, nq+nv], or None if MuJoCo raised a warning (the rollout then freezes
        the state; the env would step on). The next call continues from the last state."""
        frames = len(actions) * self.frame_skip
        control = np.repeat(np.asarray(actions, np.float64), self.frame_skip, axis=0)[None]
        out = self.out[:, :frames]
        self.rollout.rollout([self.model], [self.data], self.state0, control, skip_checks=True,
                             nstep=frames, control_spec=mujoco.mjtState.mjSTATE_CTRL.value,
                             initial_warmstart=self.warm0, state=out)
        if self.data.warning.number.any():  # counters the rollout cleared at its start
            return None
        self.state0[0] = out[0, -1]
        self.warm0[0] = self.data.qacc_warmstart  # the data ends at the last step rolled out
        return out[0, self.frame_skip - 1::self.frame_skip, self.sv_at:self.sv_end]

    def episode_length(self, data, actions: np.ndarray, rule: Rule) -> int | None:
        """Steps until `rule` says terminated, from `data` (the env right after its reset) with
        `actions` [stop, a], or stop (the TimeLimit or the build's end); None after a MuJoCo
        warning. Rolls out speculatively in chunks: first a low quantile of the recent episode
        lengths, then max(MIN_CHUNK, steps so far // GROWTH), so the steps rolled past a
        termination (wasted, and dear: a fallen body has more contacts) stay few while long
        episodes take few calls (each costs ~30 us of Python, ~1/4 of a Hopper step)."""
        self.start(data)
        done, stop = 0, len(actions)
        chunk = int(np.quantile(self.recent, FIRST_QUANTILE, method="lower"))
        while done < stop:
            n = min(chunk, stop - done, MAX_CHUNK)
            sv = self.advance(actions[done:done + n])
            if sv is None:
                return None
            ended = rule(sv)
            if ended.any():
                done += int(ended.argmax()) + 1  # the first terminated step
                break
            done += n
            chunk = max(MIN_CHUNK, done // GROWTH)
        self.recent.append(done)
        return done
