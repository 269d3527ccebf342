"""OOD tasks: relabelled rewards == the eval env's simulator-side rewards; jit/vmap; hand values."""

import math

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.envs.ood import (OOD_TASKS, TargetRewardWrapper, ant_angle_reward,
                          halfcheetah_jump_reward, make_eval_env, relabel)
from mopo_jax.sac.networks import Actor
from mopo_jax.sac.policy import deterministic_action
from mopo_jax.envs.termination import termination_fn
from mopo_jax.types import Transitions

CASES = {
    "halfcheetah-jump": ("halfcheetah-jump", {}),
    "ant-angle": ("ant-angle", {}),
    "ant-angle-27": ("ant-angle", {"include_cfrc_ext_in_observation": False}),
}
STEPS = 1200


def _collect(task, kwargs, steps=STEPS, seed=0):
    """Step the wrapped env and a plain source env in lockstep; random actions, every 3rd 5x."""
    wrapped = make_eval_env(task, **kwargs)
    source = gym.make(OOD_TASKS[task].env_id, **kwargs)
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("obs", "act", "next_obs", "reward", "source_reward", "info_source",
                            "terminated", "source_terminated", "truncated", "source_truncated",
                            "source_next_obs", "survive")}
    obs, _ = wrapped.reset(seed=seed)
    obs_s, _ = source.reset(seed=seed)
    np.testing.assert_array_equal(obs, obs_s)
    for t in range(steps):
        act = rng.uniform(-1.0, 1.0, wrapped.action_space.shape)
        if t % 3 == 0:
            act = 5.0 * act  # deliberately outside the action box
        next_obs, r, term, trunc, info = wrapped.step(act)
        next_obs_s, r_s, term_s, trunc_s, _ = source.step(act)
        for k, v in zip(cols, (obs, act, next_obs, r, r_s, info["source_reward"], term, term_s,
                               trunc, trunc_s, next_obs_s, info.get("target_survive", 1.0))):
            cols[k].append(v)
        obs = next_obs
        if term or trunc:
            obs, _ = wrapped.reset(seed=seed + t + 1)
            obs_s, _ = source.reset(seed=seed + t + 1)
    wrapped.close()
    source.close()
    return {k: np.asarray(v) for k, v in cols.items()}


@pytest.fixture(scope="module", params=list(CASES))
def rollout(request):
    task, kwargs = CASES[request.param]
    return task, _collect(task, kwargs)


def _transitions(d):
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731  (dataset precision)
    return Transitions(f32(d["obs"]), f32(d["act"]), f32(d["source_reward"]), f32(d["next_obs"]),
                       f32(d["terminated"]))


def test_relabel_equals_eval_env_reward(rollout):
    task, d = rollout
    data = _transitions(d)
    out = relabel(data, task)
    assert isinstance(out, Transitions) and isinstance(out.rewards, np.ndarray)
    assert out.rewards.dtype == np.float32 and out.rewards.shape == (STEPS,)
    for name in ("observations", "actions", "next_observations", "terminations"):
        assert getattr(out, name) is getattr(data, name)
    np.testing.assert_allclose(out.rewards, d["reward"], rtol=1e-5, atol=1e-4)
    # The target reward really differs from the source reward (else the check would be vacuous).
    assert np.abs(d["reward"] - d["source_reward"]).mean() > 0.1
    # In float64 the two computations agree to rounding.
    with jax.enable_x64(True):
        r64 = jax.jit(OOD_TASKS[task].reward_fn)(jnp.asarray(d["obs"]), jnp.asarray(d["act"]),
                                        jnp.asarray(d["next_obs"]))
        np.testing.assert_allclose(np.asarray(r64), d["reward"], rtol=1e-10, atol=1e-10)


def test_relabel_keeps_jax_arrays_on_device(rollout):
    task, d = rollout
    data = jax.tree.map(jnp.asarray, _transitions(d))
    out = jax.jit(lambda t: relabel(t, task))(data)
    assert isinstance(out.rewards, jax.Array) and out.rewards.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out.rewards), d["reward"], rtol=1e-5, atol=1e-4)


