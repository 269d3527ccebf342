"""OOD tasks: relabelled rewards == the eval env's simulator-side rewards on real transitions (reset
height and exact velocities included); the terms against the envs' own info; jit/vmap; hand values."""

import math

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.envs.extras import INFO_KEY, StepExtras, stack_infos, step_extras
from mopo_jax.envs.make import make_env
from mopo_jax.envs.ood import (DT, OOD_TASKS, ant_angle_reward, halfcheetah_jump_reward, relabel)
from mopo_jax.envs.ood_env import TargetRewardWrapper, make_eval_env
from mopo_jax.envs.termination import termination_fn
from mopo_jax.sac.networks import Actor
from mopo_jax.sac.policy import deterministic_action
from mopo_jax.types import Transitions

CASES = {
    "halfcheetah-jump": ("halfcheetah-jump", {"max_episode_steps": 200}),
    "ant-angle": ("ant-angle", {"max_episode_steps": 300}),
    "ant-angle-105": ("ant-angle", {"max_episode_steps": 300, "include_cfrc_ext_in_observation": True}),
}
STEPS = 1200


def _collect(task, kwargs, steps=STEPS, seed=0):
    """Step the eval env and a plain source env in lockstep; random actions, every 3rd 5x."""
    wrapped = make_eval_env(task, **kwargs)
    source = make_env(OOD_TASKS[task].env_id, **kwargs)
    rng = np.random.default_rng(seed)
    keys = ("obs", "act", "next_obs", "reward", "source_reward", "info_source", "terminated",
            "source_terminated", "truncated", "source_truncated", "source_next_obs", "episode_obs0")
    cols, infos, source_infos = {k: [] for k in keys}, [], []
    obs, _ = wrapped.reset(seed=seed)
    obs_s, source_info = source.reset(seed=seed)
    np.testing.assert_array_equal(obs, obs_s)
    names = ("x_position", "y_position") if "y_position" in source_info else ("x_position",)
    where = lambda info: np.array([info[k] for k in names])  # noqa: E731  (v5 reports qpos)
    obs0, before = obs[0], where(source_info)
    for t in range(steps):
        act = rng.uniform(-1.0, 1.0, wrapped.action_space.shape)
        if t % 3 == 0:
            act = 5.0 * act  # deliberately outside the action box
        if task == "halfcheetah-jump" and t % 100 == 50:  # launch both: the velocity cap binds
            for env in (wrapped, source):
                qvel = np.array(env.unwrapped.data.qvel)
                qvel[0] = 8.0
                env.unwrapped.set_state(np.array(env.unwrapped.data.qpos), qvel)
            obs = wrapped.unwrapped._get_obs()
        next_obs, r, term, trunc, info = wrapped.step(act)
        next_obs_s, r_s, term_s, trunc_s, source_info = source.step(act)
        source_infos.append(dict(source_info, displacement=where(source_info) - before))
        before = where(source_info)
        for k, v in zip(keys, (obs, act, next_obs, r, r_s, info["source_reward"], term, term_s,
                               trunc, trunc_s, next_obs_s, obs0)):
            cols[k].append(v)
        infos.append(info)
        obs = next_obs
        if term or trunc:
            obs, _ = wrapped.reset(seed=seed + t + 1)
            obs_s, source_info = source.reset(seed=seed + t + 1)
            obs0, before = obs[0], where(source_info)
    wrapped.close()
    source.close()
    return {k: np.asarray(v) for k, v in cols.items()}, infos, source_infos


@pytest.fixture(scope="module", params=list(CASES))
def rollout(request):
    task, kwargs = CASES[request.param]
    return task, *_collect(task, kwargs)


def _transitions(d):
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731  (dataset precision)
    return Transitions(f32(d["obs"]), f32(d["act"]), f32(d["source_reward"]), f32(d["next_obs"]),
                       f32(d["terminated"]))


