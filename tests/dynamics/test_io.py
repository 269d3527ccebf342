"""Ensemble files and the model cache: keys name the dataset's identity, failed fits are errors and
never cached, the dynamics CLI checks --out before fitting and writes what train reads."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.cli.dynamics import main as dynamics_main
from mopo_jax.cli.train import main as train_main
from mopo_jax.data.load import DatasetInfo
from mopo_jax.dynamics import io as dyn_io
from mopo_jax.dynamics.fit import FitFailed, fit
from mopo_jax.mopo.config import tiny

DYN = tiny().dynamics
INFO = DatasetInfo(name="hopper-medium", env_name="hopper", env_id="Hopper-v5", source="x",
                   minari_id="mujoco/hopper/medium-v0", path="/x", num_episodes=3,
                   ref_min_score=0.0, ref_max_score=1.0, ref_source="x", data_stamp="aaaa")


def test_cache_key_names_the_dataset_identity():
    """Issue reproducer: the official download and a local build of the same size got one key."""
    key = dyn_io.cache_key(INFO, 1000, 0, DYN)
    local = dataclasses.replace(INFO, minari_id="mopo_jax/hopper/medium-v0")
    assert dyn_io.cache_key(local, 1000, 0, DYN) != key
    assert dyn_io.cache_key(dataclasses.replace(INFO, data_stamp="bbbb"), 1000, 0, DYN) != key
    assert dyn_io.cache_key(INFO, 999, 0, DYN) != key
    assert dyn_io.cache_key(INFO, 1000, 1, DYN) != key
    assert dyn_io.cache_key(INFO, 1000, 0, dataclasses.replace(DYN, learning_rate=2e-3)) != key
    assert dyn_io.cache_key(INFO, 1000, 0, DYN) == key


def test_a_failed_fit_is_an_error_and_never_cached(hopper_small, data_dirs):
    """Issue reproducer: NaN data gave the untrained initial network, cached and reused."""
    data = jax.tree.map(lambda x: jnp.asarray(x[:600]), hopper_small.transitions())
    bad = data._replace(next_observations=data.next_observations.at[:, 0].set(jnp.nan))
    _, report = fit(jax.random.key(0), bad, DYN)
    assert dyn_io.fit_failures(report)
    info = dataclasses.replace(INFO, data_stamp="nan-data")
    with pytest.raises(FitFailed, match="never reached a finite holdout MSE"):
        dyn_io.fit_or_load(DYN, bad, info, [0])
    assert not list(dyn_io.model_cache_dir().glob("hopper-medium-n600-seed0-*"))


def test_dynamics_cli_checks_out_before_fitting(data_dirs, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "mopo_jax.dynamics", "--dataset", "hopper-random",
                           "--num-steps", "1500", "--offline", "--out", str(not_a_folder / "model")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a writable folder" in proc.stderr and "fitting" not in proc.stdout


def test_train_uses_a_given_ensemble_checked_against_the_config(hopper_small, data_dirs, tmp_path,
                                                                capsys):
    data = jax.tree.map(lambda x: jnp.asarray(x[:2000]), hopper_small.transitions())
    model, _ = fit(jax.random.key(3), data, DYN)
    dyn_io.save(tmp_path / "tiny-model", model, DYN)
    argv = ["--dataset", "hopper-random", "--tiny", "--offline", "--epochs", "1", "--no-progress"]
    assert train_main([*argv, "--dynamics-path", str(tmp_path / "tiny-model"),
                       "--logdir", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dynamics_models"] == [str(tmp_path / "tiny-model")]
    assert dynamics_main(["--dataset", "hopper-random", "--num-steps", "2000", "--offline",
                          "--max-epochs", "1", "--out", str(tmp_path / "default-model")]) == 0
    capsys.readouterr()
    assert train_main([*argv, "--dynamics-path", str(tmp_path / "default-model"),
                       "--logdir", str(tmp_path / "run2")]) == 2
    assert "num_members: file has 7, expected 3" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "metrics.jsonl").exists()
    np.testing.assert_array_equal(dyn_io.load(tmp_path / "tiny-model")[0].elite_idx, model.elite_idx)


def test_the_fit_log_shows_the_patience_and_says_the_end_is_unknown(caplog):
    """Reproducer: the fit printed s/epoch but nothing on when early stopping would end it."""
    import logging

    from mopo_jax.dynamics.fit import EpochInfo
    from mopo_jax.dynamics.io import log_epoch

    info = EpochInfo(3, 0.1, np.ones(2), np.ones(2), 2, 30.0)
    with caplog.at_level(logging.INFO, logger="mopo_jax.dynamics"):
        log_epoch(info, patience=5)
    assert "no improvement for 2 epochs (stops after more than 5 in a row" in caplog.text
    assert "not known in advance" in caplog.text and "10.00 s/epoch" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mopo_jax.dynamics"):  # resumed after epoch 2
        log_epoch(info._replace(epoch=4, seconds=90.0, resumed_from=2))
    assert "90.0 s, 45.00 s/epoch" in caplog.text  # reproducer: read 22.50 (90 s over 4 epochs)
