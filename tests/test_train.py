"""The training loop: determinism, vmapped seeds == separate runs, CLI chunks and resume == train()."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax import train as train_mod
from mopo_jax.mopo.config import PAPER_PRESETS, PRESETS, preset, tiny
from mopo_jax.envs.catalog import dataset_names
from mopo_jax.dynamics import fit
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


def test_cli_chunks_and_resume_reproduce_uninterrupted_run(setup, data_dirs, tmp_path, monkeypatch):
    data, model, fns = setup
    monkeypatch.setattr(train_mod, "load_dataset", lambda name, num_steps=None: _Subset(num_steps))
    monkeypatch.setattr(train_mod, "fit_or_load_dynamics",
                        lambda *a, **k: jax.tree.map(lambda x: x[None], model))
    monkeypatch.setattr(train_mod, "evaluate_policy", lambda *a, **k: np.array([5.0]))
    cfg = CFG
    whole = train_mod.run(cfg, seed=11, logdir=tmp_path / "whole", progress=False)
    assert whole["epochs"] == 2 and len(whole["evaluations"]) == 2

    calls = {"n": 0}

    def crash_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return np.array([5.0])

    monkeypatch.setattr(train_mod, "evaluate_policy", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(cfg, seed=11, logdir=tmp_path / "killed", progress=False)
    monkeypatch.setattr(train_mod, "evaluate_policy", lambda *a, **k: np.array([5.0]))
    train_mod.run(cfg, seed=11, logdir=tmp_path / "killed", resume=True, progress=False)

    def rows(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(ln).items() if k != "chunk_seconds"} for ln in lines]

    assert rows("whole") == rows("killed")
    key = train_mod.policy_keys(11, 1)[0]
    _, direct = fns.train(key)
    np.testing.assert_allclose([r["critic_loss"] for r in rows("whole")], direct["critic_loss"],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="different config"):
        train_mod.run(tiny(epochs=3), seed=11, logdir=tmp_path / "whole", resume=True,
                      progress=False)


class _Subset:
    """A stand-in Dataset exposing the fixture's small data (the real loader is tested elsewhere)."""

    def __init__(self, _):

        from mopo_jax.data.load import load_dataset

        self._ds = load_dataset("hopper-random", num_steps=2000)
        self.info = self._ds.info

    def transitions(self):
        return self._ds.transitions()


def test_presets_and_cli_errors(data_dirs, capsys):
    assert preset("walker2d-medium-replay").rollout_length == 1
    assert preset("hopper-medium").penalty_coef == 5.0
    assert len(PAPER_PRESETS) == 12 and set(PRESETS) == set(dataset_names())
    assert PRESETS["halfcheetah-jump"] == PRESETS["ant-expert"] == (5, 1.0)
    with pytest.raises(ValueError, match="Valid names"):
        preset("hopper-nothing")
    assert preset("hopper-random", penalty_coef=0.3).penalty_coef == 0.3
    assert preset("hopper-random").buffer_capacity == 5 * 50_000 * 5
    assert train_mod.main(["--dataset", "hopper-nothing", "--tiny"]) == 2
    assert "Valid names" in capsys.readouterr().err


def test_cli_tiny_end_to_end(data_dirs, tmp_path, capsys):
    """The real CLI path: local dataset, dynamics fit + cache, epochs, real-env evaluation, files."""
    logdir = tmp_path / "tiny"
    argv = ["--dataset", "hopper-random", "--tiny", "--dataset-steps", "2000", "--offline",
            "--logdir", str(logdir)]
    assert train_mod.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and len(summary["final_return_mean"]) == 1
    assert np.isfinite(summary["final_normalized_score"][0])
    config = json.loads((logdir / "config.json").read_text())
    assert config["jax_version"] == jax.__version__ and config["config"]["rollout_length"] == 5
    rows = [json.loads(ln) for ln in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "eval_return" in rows[-1]
    results = json.loads((logdir / "results.json").read_text())
    assert results["final_return_mean"] == summary["final_return_mean"]
    assert (logdir / "checkpoint.msgpack").exists() and (logdir / "checkpoint.json").exists()
    assert len(list((data_dirs / "cache" / "models").glob("hopper-random-n2000-seed0-*.msgpack"))) == 1


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