def test_relabel_equals_eval_env_reward(rollout):
    task, d, infos, _ = rollout
    data, extras = _transitions(d), step_extras(stack_infos(infos))
    out = relabel(data, task, extras)
    assert isinstance(out, Transitions) and isinstance(out.rewards, np.ndarray)
    assert out.rewards.dtype == np.float32 and out.rewards.shape == (STEPS,)
    for name in ("observations", "actions", "next_observations", "terminations"):
        assert getattr(out, name) is getattr(data, name)
    np.testing.assert_allclose(out.rewards, d["reward"], rtol=1e-5, atol=1e-4)
    # The target reward really differs from the source reward (else the check would be vacuous).
    assert np.abs(d["reward"] - d["source_reward"]).mean() > 0.1
    # In float64 the two computations agree to rounding.
    with jax.enable_x64(True):
        r64 = jax.jit(OOD_TASKS[task].reward_fn)(d["obs"], d["act"], d["next_obs"],
                                                 jax.tree.map(jnp.asarray, extras))
        np.testing.assert_allclose(np.asarray(r64), d["reward"], rtol=1e-10, atol=1e-10)


def test_relabel_keeps_jax_arrays_on_device(rollout):
    task, d, infos, _ = rollout
    data = jax.tree.map(jnp.asarray, _transitions(d))
    extras = jax.tree.map(jnp.asarray, step_extras(stack_infos(infos)))
    out = jax.jit(lambda t, e: relabel(t, task, e))(data, extras)
    assert isinstance(out.rewards, jax.Array) and out.rewards.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out.rewards), d["reward"], rtol=1e-5, atol=1e-4)


def test_target_terms_match_the_source_envs_own_quantities(rollout):
    """The velocity, jump and contact terms against what Gymnasium itself reports, not our code."""
    task, d, infos, source_infos = rollout
    displacement = np.array([i["displacement"] for i in source_infos])
    recorded = stack_infos(infos)
    np.testing.assert_allclose(recorded["next_positions"] - recorded["positions"], displacement,
                               rtol=1e-12, atol=1e-12)
    dx = displacement[:, 0]
    if task == "halfcheetah-jump":
        v = np.array([i["x_velocity"] for i in source_infos])  # HalfCheetah-v5: (x' - x)/dt
        np.testing.assert_allclose(dx / DT, v, rtol=1e-9, atol=1e-9)
        run = np.array([i["target_run"] for i in infos])
        np.testing.assert_allclose(run, np.minimum(v, 3.0), rtol=1e-9, atol=1e-9)
        assert (v > 3.0).any() and (v < 3.0).any()  # the cap binds on some steps only
        # Jump: 15 * (rootz' - rootz of the episode's first observation), from observations alone.
        jump = np.array([i["target_jump"] for i in infos])
        np.testing.assert_allclose(jump, 15.0 * (d["next_obs"][:, 0] - d["episode_obs0"]),
                                   rtol=1e-9, atol=1e-9)
        # The reset heights really differ between episodes (U(-0.1, 0.1) reset noise), so a
        # nominal 0.7 m would be wrong by up to 1.5 per step.
        assert np.ptp(np.unique(d["episode_obs0"])) > 0.02 and len(np.unique(d["episode_obs0"])) >= 6
        np.testing.assert_allclose(recorded["reset_heights"], d["episode_obs0"], rtol=0, atol=0)
    else:
        assert displacement.shape == (STEPS, 2) and np.abs(displacement[:, 1]).max() > 1e-3
        contact = np.array([i["target_contact"] for i in infos])
        np.testing.assert_allclose(contact, [i["reward_contact"] for i in source_infos],
                                   rtol=1e-9, atol=1e-12)  # Ant-v5's own contact cost
        assert (contact <= 0).all() and (contact < 0).mean() > 0.2  # contacts on many steps
        if d["obs"].shape[1] == 105:  # the observed contact forces hold the same cost
            np.testing.assert_allclose(contact, -5e-4 * np.sum(d["next_obs"][:, 27:] ** 2, -1),
                                       rtol=1e-9, atol=1e-12)
        survive = np.array([i["target_survive"] for i in infos])
        # The survive bonus is withheld exactly on the terminating steps (v5 convention).
        np.testing.assert_array_equal(survive, 1.0 - d["terminated"])
        assert d["terminated"].any(), "large actions should flip the ant at least once"


def test_wrapped_env_keeps_source_dynamics_and_terminations(rollout):
    task, d, _, _ = rollout
    np.testing.assert_array_equal(d["next_obs"], d["source_next_obs"])
    np.testing.assert_array_equal(d["terminated"], d["source_terminated"])
    np.testing.assert_array_equal(d["truncated"], d["source_truncated"])
    np.testing.assert_array_equal(d["info_source"], d["source_reward"])
    rule = termination_fn(OOD_TASKS[task].termination)
    done = np.asarray(jax.jit(rule)(d["obs"], d["act"], d["next_obs"]))
    np.testing.assert_array_equal(done, d["terminated"])


