"""Episode-parallel collection returns the serial build exactly: random and policy levels, the
batched action sampler, and the serial fallback when a replay does not match its chain."""

import logging

import jax
import numpy as np
import pytest

from mopo_jax.data import parallel
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


def test_parallel_policy_build_is_the_serial_build():
    serial = _policy_build(1500, 1)
    assert_same_steps(serial, _policy_build(1500, 2))
    assert len(serial["episode_lengths"]) > 5


@pytest.mark.parametrize("level", ["random", "policy"])
def test_a_replay_that_does_not_match_its_chain_falls_back_to_the_serial_loop(
        level, monkeypatch, caplog):
    build = {"random": lambda workers: collect_random_steps("Hopper-v5", 600, num_workers=workers),
             "policy": lambda workers: _policy_build(600, workers)}[level]
    with monkeypatch.context() as mp, caplog.at_level(logging.WARNING, logger="mopo_jax.data"):
        mp.setattr(parallel, "_termination_rule", lambda u: lambda: False)  # a wrong chain
        got = build(2)
    assert "did not match its chain" in caplog.text
    assert_same_steps(got, build(1))  # the fallback starts the action stream afresh


def test_small_builds_stay_serial_by_default():
    assert parallel.default_workers(parallel.PARALLEL_MIN_STEPS - 1) == 1
    assert parallel.default_workers(10**6) >= 1
