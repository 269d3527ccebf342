"""Episode-parallel collection returns the serial build exactly: random and policy levels, the
batched action sampler, the C-rollout chain's episode lengths, and the serial fallback when a
replay does not match its chain."""

import logging

import jax
import numpy as np
import pytest

from mopo_jax.data import fast_chain, parallel
from mopo_jax.data.collect import collect_policy_steps, collect_random_steps
from mopo_jax.envs.make import make_env
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.update import init_sac

KEYS = ("observations", "actions", "rewards", "terminations", "truncations", "episode_lengths",
        "episode_seeds")


def assert_same_steps(a: dict, b: dict) -> None:
    assert set(a) == set(b) == set(KEYS)
    for key in KEYS:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5"])
def test_batched_action_draws_are_the_per_step_draws(env_id):
    one, batch = make_env(env_id).action_space, make_env(env_id).action_space
    one.seed(123)
    batch.seed(123)
    expected = np.stack([one.sample() for _ in range(2000)])
    got = np.concatenate([parallel.sample_actions(batch, 700), parallel.sample_actions(batch, 1300)])
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(batch.sample(), one.sample())  # the stream continues alike


@pytest.mark.parametrize("env_id,steps", [("Hopper-v5", 3000), ("HalfCheetah-v5", 2500)])
@pytest.mark.slow
def test_parallel_random_build_is_the_serial_build(env_id, steps):
    serial = collect_random_steps(env_id, steps, num_workers=1)
    together = collect_random_steps(env_id, steps, num_workers=2)
    assert_same_steps(serial, together)
    assert serial["episode_lengths"].sum() == steps
    if env_id == "Hopper-v5":
        assert len(serial["episode_lengths"]) > 50 and serial["terminations"].any()
    else:  # no termination: 1000-step episodes cut by the time limit, the last by the build
        assert serial["episode_lengths"].tolist() == [1000, 1000, 500]


def _policy_build(steps: int, workers: int) -> dict:
    """`steps` steps of an untrained (fast-falling) hopper policy."""
    sac = SACConfig(hidden_sizes=(16, 16))
    params = init_sac(jax.random.key(0), 11, 3, sac).actor_params
    meta = {"sac": {"log_std_min": sac.log_std_min, "log_std_max": sac.log_std_max}}
    return collect_policy_steps("Hopper-v5", params, steps, policy_meta=meta, num_workers=workers)


@pytest.mark.slow
def test_parallel_policy_build_is_the_serial_build():
    serial = _policy_build(1500, 1)
    assert_same_steps(serial, _policy_build(1500, 2))
    assert len(serial["episode_lengths"]) > 5


@pytest.mark.parametrize("level", ["random", "policy"])
@pytest.mark.slow
def test_a_replay_that_does_not_match_its_chain_falls_back_to_the_serial_loop(
        level, monkeypatch, caplog):
    build = {"random": lambda workers: collect_random_steps("Hopper-v5", 600, num_workers=workers),
             "policy": lambda workers: _policy_build(600, workers)}[level]
    with monkeypatch.context() as mp, caplog.at_level(logging.WARNING, logger="mopo_jax.data"):
        mp.setattr(parallel, "_termination_rule", lambda u: lambda: False)  # a wrong chain ...
        mp.setattr(fast_chain, "vector_rule", lambda u: fast_chain.never)  # ... fast or not
        got = build(2)
    assert "did not match its chain" in caplog.text
    assert_same_steps(got, build(1))  # the fallback starts the action stream afresh


def _per_step_lengths(env, steps: int, actions: np.ndarray, monkeypatch) -> list[int]:
    """The chain's episode lengths stepped one env step at a time (no vectorised rule)."""
    with monkeypatch.context() as mp:
        mp.setattr(fast_chain, "vector_rule", lambda u: None)
        return list(parallel.chain_lengths(env, steps, 123, actions))


@pytest.mark.parametrize("env_id,steps", [("Hopper-v5", 3000), ("Walker2d-v5", 3000),
                                          ("HalfCheetah-v5", 2500), ("Ant-v5", 3000)])
