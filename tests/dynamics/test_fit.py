"""Tests of the dynamics ensemble (mopo_jax.ensemble + mopo_jax.dynamics); tiny configs, CPU-fast."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.dynamics import batches, losses
from mopo_jax.dynamics import fit as dyn_fit
from mopo_jax.dynamics import io as dyn_io
from mopo_jax.dynamics import model as model_mod
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.types import Transitions

OBS, ACT = 3, 2
SIGMA = np.array([0.1, 0.2, 0.4, 0.15], np.float32)  # noise std of [Δobs..., reward]


def linear_system(seed: int, n: int):
    """Δobs and reward linear in obs‖act plus Gaussian noise of std SIGMA; returns (Transitions, A)."""
    rng = np.random.default_rng(seed)
    coef = np.random.default_rng(123).normal(size=(OBS + ACT, OBS + 1)).astype(np.float32) * 0.5
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32)
    y = np.concatenate([obs, act], 1) @ coef + rng.normal(size=(n, OBS + 1)).astype(np.float32) * SIGMA
    tr = Transitions(obs, act, y[:, OBS], obs + y[:, :OBS], np.zeros(n, np.float32))
    return jax.tree.map(jnp.asarray, tr), coef


SMALL = DynamicsConfig(num_members=3, num_elites=2, hidden_sizes=(16, 16),
                       hidden_weight_decays=(2.5e-5, 5e-5), batch_size=64, patience=2,
                       learning_rate=3e-3, max_epochs=40)
# Snapshots follow the holdout MSE of the mean only (as in the original), so with the default 1%
# threshold they can come from an epoch where the log-variance head is still far from calibrated;
# the learning test keeps every improvement and runs a fixed 100 epochs.
LEARN = DynamicsConfig(num_members=3, num_elites=2, hidden_sizes=(32, 32),
                       hidden_weight_decays=(2.5e-5, 5e-5), learning_rate=3e-3,
                       max_epochs=100, patience=1000, improvement_threshold=0.0)


@pytest.fixture(scope="module")
def small_fit():
    tr, _ = linear_system(0, 700)  # holdout 140, train 560 = 8 full + 1 partial batch of 48
    model, report = dyn_fit.fit(jax.random.key(1), tr, SMALL)
    return tr, model, report


@pytest.fixture(scope="module")
def learned():
    tr, coef = linear_system(1, 4000)
    model, report = dyn_fit.fit(jax.random.key(2), tr, LEARN)
    return model, report, coef


# ---------------------------------------------------------------- loss and clamp

def _np_softplus(x):
    return np.logaddexp(0.0, x)


def _np_loss(net, max_lv, min_lv, x, y, weights, wds, head_wd, coef):
    h = x
    for layer in net["hidden"]:
        z = np.einsum("ebi,eio->ebo", h, layer["w"]) + layer["b"][:, None]
        h = z / (1.0 + np.exp(-z))  # swish
    mu = np.einsum("ebi,eio->ebo", h, net["mean_head"]["w"]) + net["mean_head"]["b"][:, None]
    lv = np.einsum("ebi,eio->ebo", h, net["logvar_head"]["w"]) + net["logvar_head"]["b"][:, None]
    lv = max_lv - _np_softplus(max_lv - lv)
    lv = min_lv + _np_softplus(lv - min_lv)
    term = ((mu - y) ** 2 * np.exp(-lv) + lv).mean(-1)  # [E, B]
    w = np.ones(term.shape[1]) if weights is None else weights
    total = ((term * w).sum(-1) / w.sum()).sum()
    for layer, wd in zip(net["hidden"], wds):
        total += 0.5 * wd * (layer["w"] ** 2).sum()
    total += 0.5 * head_wd * ((net["mean_head"]["w"] ** 2).sum() + (net["logvar_head"]["w"] ** 2).sum())
    return total + coef * (max_lv.sum() - min_lv.sum())


@pytest.mark.parametrize("masked", [False, True])
def test_loss_matches_numpy(masked):
    e, b, i, o = 2, 5, 3, 2
    net = model_mod.init_ensemble_params(jax.random.key(0), e, i, o, (4, 4))
    net = jax.tree.map(lambda p: p * 3.0 + 0.1, net)  # non-zero biases; log-variances hit both bounds
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(e, b, i)).astype(np.float32), rng.normal(size=(e, b, o)).astype(np.float32)
    max_lv, min_lv = np.array([0.5, 0.2], np.float32), np.array([-10.0, -1.0], np.float32)
    weights = np.array([1, 1, 1, 0, 0], np.float32) if masked else None
    wds, head_wd, coef = (0.1, 0.2), 0.3, 0.01
    got = losses.gaussian_nll_loss(
        {"net": net, "max_logvar": max_lv, "min_logvar": min_lv}, x, y,
        None if weights is None else jnp.asarray(weights), activation="swish",
        hidden_weight_decays=wds, head_weight_decay=head_wd, logvar_bound_coef=coef)
    want = _np_loss(jax.tree.map(np.asarray, net), max_lv, min_lv, x, y, weights, wds, head_wd, coef)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    if masked:  # a padded final minibatch gives exactly the loss of its real rows
        small = losses.gaussian_nll_loss(
            {"net": net, "max_logvar": max_lv, "min_logvar": min_lv}, x[:, :3], y[:, :3], None,
            activation="swish", hidden_weight_decays=wds, head_weight_decay=head_wd,
            logvar_bound_coef=coef)
        np.testing.assert_allclose(float(got), float(small), rtol=1e-6)


def test_soft_clamp_stays_inside_bounds():
    max_lv, min_lv = jnp.array([0.5, 2.0]), jnp.array([-10.0, -3.0])
    lv = jnp.linspace(-1e3, 1e3, 20001)[:, None] * jnp.ones(2)
    out = model_mod.soft_clamp_logvar(lv, max_lv, min_lv)
    # the (faithful) formula's exact range is (min, max + softplus(min − max)); the overshoot is
    # 2.8e-5 for the default bounds (0.5, −10) and 6.7e-3 for a gap of 5
    overshoot = jnp.log1p(jnp.exp(min_lv - max_lv))
    assert bool(jnp.all(out <= max_lv + overshoot + 1e-6)) and bool(jnp.all(out >= min_lv))
    np.testing.assert_allclose(out[0], min_lv, atol=1e-5)
    np.testing.assert_allclose(out[-1], max_lv + overshoot, atol=1e-5)
    default = model_mod.soft_clamp_logvar(jnp.array([-1e4, 1e4]), 0.5, -10.0)
    assert -10.0 <= float(default[0]) and float(default[1]) <= 0.5 + 3e-5
    assert bool(jnp.all(jnp.diff(out, axis=0) >= 0))  # monotone
    mid = model_mod.soft_clamp_logvar(jnp.array([-5.0, 0.0]), max_lv, min_lv)
    np.testing.assert_allclose(mid, [-5.0, 0.0], atol=0.15)  # ~identity well inside the bounds


# ---------------------------------------------------------------- data split and bootstrap

def test_holdout_split_and_bootstrap_per_member():
    n, h, e = 500, 100, 4
    train_idx, hold_idx = batches.holdout_split(jax.random.key(0), n, h)
    assert train_idx.shape == (n - h,) and hold_idx.shape == (h,)
    assert set(np.asarray(train_idx)).isdisjoint(np.asarray(hold_idx))
    assert sorted(np.concatenate([train_idx, hold_idx]).tolist()) == list(range(n))
    boot = np.asarray(batches.bootstrap_indices(jax.random.key(1), e, n - h))
    assert boot.shape == (e, n - h) and boot.min() >= 0 and boot.max() < n - h  # train positions only
    for m in range(e):
        assert len(np.unique(boot[m])) < n - h  # with replacement: duplicates (p(no dup) ~ 0)
        for k in range(m):
            assert not np.array_equal(boot[m], boot[k])
    # each epoch's minibatches hold exactly each member's own bootstrap multiset, reshuffled
    idx, weights = batches.epoch_minibatches(jax.random.key(2), jnp.asarray(boot), 64)
    assert idx.shape == (7, e, 64) and weights.shape == (7, 64)
    np.testing.assert_array_equal(np.asarray(weights).sum(), n - h)
    real = np.asarray(weights).reshape(-1) > 0
    for m in range(e):
        rows = np.asarray(idx[:, m]).reshape(-1)[real]
        np.testing.assert_array_equal(np.sort(rows), np.sort(boot[m]))
        assert not np.array_equal(rows, boot[m])
    idx2, _ = batches.epoch_minibatches(jax.random.key(3), jnp.asarray(boot), 64)
    assert not np.array_equal(np.asarray(idx), np.asarray(idx2))
    idx_full, w_full = batches.epoch_minibatches(jax.random.key(2), jnp.asarray(boot[:, :384]), 64)
    assert w_full is None and idx_full.shape == (6, e, 64)


# ---------------------------------------------------------------- early stopping and elites

def _original_stop_epoch(curves, patience, threshold=0.01):
    """The original MOPO BNN's `_save_best` loop in plain Python: best starts at 1e10, a member
    improves when (best - mse)/best > threshold, and training breaks once
    epochs_since_update > patience. Returns (epochs run, best mse per member)."""
    best = [1e10] * curves.shape[1]
    since = 0
    for epoch, row in enumerate(curves):
        updated = False
        for i, current in enumerate(row):
            if (best[i] - current) / best[i] > threshold:
                best[i], updated = current, True
        since = 0 if updated else since + 1
        if since > patience:
            return epoch + 1, best
    return len(curves), best


def test_update_snapshots_on_constructed_curve():
    curves = np.array([  # holdout MSE per epoch (rows) and member (cols); threshold 1%
        [10.0, 8.0],
        [5.0, 8.0],    # m0 improves
        [4.99, 7.95],  # neither improves by > 1%
        [4.0, 7.95],   # m0 improves
        [4.0, 7.0],    # m1 improves
        [3.97, 6.95],  # no improvement (both < 1%)
        [np.nan, 7.0],  # no (NaN never improves)
        [3.96, 6.94],  # no: the 3rd epoch in a row, more than patience 2: stop here
        [3.0, 1.0],    # would improve, but training stopped before this epoch
    ], np.float32)
    config = DynamicsConfig(patience=2, improvement_threshold=0.01)
    best = {"w": jnp.full((2, 3), -1.0)}
    best_mse, since = jnp.full((2,), jnp.inf), jnp.int32(0)
    epoch = 0
    while bool(dyn_fit.keep_training(since, jnp.int32(epoch), config)):
        params = {"w": jnp.full((2, 3), float(epoch))}  # marker: the epoch the params come from
        best, best_mse, since, improved = dyn_fit.update_snapshots(
            params, best, best_mse, jnp.asarray(curves[epoch]), since, 0.01)
        epoch += 1
    assert epoch == 8
    np.testing.assert_array_equal(np.asarray(best["w"])[:, 0], [3.0, 4.0])
    np.testing.assert_allclose(best_mse, [4.0, 7.0])
    assert int(since) == 3 and not bool(jnp.any(improved))
    assert _original_stop_epoch(curves, patience=2) == (8, [4.0, 7.0])


@pytest.mark.parametrize("seed", range(6))
def test_stopping_epoch_equals_the_original_rule(seed):
    """Random plateauing holdout curves: our rule stops at the original's epoch (default patience 5)."""
    rng = np.random.default_rng(seed)
    curves = ((1 + 5 * np.exp(-np.arange(80) / 4))[:, None]
              * rng.uniform(0.97, 1.03, (80, 3))).astype(np.float32)
    config = DynamicsConfig()
    best, best_mse, since, epoch = {"w": jnp.zeros(3)}, jnp.full((3,), jnp.inf), jnp.int32(0), 0
    while bool(dyn_fit.keep_training(since, jnp.int32(epoch), config)) and epoch < len(curves):
        best, best_mse, since, _ = dyn_fit.update_snapshots(
            {"w": jnp.zeros(3)}, best, best_mse, jnp.asarray(curves[epoch]), since, 0.01)
        epoch += 1
    want_epochs, want_best = _original_stop_epoch(curves, patience=5)
    assert config.patience == 5 and epoch == want_epochs < len(curves)
    np.testing.assert_allclose(best_mse, want_best)