def test_wrapped_env_keeps_source_dynamics_and_terminations(rollout):
    task, d = rollout
    np.testing.assert_array_equal(d["next_obs"], d["source_next_obs"])
    np.testing.assert_array_equal(d["terminated"], d["source_terminated"])
    np.testing.assert_array_equal(d["truncated"], d["source_truncated"])
    np.testing.assert_array_equal(d["info_source"], d["source_reward"])
    rule = termination_fn(OOD_TASKS[task].termination)
    done = np.asarray(jax.jit(rule)(d["obs"], d["act"], d["next_obs"]))
    np.testing.assert_array_equal(done, d["terminated"])
    if OOD_TASKS[task].source_env == "ant":
        assert d["terminated"].any(), "large actions should flip the ant at least once"
        # The survive bonus is withheld exactly on the terminating steps (v5 convention).
        np.testing.assert_array_equal(d["survive"], 1.0 - d["terminated"])


@pytest.mark.parametrize("fn,obs_dim,act_dim", [(halfcheetah_jump_reward, 17, 6),
                                                (ant_angle_reward, 105, 8),
                                                (ant_angle_reward, 27, 8)])
def test_reward_fns_jit_and_vmap(fn, obs_dim, act_dim):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 32, obs_dim)).astype(np.float32)
    act = rng.normal(size=(4, 32, act_dim)).astype(np.float32)
    nxt = rng.normal(size=(4, 32, obs_dim)).astype(np.float32)
    obs[..., 0], nxt[..., 0] = 0.5, rng.choice([0.6, 1.5], size=(4, 32))  # healthy and not
    batched = jax.jit(fn)(obs[0], act[0], nxt[0])
    assert batched.shape == (32,)
    vmapped = jax.jit(jax.vmap(fn))
    per_row = vmapped(obs[0], act[0], nxt[0])  # vmapped over single [D] rows
    np.testing.assert_allclose(per_row, batched, rtol=1e-6, atol=1e-6)
    stacked = vmapped(obs, act, nxt)  # vmapped over an extra leading axis of [B, D] batches
    assert stacked.shape == (4, 32)
    np.testing.assert_allclose(stacked[0], batched, rtol=1e-6, atol=1e-6)


def test_halfcheetah_jump_hand_values():
    obs = np.zeros((2, 17), np.float32)
    nxt = np.zeros((2, 17), np.float32)
    act = np.zeros((2, 6), np.float32)
    # Row 0: mean v_x (2 + 6)/2 = 4 is capped at 3; |a|^2 = 1 + 1 + 0.25; torso 0.1 m above 0.7 m.
    obs[0, 8], nxt[0, 8], nxt[0, 0] = 2.0, 6.0, 0.1
    act[0, :3] = [1.0, -1.0, 0.5]
    # Row 1: mean v_x (1 + 2)/2 = 1.5 below the cap; torso 0.2 m below 0.7 m; other entries of
    # obs (angles, other velocities) do not enter.
    obs[1, 8], nxt[1, 8], nxt[1, 0] = 1.0, 2.0, -0.2
    obs[1, [1, 9, 16]] = nxt[1, [1, 9, 16]] = 7.0
    expected = [3.0 - 0.1 * 2.25 + 15 * 0.1, 1.5 - 15 * 0.2]
    np.testing.assert_allclose(jax.jit(halfcheetah_jump_reward)(obs, act, nxt), expected,
                               rtol=1e-6)


def test_ant_angle_hand_values():
    obs = np.zeros((2, 105), np.float32)
    nxt = np.zeros((2, 105), np.float32)
    act = np.full((2, 8), 0.5, np.float32)  # |a|^2 = 2 -> ctrl 1.0
    obs[:, 13], nxt[:, 13], nxt[:, 14] = 1.0, 3.0, 2.0  # mean velocity (2, 1)
    nxt[:, 30:34], nxt[:, 60] = 1.0, -0.5  # sum of squares 4.25
    nxt[0, 0], nxt[1, 0] = 0.5, 1.2  # healthy / too high (terminated): no survive bonus
    angle = 2.0 * math.cos(math.pi / 6) + 1.0 * math.sin(math.pi / 6)
    expected = [angle - 1.0 - 5e-4 * 4.25 + 1.0, angle - 1.0 - 5e-4 * 4.25]
    fn = jax.jit(ant_angle_reward)
    np.testing.assert_allclose(fn(obs, act, nxt), expected, rtol=1e-6)
    # 27-dim observations (no contact forces): same without the contact term.
    np.testing.assert_allclose(fn(obs[:, :27], act, nxt[:, :27]),
                               [angle - 1.0 + 1.0, angle - 1.0], rtol=1e-6)