def test_rollout_chain_lengths_are_the_per_step_chain_lengths(env_id, steps, monkeypatch):
    env = make_env(env_id)
    env.action_space.seed(123)
    actions = parallel.sample_actions(env.action_space, steps)
    assert fast_chain.vector_rule(env.unwrapped) is not None  # the fast chain is what is tested
    with monkeypatch.context() as mp:
        mp.setattr(fast_chain, "rollout_pays", lambda u: True)  # Walker2d too
        fast = list(parallel.chain_lengths(env, steps, 123, actions))
    assert fast == _per_step_lengths(env, steps, actions, monkeypatch)
    assert sum(fast) == steps
    if env_id != "HalfCheetah-v5":
        assert len(fast) > 5 and min(fast) < 1000  # episodes that terminate


def test_rollout_states_are_do_simulation_states():
    """mujoco.rollout from the state right after reset (and its warm start) gives the very
    qpos, qvel of `do_simulation`, step after step, across chunks of several sizes."""
    env = make_env("Hopper-v5")
    env.action_space.seed(7)
    actions = parallel.sample_actions(env.action_space, 600)
    u = env.unwrapped
    u.reset(seed=5)
    roller = fast_chain.Roller(u)
    roller.start(u.data)
    done = 0
    for n in (1, 3, 17, 64, 200, 315):
        sv = roller.advance(actions[done:done + n])
        for row, action in zip(sv, actions[done:done + n]):
            u.do_simulation(action, u.frame_skip)
            np.testing.assert_array_equal(row, u.state_vector())
        done += n
    np.testing.assert_array_equal(roller.data.qacc_warmstart, u.data.qacc_warmstart)


def test_a_rollout_warning_falls_back_to_per_step_chain(monkeypatch):
    env = make_env("Hopper-v5")
    env.action_space.seed(123)
    actions = parallel.sample_actions(env.action_space, 400)
    expected = _per_step_lengths(env, 400, actions, monkeypatch)
    monkeypatch.setattr(fast_chain.Roller, "advance", lambda self, a: None)  # "a warning"
    assert list(parallel.chain_lengths(env, 400, 123, actions)) == expected


@pytest.mark.parametrize("env_id,kwargs,expected", [
    ("Hopper-v5", {}, "rule"), ("Walker2d-v5", {}, "rule"), ("Ant-v5", {}, "rule"),
    ("HalfCheetah-v5", {}, "never"), ("Hopper-v5", {"terminate_when_unhealthy": False}, "never"),
    ("Swimmer-v5", {}, None)])
def test_vector_rules_by_env(env_id, kwargs, expected):
    rule = fast_chain.vector_rule(make_env(env_id, **kwargs).unwrapped)
    assert {None: rule is None, "never": rule is fast_chain.never}.get(
        expected, rule is not None and rule is not fast_chain.never)


def test_vector_rules_are_is_healthy_on_boundary_states():
    """Each rule against the env's own `is_healthy` on states at and around its range limits,
    NaN and inf included (strict vs non-strict comparisons, the entries checked)."""
    for env_id in ("Hopper-v5", "Walker2d-v5", "Ant-v5"):
        u = make_env(env_id).unwrapped
        u.reset(seed=0)
        rule, size = fast_chain.vector_rule(u), u.model.nq + u.model.nv
        cuts = [-np.inf, -100.0, -1.0, -0.2, 0.0, 0.2, 0.7, 0.8, 1.0, 2.0, 100.0, np.inf, np.nan]
        rng = np.random.default_rng(0)
        svs = u.state_vector()[None].repeat(400, axis=0)
        for row in svs:
            idx = rng.choice(size, size=rng.integers(1, 4), replace=False)
            row[idx] = rng.choice(cuts, size=len(idx))
        seen, expected = [], []
        for row in svs:
            u.set_state(row[:u.model.nq], row[u.model.nq:])
            seen.append(u.state_vector())  # as the env holds it
            expected.append(not u.is_healthy)
        assert 50 < sum(expected) < 350, env_id  # both outcomes, often
        np.testing.assert_array_equal(rule(np.array(seen)), expected, err_msg=env_id)


def test_small_builds_stay_serial_by_default():
    assert parallel.default_workers(parallel.PARALLEL_MIN_STEPS - 1) == 1
    assert parallel.default_workers(10**6) >= 1