def test_fit_report_consistent_with_early_stopping(small_fit):
    tr, model, report = small_fit
    epochs = int(report.epochs)
    assert 2 < epochs < SMALL.max_epochs  # stopped early, not at the cap
    best_epoch = np.asarray(report.best_epoch)
    # stopped after patience + 1 epochs without improvement (the original's `> patience`)
    assert best_epoch.max() == epochs - 2 - SMALL.patience
    hist = np.asarray(report.holdout_mse_history)
    assert np.all(np.isfinite(hist[:epochs])) and np.all(np.isnan(hist[epochs:]))
    assert np.all(np.isnan(np.asarray(report.train_loss_history)[epochs:]))
    np.testing.assert_array_equal(hist[best_epoch, np.arange(3)], report.holdout_mse)
    # restored snapshots: recomputing the holdout MSE of the returned params gives the reported best
    k_split = jax.random.split(jax.random.key(1), 4)[0]
    _, hold = batches.holdout_split(k_split, 700, 140)
    x, y = batches.make_targets(tr)
    x = (x[hold] - model.input_mean) / model.input_std
    mse = losses.per_dim_mse(model.params, x, y[hold]).mean(-1)
    np.testing.assert_allclose(mse, report.holdout_mse, rtol=1e-5)
    # elites: the num_elites lowest holdout MSEs, best first
    order = np.argsort(np.asarray(report.holdout_mse))
    np.testing.assert_array_equal(report.elite_idx, order[:2])
    np.testing.assert_array_equal(model.elite_idx, order[:2])
    assert model.elite_idx.dtype == jnp.int32