def _random_extras(rng, lead, p):
    return StepExtras(rng.normal(0, 0.2, lead + (p,)).astype(np.float32),
                      rng.normal(0, 0.1, lead).astype(np.float32),
                      rng.uniform(0, 20, lead).astype(np.float32))


@pytest.mark.parametrize("fn,obs_dim,act_dim,p", [(halfcheetah_jump_reward, 17, 6, 1),
                                                  (ant_angle_reward, 27, 8, 2),
                                                  (ant_angle_reward, 105, 8, 2)])
def test_reward_fns_jit_and_vmap(fn, obs_dim, act_dim, p):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 32, obs_dim)).astype(np.float32)
    act = rng.normal(size=(4, 32, act_dim)).astype(np.float32)
    nxt = rng.normal(size=(4, 32, obs_dim)).astype(np.float32)
    obs[..., 0], nxt[..., 0] = 0.5, rng.choice([0.6, 1.5], size=(4, 32))  # healthy and not
    extras = _random_extras(rng, (4, 32), p)
    first = jax.tree.map(lambda x: x[0], extras)
    batched = jax.jit(fn)(obs[0], act[0], nxt[0], first)
    assert batched.shape == (32,)
    vmapped = jax.jit(jax.vmap(fn))
    per_row = vmapped(obs[0], act[0], nxt[0], first)  # vmapped over single [D] rows
    np.testing.assert_allclose(per_row, batched, rtol=1e-6, atol=1e-6)
    stacked = vmapped(obs, act, nxt, extras)  # vmapped over an extra leading axis of [B, D] batches
    assert stacked.shape == (4, 32)
    np.testing.assert_allclose(stacked[0], batched, rtol=1e-6, atol=1e-6)


def test_halfcheetah_jump_hand_values():
    obs = np.zeros((2, 17), np.float32)
    nxt = np.zeros((2, 17), np.float32)
    act = np.zeros((2, 6), np.float32)
    # Row 0: moved 0.2 m in 0.05 s (4 m/s), capped at 3; |a|^2 = 2.25; rootz 0.1 above a reset at
    # 0.05 (rise 0.05). The observed velocities (obs[8]) play no part.
    nxt[0, 0], obs[0, 8], nxt[0, 8] = 0.1, 9.0, 9.0
    act[0, :3] = [1.0, -1.0, 0.5]
    # Row 1: moved 0.075 m (1.5 m/s); rootz -0.2 after a reset at -0.08 (rise -0.12).
    nxt[1, 0] = -0.2
    obs[1, [1, 9, 16]] = nxt[1, [1, 9, 16]] = 7.0
    extras = StepExtras(np.array([[0.2], [0.075]]), np.array([0.05, -0.08]), np.array([3.0, 3.0]))
    expected = [3.0 - 0.1 * 2.25 + 15 * 0.05, 1.5 - 15 * 0.12]
    np.testing.assert_allclose(jax.jit(halfcheetah_jump_reward)(obs, act, nxt, extras), expected,
                               rtol=1e-5)


def test_ant_angle_hand_values():
    obs = np.zeros((2, 27), np.float32)
    nxt = np.zeros((2, 27), np.float32)
    act = np.full((2, 8), 0.5, np.float32)  # |a|^2 = 2 -> ctrl 1.0
    obs[:, 13], nxt[:, 13] = 7.0, 7.0  # observed velocities play no part
    nxt[0, 0], nxt[1, 0] = 0.5, 1.2  # healthy / too high (terminated): no survive bonus
    extras = StepExtras(np.array([[0.1, 0.05], [0.1, 0.05]]), np.zeros(2), np.array([4.25, 0.0]))
    angle = 2.0 * math.cos(math.pi / 6) + 1.0 * math.sin(math.pi / 6)  # velocity (2, 1)
    expected = [angle - 1.0 - 5e-4 * 4.25 + 1.0, angle - 1.0]
    fn = jax.jit(ant_angle_reward)
    np.testing.assert_allclose(fn(obs, act, nxt, extras), expected, rtol=1e-5)
    # 105-dim observations: the contact term still comes from the extras, not from the obs.
    wide = np.concatenate([nxt, np.ones((2, 78), np.float32)], axis=1)
    np.testing.assert_allclose(fn(np.pad(obs, ((0, 0), (0, 78))), act, wide, extras), expected,
                               rtol=1e-5)


