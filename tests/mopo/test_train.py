"""The pure training loop: determinism, vmapped seeds == separate runs, λ traced, buffer in place."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chex

from mopo_jax.dynamics.fit import fit
from mopo_jax.mopo.config import tiny
from mopo_jax.mopo.train import make_train

CFG = tiny("hopper-random", epochs=2, steps_per_epoch=8, rollout_batch_size=32)


@pytest.fixture(scope="module")
def setup(hopper_small):
    data = jax.tree.map(lambda x: jnp.asarray(x[:2000]), hopper_small.transitions())
    model, _ = fit(jax.random.key(0), data, CFG.dynamics)
    return data, model, make_train(CFG, data, model)


def _close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5,
                                                         atol=1e-6), a, b)


def test_same_seed_same_metrics_and_learning_signals(setup):
    _, _, fns = setup
    state_a, metrics_a = fns.train(jax.random.key(7))
    state_b, metrics_b = fns.train(jax.random.key(7))
    _, metrics_c = fns.train(jax.random.key(8))
    jax.tree.map(np.testing.assert_array_equal, metrics_a, metrics_b)
    assert not np.array_equal(metrics_a["critic_loss"], metrics_c["critic_loss"])
    assert metrics_a["critic_loss"].shape == (CFG.epochs,)
    assert int(state_a.epoch) == CFG.epochs and int(state_a.sac.step) == 2 * 8
    assert np.all(metrics_a["rollout_penalty"] > 0)
    np.testing.assert_allclose(metrics_a["rollout_reward"], metrics_a["rollout_raw_reward"]
                               - CFG.penalty_coef * metrics_a["rollout_penalty"], rtol=1e-4, atol=1e-4)
    valid_rows = metrics_a["rollout_mean_length"] * CFG.rollout_batch_size
    np.testing.assert_allclose(metrics_a["buffer_count"], np.cumsum(valid_rows), rtol=1e-6)


def test_vmap_over_seeds_equals_separate_runs(setup):
    _, _, fns = setup
    keys = jax.random.split(jax.random.key(3), 2)
    _, batched = jax.vmap(fns.train)(keys)
    for i in range(2):
        _, single = fns.train(keys[i])
        _close(jax.tree.map(lambda x: x[i], batched), single)


def test_epoch_writes_the_model_buffer_in_place(setup):
    """The compiled epoch aliases the donated state and never copies the model buffer; the same
    epoch without donation has to copy it (the control that shows the check can fail)."""
    import re

    data, model, fns = setup
    state = fns.init(jax.random.key(0))
    rows = f"f32[{CFG.buffer_capacity},{data.observations.shape[1]}]"
    copy = re.compile(re.escape(rows) + r"\S* (copy|copy-start)\(")

    def buffer_copies(text):
        return [ln for ln in text.splitlines() if copy.search(ln)]

    donated = fns.run_epochs.lower(state, data, model, 2).compile().as_text()
    assert "input_output_alias" in donated and not buffer_copies(donated)
    plain = jax.jit(lambda s, d, m: fns.epoch(s, d, m)).lower(state, data, model).compile().as_text()
    assert buffer_copies(plain)


@pytest.mark.slow
def test_penalty_coef_is_traced_state_one_compile_serves_a_grid(setup):
    """λ lives in the state: a vmapped grid over λ runs one compiled program and each λ's rewards
    are penalised with its own value."""
    data, model, fns = setup
    run = jax.jit(chex.assert_max_traces(
        lambda s: jax.vmap(lambda st: fns.epoch(st, data, model))(s), n=1))
    keys = jnp.stack([jax.random.key(4)] * 3)
    lambdas = jnp.asarray([0.0, 1.0, 10.0])
    _, m = run(jax.vmap(fns.init)(keys, lambdas))
    _, m2 = run(jax.vmap(fns.init)(keys, lambdas * 2))  # new values, no retrace
    np.testing.assert_allclose(m["rollout_raw_reward"][0], m["rollout_reward"][0], rtol=1e-6)
    np.testing.assert_allclose(m["rollout_reward"], m["rollout_raw_reward"]
                               - np.asarray(lambdas) * m["rollout_penalty"], rtol=1e-4, atol=1e-4)
    assert m["rollout_reward"][2] < m["rollout_reward"][1] < m["rollout_reward"][0]


@pytest.mark.slow
def test_target_entropy_is_traced_state_and_matches_the_configured_value(setup):
    """SAC's target entropy lives in the state like λ: one compiled program serves a grid of
    targets, and each grid row equals a separate run whose config sets that target."""
    import dataclasses

    data, model, fns = setup
    assert float(fns.init(jax.random.key(0)).target_entropy) == -3.0  # −act_dim, hopper
    run = jax.jit(chex.assert_max_traces(
        lambda s: jax.vmap(lambda st: fns.run_epochs(st, data, model, 2))(s), n=1))
    keys = jnp.stack([jax.random.key(4)] * 2)
    targets = jnp.asarray([-3.0, 1.0])
    _, m = run(jax.vmap(fns.init)(keys, None, targets))
    for i, target in enumerate([-3.0, 1.0]):
        cfg = dataclasses.replace(CFG, sac=dataclasses.replace(CFG.sac, target_entropy=target))
        single = make_train(cfg, data, model)
        _, ms = single.run_epochs(single.init(jax.random.key(4)), data, model, 2)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5), m, ms)
    # a higher target entropy makes α's loss push α up: a different (larger) α after the updates
    assert m["alpha"][1, -1] > m["alpha"][0, -1]
