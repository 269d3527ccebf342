"""Batched evaluation of many policies (envs.evaluate.evaluate_policies) against the serial reference."""

import chex
import gymnasium as gym
import jax
import numpy as np
import pytest

from mopo_jax.envs import evaluate as ev
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.update import init_sac

HOPPER = ("Hopper-v5", 11, 3)
P, E = 4, 3


def _init_actors(keys, hidden: tuple[int, ...]):
    """keys [num] -> actor params of `num` fresh SAC states, leaves stacked [num, ...]."""
    config = SACConfig(hidden_sizes=hidden)
    return jax.vmap(lambda k: init_sac(k, HOPPER[1], HOPPER[2], config).actor_params)(keys)


def _actors(num: int, hidden: tuple[int, ...], key: int = 1):
    """Fresh SAC actors of `num` policies from init_sac under jit(vmap) (seconds to compile)."""
    keys = jax.random.split(jax.random.key(key), num)
    return jax.jit(_init_actors, static_argnums=1)(keys, hidden)


def _numpy_actors(num: int, hidden: tuple[int, ...], seed: int = 0):
    """Actor params shaped as init_sac's (eval_shape: nothing compiled), numpy random values.

    Kernels [num, fan_in, fan_out] ~ N(0, 1/fan_in), biases [num, out] ~ N(0, 0.1²).
    """
    keys = jax.random.split(jax.random.key(0), num)
    shapes = jax.eval_shape(lambda k: _init_actors(k, hidden), keys)
    rng = np.random.default_rng(seed)

    def fill(s):
        scale = 1 / np.sqrt(s.shape[1]) if len(s.shape) == 3 else 0.1
        return (scale * rng.normal(size=s.shape)).astype(np.float32)

    return jax.tree.map(fill, shapes)


def _policy(params, p: int):
    return jax.tree.map(lambda x: x[p], params)


class _Counting(gym.Wrapper):
    """Counts steps; appends the count to `log` on close."""

    def __init__(self, env, log):
        super().__init__(env)
        self.steps, self.log = 0, log

    def step(self, action):
        self.steps += 1
        return super().step(action)

    def close(self):
        self.log.append(self.steps)
        super().close()


@pytest.fixture(scope="module")
def hopper_run():
    """One instrumented batched evaluation of P small random actors and the serial reference."""
    params = _actors(P, (32, 32))
    seeds = np.array([[100 * p + 3 + e for e in range(E)] for p in range(P)])
    lengths, calls = [], []
    traced = jax.jit(chex.assert_max_traces(ev.batched_actions, n=1))

    def counted(actor_params, obs, running):
        devices = {d for leaf in jax.tree.leaves(actor_params) for d in leaf.devices()}
        calls.append((obs.shape, running.shape, devices, int(running.sum())))
        return traced(actor_params, obs, running)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "_batched_act", counted)
        batched = ev.evaluate_policies(params, lambda: _Counting(gym.make(HOPPER[0]), lengths), seeds)
    serial = np.stack([ev.evaluate_policy(_policy(params, p), HOPPER[0], E, seed=100 * p + 3)
                       for p in range(P)])
    return {"batched": batched, "serial": serial, "lengths": lengths, "calls": calls}


def test_batched_returns_equal_serial_ones(hopper_run):
    batched, serial = hopper_run["batched"], hopper_run["serial"]
    assert batched.shape == (P, E) and batched.dtype == np.float64
    np.testing.assert_array_equal(batched, serial)
    assert len(np.unique(batched)) == P * E  # distinct episodes, not one repeated


def test_episodes_end_at_different_times_and_all_run_to_their_end(hopper_run):
    lengths = hopper_run["lengths"]
    assert len(lengths) == P * E  # one env per episode, every one closed
    assert len(set(lengths)) > 1
    assert all(1 <= n < 1000 for n in lengths)  # these untrained hoppers fall before the time limit


def test_one_fixed_shape_call_per_step_on_the_cpu(hopper_run):
    calls, lengths = hopper_run["calls"], hopper_run["lengths"]
    assert len(calls) == max(lengths)  # one batched actor call per step, none after the last one
    assert {c[:2] for c in calls} == {((P, E, HOPPER[1]), (P, E))}  # padded: a fixed input shape
    assert all(c[2] == {jax.devices("cpu")[0]} for c in calls)
    # running rows shrink as episodes end: step t has exactly the episodes longer than t
    running = [c[3] for c in calls]
    assert running == [sum(n > t for n in lengths) for t in range(len(calls))]
    # chex.assert_max_traces(n=1) raised inside the fixture otherwise; a second shape would retrace:
    with pytest.raises(AssertionError):
        traced = jax.jit(chex.assert_max_traces(ev.batched_actions, n=1))
        params = _numpy_actors(1, (4,))
        for e in (1, 2):
            traced(params, np.zeros((1, e, HOPPER[1]), np.float32), np.ones((1, e), bool))


def test_batched_actions_match_single_row_calls_bit_for_bit():
    """256x256 actors: a batched matmul would round some rows differently; ours must not."""
    params = _numpy_actors(3, (256, 256))
    rng = np.random.default_rng(0)
    obs = (3 * rng.normal(size=(3, 10, HOPPER[1]))).astype(np.float32)
    running = rng.random((3, 10)) < 0.7
    out = np.asarray(jax.jit(ev.batched_actions)(params, obs, running))
    assert out.shape == (3, 10, HOPPER[2]) and out.dtype == np.float32
    for p in range(3):
        for e in range(10):
            want = np.asarray(ev._act(_policy(params, p), obs[p, e][None])[0])
            np.testing.assert_array_equal(out[p, e], want if running[p, e] else np.zeros_like(want))


def test_seed_checks_and_empty_batch():
    params = {"w": np.zeros((2, 5), np.float32), "b": np.zeros((2,), np.float32)}
    with pytest.raises(ValueError, match="integer array"):
        ev.evaluate_policies(params, HOPPER[0], np.arange(3))
    with pytest.raises(ValueError, match="integer array"):
        ev.evaluate_policies(params, HOPPER[0], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="leading policy axis of size 3"):
        ev.evaluate_policies(params, HOPPER[0], np.zeros((3, 2), int))
    empty = ev.evaluate_policies(params, HOPPER[0], np.zeros((2, 0), int))
    assert empty.shape == (2, 0)
