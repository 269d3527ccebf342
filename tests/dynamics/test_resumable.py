"""The resumable fit: chunked epochs equal the one-call fit bit for bit, a stopped fit resumes to the
same arrays, state files are saved on a clock cadence and refused when they belong to another fit."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax import checkpoint
from mopo_jax.dynamics import fit as dyn_fit
from mopo_jax.dynamics import io as dyn_io
from mopo_jax.dynamics import resumable
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.dynamics.resumable import FitInterrupted, FitStateFile
from mopo_jax.types import Transitions

SMALL = DynamicsConfig(num_members=3, num_elites=2, hidden_sizes=(16, 16),
                       hidden_weight_decays=(2.5e-5, 5e-5), batch_size=64, patience=2,
                       learning_rate=3e-3, max_epochs=30)
SEEDS = (1, 2, 3)  # SMALL on `data` stops early, at epochs 25, 26 and 19


@pytest.fixture(scope="module")
def data():
    """700 noisy linear transitions: holdout 140, train 560 = 8 full minibatches + a padded one."""
    rng = np.random.default_rng(0)
    coef = np.random.default_rng(123).normal(size=(5, 4)).astype(np.float32) * 0.5
    obs = rng.normal(size=(700, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(700, 2)).astype(np.float32)
    noise = rng.normal(size=(700, 4)).astype(np.float32) * np.array([0.1, 0.2, 0.4, 0.15], np.float32)
    y = np.concatenate([obs, act], 1) @ coef + noise
    return jax.tree.map(jnp.asarray, Transitions(obs, act, y[:, 3], obs + y[:, :3],
                                                 np.zeros(700, np.float32)))


# On jax 0.11.2 (CPU) XLA compiles the vmapped fit's chunked epochs (calls of a few steps) and
# the one-call epoch differently: measured differences of 1 ulp (1.5e-8 absolute) in holdout
# MSEs, the same epochs and elites. Bit equality is asserted on jax 0.10 (CI's version).
CHUNKS_BIT_EXACT = jax.__version_info__ < (0, 11)


def assert_same(got, want, exact: bool = True):
    """Every array of two pytrees (e.g. (EnsembleModel, FitReport)) equal, bit for bit (or, with
    `exact` False, within float32 rounding, integers still exactly)."""
    got_leaves, got_def = jax.tree.flatten(got)
    want_leaves, want_def = jax.tree.flatten(want)
    assert got_def == want_def
    for g, w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        if exact or not np.issubdtype(g.dtype, np.floating):
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def stop_at(epoch):
    """An on_epoch callback that presses Ctrl-C once `epoch` epochs are done."""
    def on_epoch(info):
        if info.epoch == epoch:
            raise KeyboardInterrupt
    return on_epoch


@pytest.mark.slow
def test_stopped_and_resumed_fit_equals_the_one_call_fit(data, tmp_path, caplog):
    key = jax.random.key(3)
    want = dyn_fit.fit(key, data, SMALL)
    epochs = int(want[1].epochs)
    assert 4 < epochs < SMALL.epoch_cap
    state = FitStateFile(tmp_path / "model.partial", "fit-a", 3)
    # uneven chunks: 9 steps per epoch as calls of 4, 4 and 1 steps
    assert_same(resumable.fit_resumable(key, data, SMALL, state, steps_per_call=4), want)
    assert not checkpoint.pair_exists(state.prefix)  # no cadence save within 300 s, no stop
    with pytest.raises(FitInterrupted, match="saved at epoch 3 .*model.partial.msgpack"):
        resumable.fit_resumable(key, data, SMALL, state, steps_per_call=4, on_epoch=stop_at(3))
    assert checkpoint.load_metadata(state.prefix)["epoch"] == 3
    seen = []
    with caplog.at_level(logging.INFO, logger="mopo_jax.dynamics"):
        got = resumable.fit_resumable(key, data, SMALL, state, steps_per_call=2,
                                      on_epoch=seen.append)
    assert f"resuming the fit of seed 3 at epoch 3 from {tmp_path}" in caplog.text
    assert [info.epoch for info in seen] == list(range(4, epochs + 1))
    assert {info.resumed_from for info in seen} == {3}  # the rate counts this call's epochs only
    assert_same(got, want)
    resumable.remove_state(state.prefix)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_stopped_and_resumed_fit_many_equals_fit_many(data, tmp_path):
    keys = jax.vmap(jax.random.key)(jnp.asarray(SEEDS))
    want = dyn_fit.fit_many(keys, data, SMALL)
    epochs = np.asarray(want[1].epochs)
    assert len(set(epochs.tolist())) > 1  # the seeds stop at different epochs
    stop = int(epochs.min()) + 1  # one seed has stopped (frozen), the others train on
    states = [FitStateFile(tmp_path / f"s{s}.partial", f"fit-{s}", s) for s in SEEDS]
    assert_same(resumable.fit_many_resumable(keys, data, SMALL, states, steps_per_call=5), want,
                exact=CHUNKS_BIT_EXACT)
    with pytest.raises(FitInterrupted, match=f"saved at epoch {stop} .* and 2 more"):
        resumable.fit_many_resumable(keys, data, SMALL, states, on_epoch=stop_at(stop))
    saved = [checkpoint.load_metadata(s.prefix)["epoch"] for s in states]
    assert saved == np.minimum(epochs, stop).tolist()
    assert_same(resumable.fit_many_resumable(keys, data, SMALL, states, steps_per_call=3), want,
                exact=CHUNKS_BIT_EXACT)


def test_state_saved_on_the_clock_cadence_survives_a_crash(data, tmp_path):
    key = jax.random.key(3)
    state = FitStateFile(tmp_path / "m.partial", "fit-a", 3)
    now, on_disk = [0.0], []

    def on_epoch(info):  # each epoch "takes" 4 s; the fit crashes after epoch 5
        on_disk.append(checkpoint.load_metadata(state.prefix)["epoch"]
                       if checkpoint.pair_exists(state.prefix) else None)
        now[0] = 4.0 * info.epoch
        if info.epoch == 5:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        resumable.fit_resumable(key, data, SMALL, state, checkpoint_seconds=10.0,
                                clock=lambda: now[0], on_epoch=on_epoch)
    assert on_disk == [None, None, None, 3, 3]  # saved after epoch 3 (12 s); not on a crash
    assert checkpoint.load_metadata(state.prefix)["epoch"] == 3
    assert_same(resumable.fit_resumable(key, data, SMALL, state), dyn_fit.fit(key, data, SMALL))


def test_a_state_of_another_fit_is_refused(data, tmp_path):
    key = jax.random.key(3)
    state = FitStateFile(tmp_path / "m.partial", "fit-a", 3)
    with pytest.raises(FitInterrupted):
        resumable.fit_resumable(key, data, SMALL, state, on_epoch=stop_at(1))
    for other, wrong_key, config in [
            (state._replace(identity="fit-b"), key, SMALL),
            (state, jax.random.key(2), SMALL),
            (state, key, DynamicsConfig(**{**SMALL.__dict__, "hidden_sizes": (8, 16)}))]:
        with pytest.raises(ValueError, match="cannot resume the dynamics fit of seed 3 .* delete "
                                             ".*m.partial.msgpack and .*m.partial.json"):
            resumable.fit_resumable(wrong_key, data, config, other)
    assert resumable.partial_prefix(tmp_path / "model.msgpack") == tmp_path / "model.partial"
    assert FitInterrupted(0, []).args[0] == (
        "the dynamics fit had not finished an epoch; nothing was saved")


@pytest.mark.slow
def test_fit_or_load_continues_a_stopped_fit_beside_the_cache_entry(hopper_small, data_dirs,
                                                                    tmp_path, monkeypatch, caplog):
    from mopo_jax.mopo.config import tiny

    config = tiny().dynamics
    data = jax.tree.map(lambda x: jnp.asarray(x[:800]), hopper_small.transitions())
    monkeypatch.setenv("MOPO_JAX_CACHE_DIR", str(tmp_path / "straight"))
    want, _ = dyn_io.fit_or_load(config, data, hopper_small.info, [0, 1])
    monkeypatch.setenv("MOPO_JAX_CACHE_DIR", str(tmp_path / "stopped"))
    with pytest.raises(FitInterrupted, match="saved at epoch 2"):
        dyn_io.fit_or_load(config, data, hopper_small.info, [0, 1], on_epoch=stop_at(2))
    prefixes = [dyn_io.cache_prefix(hopper_small.info, 800, s, config) for s in (0, 1)]
    partials = [resumable.partial_prefix(p) for p in prefixes]
    assert all(checkpoint.pair_exists(p) for p in partials)
    assert partials[0].parent == prefixes[0].parent == dyn_io.model_cache_dir()
    with caplog.at_level(logging.INFO, logger="mopo_jax.dynamics"):
        got, names = dyn_io.fit_or_load(config, data, hopper_small.info, [0, 1])
    assert "resuming the fit of seed 1 at epoch 2 from" in caplog.text
    assert names == [p.name for p in prefixes]
    assert not any(checkpoint.pair_exists(p) for p in partials)  # deleted once the models are saved
    assert_same(got, want)
