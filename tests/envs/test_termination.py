"""Termination rules against the real Gymnasium v5 envs' `terminated` flags."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.envs.make import make_env
from mopo_jax.envs.termination import termination_fn


def _real_transitions(env_id: str, num_steps: int, seed: int = 0):
    """Uniform-random transitions (obs, act, next_obs, terminated) from the real env, made as the
    project makes it (`make_env`: 27-dim Ant observations)."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(num_steps):
        act = env.action_space.sample()
        next_obs, _, terminated, truncated, _ = env.step(act)
        rows.append((obs, act, next_obs, terminated))
        obs = env.reset()[0] if (terminated or truncated) else next_obs
    env.close()
    o, a, n, d = (np.asarray(x) for x in zip(*rows))
    return o.astype(np.float32), a.astype(np.float32), n.astype(np.float32), d


@pytest.mark.parametrize(
    "env_id, min_terminations",
    [("Hopper-v5", 300), ("Walker2d-v5", 300), ("HalfCheetah-v5", 0), ("Ant-v5", 10)],
)
@pytest.mark.slow
def test_rules_reproduce_env_terminated_flag(env_id, min_terminations):
    obs, act, next_obs, terminated = _real_transitions(env_id, 10_000)
    if env_id == "Ant-v5":  # MOPO's Ant layout: qpos[2:] (13) + qvel (14), no contact forces
        assert obs.shape[1] == next_obs.shape[1] == 27
    predicted = np.asarray(jax.jit(termination_fn(env_id))(obs, act, next_obs))
    assert predicted.shape == (10_000,) and predicted.dtype == bool
    assert int((predicted != terminated).sum()) == 0
    assert terminated.sum() >= min_terminations  # the check saw real terminations


def test_hopper_rule_uses_magnitude_not_abs_of_boolean():
    done = termination_fn("hopper")
    healthy = jnp.array([1.25, 0.0] + [0.0] * 9)
    assert not bool(done(None, None, healthy))
    assert bool(done(None, None, healthy.at[5].set(-150.0)))  # |x| >= 100: MOPO's typo misses this
    assert bool(done(None, None, healthy.at[0].set(0.7)))  # height must be strictly above 0.7
    assert bool(done(None, None, healthy.at[1].set(0.2)))  # |angle| must be strictly below 0.2
    assert bool(done(None, None, healthy.at[3].set(jnp.nan)))


def test_walker_and_ant_boundaries():
    walker, ant = termination_fn("Walker2d-v5"), termination_fn("ant-angle")
    base = jnp.zeros(17).at[0].set(1.2)
    assert not bool(walker(None, None, base))
    for height, angle in [(0.8, 0.0), (2.0, 0.0), (1.2, 1.0), (1.2, -1.0)]:
        assert bool(walker(None, None, base.at[0].set(height).at[1].set(angle)))
    z = jnp.zeros(27)
    assert [bool(ant(None, None, z.at[0].set(v))) for v in (0.2, 1.0, 0.19, 1.01)] == [
        False, False, True, True]
    assert bool(ant(None, None, z.at[0].set(0.5).at[4].set(jnp.inf)))


def test_rules_are_per_sample_batched_and_vmappable():
    done = termination_fn("hopper")
    rng = np.random.default_rng(0)
    next_obs = rng.normal(0.0, 0.3, size=(4, 6, 11)).astype(np.float32)
    next_obs[..., 0] += 1.0
    batched = done(None, None, next_obs)
    vmapped = jax.vmap(jax.vmap(lambda x: done(None, None, x)))(next_obs)
    per_sample = np.array([[bool(done(None, None, x)) for x in row] for row in next_obs])
    assert batched.shape == (4, 6)
    np.testing.assert_array_equal(batched, per_sample)
    np.testing.assert_array_equal(vmapped, per_sample)
    assert not np.all(per_sample) and np.any(per_sample)


def test_halfcheetah_never_terminates_and_unknown_env_errors():
    assert termination_fn("halfcheetah")(None, None, jnp.full((3, 17), 1e6)).tolist() == [False] * 3
    with pytest.raises(ValueError, match="known envs"):
        termination_fn("humanoid")