def test_unknown_task_and_bad_shapes_are_clear_errors():
    data = Transitions(np.zeros((3, 17)), np.zeros((3, 6)), np.zeros(3), np.zeros((3, 17)),
                       np.zeros(3))
    with pytest.raises(ValueError, match="halfcheetah-jump, ant-angle"):
        relabel(data, "hopper-jump")
    with pytest.raises(ValueError, match="halfcheetah-jump, ant-angle"):
        make_eval_env("walker-angle")
    with pytest.raises(ValueError, match=r"\[\.\.\., 27 or 105\].*got obs \(3, 17\)"):
        relabel(data._replace(actions=np.zeros((3, 8))), "ant-angle")
    with pytest.raises(ValueError, match="observation layout"):
        make_eval_env("halfcheetah-jump", exclude_current_positions_from_observation=False)
    with pytest.raises(ValueError, match="observation layout"):
        TargetRewardWrapper(gym.make("HalfCheetah-v5"), "ant-angle")
    task = OOD_TASKS["halfcheetah-jump"]
    assert relabel(data, "  HalfCheetah-Jump ").rewards.shape == (3,)
    assert task.source_env == "halfcheetah" and task.env_id == "HalfCheetah-v5"
    assert OOD_TASKS["ant-angle"].termination == "ant"


def test_evaluate_policy_accepts_an_env_factory():
    actor = Actor(6, (8,))
    params = jax.jit(actor.init)(jax.random.key(0), np.zeros((1, 17), np.float32))["params"]
    short = {"max_episode_steps": 100}
    target = evaluate_policy(params, lambda: make_eval_env("halfcheetah-jump", **short), 1, seed=3)
    source = evaluate_policy(params, lambda: gym.make("HalfCheetah-v5", **short), 1, seed=3)
    # Replay the same deterministic policy by hand: both returns are recovered from one rollout.
    act_fn = jax.jit(deterministic_action)
    env = make_eval_env("halfcheetah-jump", **short)
    obs, _ = env.reset(seed=3)
    total, steps, done = np.zeros(2), 0, False
    while not done:
        action = np.asarray(act_fn(params, obs[None].astype(np.float32))[0])
        obs, r, term, trunc, info = env.step(action)
        total += (r, info["source_reward"])
        steps, done = steps + 1, term or trunc
    assert steps == 100
    np.testing.assert_allclose([target[0], source[0]], total, rtol=1e-9)
    assert target[0] != source[0]


def test_capped_velocity_behaviour_reward_from_the_simulator():
    """min(v_x, 3) − 0.1‖a‖² with v_x from rootx positions before/after each step."""
    from mopo_jax.behavior.config import BehaviorConfig
    from mopo_jax.behavior.train import make_env
    from mopo_jax.envs.ood import CappedVelocityRewardWrapper

    env = make_env(BehaviorConfig(env_id="HalfCheetah-v5", reward="halfcheetah-vel3"), for_eval=True)
    assert isinstance(env, CappedVelocityRewardWrapper) and env.spec.max_episode_steps == 1000
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    data, dt = env.unwrapped.data, env.unwrapped.dt
    for _ in range(200):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        x0 = float(data.qpos[0])
        _, reward, _, _, info = env.step(action)
        v = (float(data.qpos[0]) - x0) / dt
        want = min(v, 3.0) - 0.1 * float(np.sum(np.square(action, dtype=np.float64)))
        np.testing.assert_allclose(reward, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(info["source_reward"], v - 0.1 * np.sum(np.square(action)), rtol=1e-5, atol=1e-5)
    qpos, qvel = np.array(data.qpos), np.array(data.qvel)
    qvel[0] = 8.0  # launched forward: the cap must bind
    env.unwrapped.set_state(qpos, qvel)
    _, reward, _, _, info = env.step(np.zeros(6, np.float32))
    assert info["x_velocity"] > 3.0 and reward == pytest.approx(3.0)
    with pytest.raises(ValueError, match="reward must be one of"):
        BehaviorConfig(reward="jump")
    with pytest.raises(ValueError, match="HalfCheetah"):
        make_env(BehaviorConfig(env_id="Hopper-v5", reward="halfcheetah-vel3"))