def test_step_extras_missing_or_unrecorded_rows_are_clear_errors():
    rec = {"positions": np.zeros((3, 1)), "next_positions": np.ones((3, 1)),
           "reset_heights": np.zeros(3), "contact_forces_sq": np.zeros(3)}
    np.testing.assert_array_equal(step_extras(rec).displacements, np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"\['reset_heights'\] were not recorded"):
        step_extras({k: v for k, v in rec.items() if k != "reset_heights"})
    rec["positions"][:2] = np.nan  # rows of a history written before the extras existed
    with pytest.raises(ValueError, match="2 of 3 rows have no recorded extras"):
        step_extras(rec)


def test_unknown_task_and_bad_shapes_are_clear_errors():
    data = Transitions(np.zeros((3, 17)), np.zeros((3, 6)), np.zeros(3), np.zeros((3, 17)),
                       np.zeros(3))
    extras = StepExtras(np.zeros((3, 1)), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="halfcheetah-jump, ant-angle"):
        relabel(data, "hopper-jump", extras)
    with pytest.raises(ValueError, match="halfcheetah-jump, ant-angle"):
        make_eval_env("walker-angle")
    with pytest.raises(ValueError, match=r"\[\.\.\., 27 or 105\].*got obs \(3, 17\)"):
        relabel(data._replace(actions=np.zeros((3, 8))), "ant-angle", extras)
    with pytest.raises(ValueError, match=r"displacements \[\.\.\., 2\].*displacements \(3, 1\)"):
        relabel(data._replace(observations=np.zeros((3, 27)), next_observations=np.zeros((3, 27)),
                              actions=np.zeros((3, 8))), "ant-angle", extras)
    with pytest.raises(ValueError, match="position-excluding observation layout"):
        make_eval_env("halfcheetah-jump", exclude_current_positions_from_observation=False)
    with pytest.raises(ValueError, match="observation layout"):
        TargetRewardWrapper(gym.make("HalfCheetah-v5"), "ant-angle")
    task = OOD_TASKS["halfcheetah-jump"]
    assert relabel(data, "  HalfCheetah-Jump ", extras).rewards.shape == (3,)
    assert task.source_env == "halfcheetah" and task.env_id == "HalfCheetah-v5"
    assert OOD_TASKS["ant-angle"].termination == "ant"
    assert make_eval_env("ant-angle").observation_space.shape == (27,)
    assert make_env("HalfCheetah-v5").unwrapped.dt == make_env("Ant-v5").unwrapped.dt == DT


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
        assert set(info[INFO_KEY]) == {"positions", "next_positions", "reset_heights",
                                       "contact_forces_sq"}
        total += (r, info["source_reward"])
        steps, done = steps + 1, term or trunc
    assert steps == 100
    np.testing.assert_allclose([target[0], source[0]], total, rtol=1e-9)
    assert target[0] != source[0]


def test_capped_velocity_behaviour_reward_from_the_simulator():
    """min(v_x, 3) − 0.1‖a‖² with v_x from rootx positions before/after each step."""
    from mopo_jax.behavior.config import BehaviorConfig
    from mopo_jax.behavior.train import make_behavior_env
    from mopo_jax.envs.ood_env import CappedVelocityRewardWrapper

    env = make_behavior_env(BehaviorConfig(env_id="HalfCheetah-v5", reward="halfcheetah-vel3"),
                            for_eval=True)
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
        np.testing.assert_allclose(info[INFO_KEY]["next_positions"] - info[INFO_KEY]["positions"],
                                   [v * dt], rtol=1e-9, atol=1e-12)  # the behaviour env records
    qpos, qvel = np.array(data.qpos), np.array(data.qvel)
    qvel[0] = 8.0  # launched forward: the cap must bind
    env.unwrapped.set_state(qpos, qvel)
    _, reward, _, _, info = env.step(np.zeros(6, np.float32))
    assert info["x_velocity"] > 3.0 and reward == pytest.approx(3.0)
    with pytest.raises(ValueError, match="reward must be one of"):
        BehaviorConfig(reward="jump")
    with pytest.raises(ValueError, match="HalfCheetah"):
        make_behavior_env(BehaviorConfig(env_id="Hopper-v5", reward="halfcheetah-vel3"))