def _fit_small(key, transitions):
    return dyn_fit.fit(key, transitions, SMALL)


def test_fit_under_jit_progress_and_no_retrace(small_fit, capsys):
    tr, model, report = small_fit
    jitted = jax.jit(chex.assert_max_traces(_fit_small, n=1))
    m1, r1 = jitted(jax.random.key(1), tr)
    chex.assert_trees_all_close(m1, model, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(r1.elite_idx, report.elite_idx)
    m2, _ = jitted(jax.random.key(5), jax.tree.map(lambda a: a + 0.1, tr))  # new values: no retrace
    assert not np.allclose(m2.params["mean_head"]["w"], m1.params["mean_head"]["w"])
    seen = []
    m3, r3 = dyn_fit.fit(jax.random.key(1), tr, SMALL, on_epoch=seen.append)
    assert int(r3.epochs) == int(report.epochs)
    chex.assert_trees_all_close(m3, model, rtol=1e-5, atol=1e-6)
    assert [info.epoch for info in seen] == list(range(1, int(report.epochs) + 1))
    np.testing.assert_array_equal(seen[-1].best_mse, report.holdout_mse)


# ---------------------------------------------------------------- learning

def test_learns_linear_gaussian_system(learned):
    model, report, coef = learned
    tr, _ = linear_system(99, 2000)
    mean, std = model_mod.predict(model, tr.observations, tr.actions, members=model.elite_idx)
    true_y = np.concatenate([tr.observations, tr.actions], 1) @ coef
    true_mean = np.concatenate([np.asarray(tr.observations) + true_y[:, :OBS], true_y[:, OBS:]], 1)
    err = np.sqrt(((np.asarray(mean) - true_mean) ** 2).mean(axis=(0, 1)))
    assert np.all(err < 0.3 * SIGMA), err  # mean error small relative to the noise
    pred_sigma = np.asarray(std).mean(axis=(0, 1))
    np.testing.assert_allclose(pred_sigma, SIGMA, rtol=0.2)
    np.testing.assert_allclose(report.elite_holdout_mse_per_dim, SIGMA**2, rtol=0.35)


# ---------------------------------------------------------------- predict and sampling

def _constant_model(obs_dim=OBS, act_dim=ACT, members=4):
    """A model whose member e predicts Δobs = 10·e, reward = −e, with log-variance at min (−10)."""
    net = model_mod.init_ensemble_params(jax.random.key(0), members, obs_dim + act_dim, obs_dim + 1, (8,))
    net = jax.tree.map(jnp.zeros_like, net)
    levels = 10.0 * jnp.arange(members, dtype=jnp.float32)[:, None]
    net["mean_head"]["b"] = jnp.concatenate(
        [jnp.broadcast_to(levels, (members, obs_dim)), -levels / 10.0], 1)
    net["logvar_head"]["b"] = jnp.full((members, obs_dim + 1), -100.0)
    d, i = obs_dim + 1, obs_dim + act_dim
    return model_mod.EnsembleModel(net, jnp.full((d,), 0.5), jnp.full((d,), -10.0), jnp.zeros(i),
                                  jnp.ones(i), jnp.array([1, 3], jnp.int32))


def _predict_over_leading_axis(model, obs, act):
    return jax.vmap(model_mod.predict, (None, 0, 0))(model, obs, act)


def test_predict_layout_members_and_vmap(learned):
    model = _constant_model()
    obs, act = jnp.arange(6.0).reshape(2, 3), jnp.ones((2, 2))
    mean, std = model_mod.predict(model, obs, act)
    assert mean.shape == (4, 2, 4) and std.shape == (4, 2, 4)
    np.testing.assert_allclose(mean[2, :, :3], obs + 20.0)  # next_obs = obs + Δ
    np.testing.assert_allclose(mean[2, :, 3], -2.0)  # reward
    np.testing.assert_allclose(std, np.exp(-5.0), rtol=1e-3)  # exp(½·min_logvar)
    fitted = learned[0]
    tr, _ = linear_system(7, 24)
    obs, act = tr.observations.reshape(4, 6, OBS), tr.actions.reshape(4, 6, ACT)
    pred = jax.jit(chex.assert_max_traces(_predict_over_leading_axis, n=1))
    vmean, vstd = pred(fitted, obs, act)
    _ = pred(fitted, obs + 1.0, act)
    assert vmean.shape == (4, 3, 6, OBS + 1)
    single = jax.jit(model_mod.predict)
    for k in range(4):
        m, s = single(fitted, obs[k], act[k])
        np.testing.assert_allclose(vmean[k], m, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(vstd[k], s, rtol=1e-5)
    sub, _ = model_mod.predict(fitted, obs[0], act[0], members=fitted.elite_idx)
    np.testing.assert_allclose(sub, vmean[0][np.asarray(fitted.elite_idx)], rtol=1e-5, atol=1e-5)


def test_sample_step_uses_random_elites_and_noise():
    model = _constant_model()
    obs, act = jnp.zeros((4000, OBS)), jnp.zeros((4000, ACT))
    step = jax.jit(chex.assert_max_traces(model_mod.sample_step, n=1))
    next_obs, reward = step(jax.random.key(0), model, obs, act)
    assert next_obs.shape == (4000, OBS) and reward.shape == (4000,)
    member = np.rint(np.asarray(next_obs[:, 0]) / 10.0)
    assert set(np.unique(member)) == {1.0, 3.0}  # elites 1 and 3 only
    assert 0.45 < (member == 1).mean() < 0.55  # uniform choice per row
    np.testing.assert_allclose(reward, -member, atol=0.05)  # reward from the same member as next_obs
    noise = np.asarray(next_obs) - 10.0 * member[:, None]
    np.testing.assert_allclose(noise.std(0), np.exp(-5.0), rtol=0.1)
    again, _ = step(jax.random.key(1), model, obs, act)
    assert not np.allclose(again, next_obs)


# ---------------------------------------------------------------- save / load

def test_save_load_round_trip_and_mismatch(small_fit, tmp_path):
    tr, model, _ = small_fit
    dyn_io.save(tmp_path / "dyn", model, SMALL)
    loaded, config = dyn_io.load(tmp_path / "dyn", obs_dim=OBS, act_dim=ACT, config=SMALL)
    assert config == SMALL and loaded.activation == "swish"
    chex.assert_trees_all_equal(loaded, model)
    np.testing.assert_array_equal(model_mod.predict(loaded, tr.observations, tr.actions)[0],
                                  model_mod.predict(model, tr.observations, tr.actions)[0])
    with pytest.raises(ValueError, match="obs_dim: file has 3, expected 11"):
        dyn_io.load(tmp_path / "dyn", obs_dim=11)
    with pytest.raises(ValueError, match="act_dim"):
        dyn_io.load(tmp_path / "dyn", act_dim=3)
    with pytest.raises(ValueError, match="hidden_sizes"):
        dyn_io.load(tmp_path / "dyn", config=DynamicsConfig())
    # a JSON that claims another architecture than the arrays hold is caught by the shape check
    meta = (tmp_path / "dyn.json").read_text().replace('"obs_dim": 3', '"obs_dim": 4')
    (tmp_path / "dyn.json").write_text(meta)
    with pytest.raises(ValueError, match="shape"):
        dyn_io.load(tmp_path / "dyn")
