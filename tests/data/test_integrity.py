"""Damaged and interrupted local datasets, downloads into a temporary root, bad numbers, the flat
cache, --rebuild, and dataset names in Minari and D4RL form."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mopo_jax import paths
from mopo_jax.data import recipes
from mopo_jax.data.load import DatasetError, load_dataset
from mopo_jax.envs.catalog import resolve_name

SMALL_STEPS = 5000  # rows of the conftest fixture hopper_small


@pytest.fixture
def data_log(caplog):
    """Records of the 'mopo_jax.data' logger (the CLI's setup_logging stops propagation to root)."""
    logger = logging.getLogger("mopo_jax.data")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _hidden(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_truncated_file_is_not_a_dataset_and_is_rebuilt_with_a_warning(data_dirs, data_log):
    ds = load_dataset("walker2d-random", num_steps=300)
    data_file = os.path.join(ds.info.path, "data", "main_data.hdf5")
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 3)
    fixed = load_dataset("walker2d-random", num_steps=300)
    assert fixed.info.source == "built locally"
    np.testing.assert_array_equal(fixed.observations, ds.observations)
    assert f"ignoring mopo_jax/walker2d/random-n300-v0 at {ds.info.path}" in data_log.text
    with h5py.File(data_file, "r+") as f:  # opens, but an episode cannot be read
        del f["episode_1/rewards"]
    with pytest.raises(DatasetError, match=r"cannot be read.*corrupt or truncated.*--rebuild") as err:
        load_dataset("walker2d-random", num_steps=300)
    assert ds.info.path in str(err.value)
    fixed = load_dataset("walker2d-random", num_steps=300, rebuild=True)
    np.testing.assert_array_equal(fixed.observations, ds.observations)


def test_interrupted_download_folder_is_not_a_dataset_and_rebuild_clears_it(fresh, data_log):
    for minari_id in ("mujoco/hopper/random-v0", "mopo_jax/hopper/random-n200-v0"):
        data = fresh / "minari" / minari_id / "data"  # what a killed download leaves
        data.mkdir(parents=True)
        (data / "metadata.json").write_text(json.dumps({"total_episodes": 9, "data_format": "hdf5"}))
    ds = load_dataset("hopper-random", num_steps=200)
    assert ds.info.source == "built locally" and ds.info.minari_id == "mopo_jax/hopper/random-n200-v0"
    assert "ignoring mujoco/hopper/random-v0" in data_log.text
    assert load_dataset("hopper-random", num_steps=200).info.source == "local Minari cache"
    load_dataset("hopper-random", num_steps=200, rebuild=True)
    assert not (fresh / "minari" / "mujoco" / "hopper" / "random-v0").exists()
    assert "--rebuild: removing the broken mujoco/hopper/random-v0" in data_log.text


def test_dataset_folder_without_data_is_replaced_by_the_build(fresh):
    (fresh / "minari" / "mopo_jax" / "hopper" / "random-n200-v0").mkdir(parents=True)
    ds = load_dataset("hopper-random", num_steps=200)
    assert ds.size == 200 and ds.info.source == "built locally"
    assert not _hidden(fresh / "minari")


FAKE_MINARI = """
import os, pathlib, shutil, time
def list_remote_datasets(prefix, **kwargs):
    return {prefix + "-v0": {}}
def download_dataset(dataset_id):
    dest = pathlib.Path(os.environ["MINARI_DATASETS_PATH"]) / dataset_id
    if os.environ.get("FAKE_MINARI_SOURCE"):
        shutil.copytree(os.environ["FAKE_MINARI_SOURCE"], dest)
        return
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "metadata.json").write_text('{"total_episodes": 9}')
    time.sleep(60)  # killed here by the download timeout
"""


def test_killed_download_leaves_nothing_and_the_fallback_is_loud(fresh, monkeypatch, data_log):
    (fresh / "fake").mkdir()
    (fresh / "fake" / "minari.py").write_text(FAKE_MINARI)  # the child's `import minari` finds it
    monkeypatch.setenv("PYTHONPATH", str(fresh / "fake"))
    ds = load_dataset("hopper-random", num_steps=200, allow_download=True, download_timeout_s=3)
    assert ds.info.source == "built locally (download failed: no complete answer in 3 s)"
    warned = [r for r in data_log.records if r.levelno == logging.WARNING]
    assert any("Minari download of mujoco/hopper/random-v* failed" in r.getMessage() for r in warned)
    root = fresh / "minari"
    assert not (root / "mujoco" / "hopper" / "random-v0").exists() and not _hidden(root)
    monkeypatch.setenv("FAKE_MINARI_SOURCE", ds.info.path)  # now the download completes
    got = load_dataset("hopper-random", num_steps=200, allow_download=True, rebuild=True,
                       download_timeout_s=60)
    assert (got.info.source, got.info.minari_id) == ("Minari download", "mujoco/hopper/random-v0")
    np.testing.assert_array_equal(got.observations, ds.observations)
    assert not _hidden(root)


def test_no_download_is_tried_or_suggested_for_levels_minari_lacks(fresh, monkeypatch):
    (fresh / "fake").mkdir()
    (fresh / "fake" / "minari.py").write_text(
        f"open({str(fresh / 'tried')!r}, 'w').close()\n" + FAKE_MINARI)
    monkeypatch.setenv("PYTHONPATH", str(fresh / "fake"))
    with pytest.raises(DatasetError, match="training history of the behaviour run") as err:
        load_dataset("hopper-medium-replay", allow_download=True, download_timeout_s=10)
    assert "minari download" not in str(err.value) and "mujoco/" not in str(err.value)
    assert not (fresh / "tried").exists()


@pytest.mark.parametrize("field,index,value,rows,cols", [
    ("observations", (5, slice(2, 4)), np.nan, [5], [2, 3]),  # 16 bytes of NaN
    ("rewards", (7,), 1e30, [7], [0]),
    ("actions", (3, 1), 5.0, [3], [1]),
])
def test_bad_numbers_are_refused_then_rebuild_fixes_them(fresh, field, index, value, rows, cols):
    ds = load_dataset("hopper-random", num_steps=200)
    with h5py.File(Path(ds.info.path) / "data" / "main_data.hdf5", "r+") as f:
        f[f"episode_0/{field}"][index] = value
    where = re.escape(f"first bad rows {rows}, columns {cols}.")
    with pytest.raises(DatasetError, match=rf"'{field}'.*{where} .*--dataset hopper-random --rebuild"):
        load_dataset("hopper-random", num_steps=200)
    fixed = load_dataset("hopper-random", num_steps=200, rebuild=True)
    np.testing.assert_array_equal(getattr(fixed, field), getattr(ds, field))


def test_rebuild_removes_a_damaged_official_copy(fresh):
    ours = load_dataset("hopper-random", num_steps=200)
    official = fresh / "minari" / "mujoco" / "hopper" / "random-v0"
    shutil.copytree(ours.info.path, official)  # stands for a download that was damaged later
    with h5py.File(official / "data" / "main_data.hdf5", "r+") as f:
        f["episode_0/rewards"][2] = np.inf
    with pytest.raises(DatasetError, match="mujoco/hopper/random-v0 .* bad values in 'rewards'"):
        load_dataset("hopper-random", num_steps=200)
    load_dataset("hopper-random", num_steps=200, rebuild=True)
    assert not official.exists()
    assert load_dataset("hopper-random", num_steps=200).info.minari_id == ours.info.minari_id


def test_a_flat_cache_with_bad_numbers_is_re_read(fresh):
    ds = load_dataset("hopper-random", num_steps=200)
    cache = paths.flat_cache_path(ds.info.minari_id)
    with np.load(cache) as npz:
        arrays = dict(npz)
    arrays["observations"][4, 1] = np.nan  # what code without the value check could have cached
    np.savez(cache, **arrays)
    again = load_dataset("hopper-random", num_steps=200)
    np.testing.assert_array_equal(again.observations, ds.observations)


def test_rebuild_never_serves_the_old_flat_cache(fresh, monkeypatch):
    ds = load_dataset("hopper-random", num_steps=200)
    data_dir = Path(ds.info.path) / "data"
    old = {f.name: f.stat() for f in data_dir.iterdir()}
    cache = paths.flat_cache_path(ds.info.minari_id)
    with np.load(cache) as npz:
        arrays = dict(npz)
    arrays["rewards"] = arrays["rewards"] + 1.0  # stands for the old build's (other) data
    np.savez(cache, **arrays)
    np.testing.assert_array_equal(load_dataset("hopper-random", num_steps=200).rewards,
                                  ds.rewards + 1.0)  # the cache is what a plain load serves

    real_write = recipes.write_minari_dataset

    def write_keeping_times(*args, **kwargs):  # a coarse clock: the new files get the old mtimes
        folder = real_write(*args, **kwargs)
        for f in (folder / "data").iterdir():
            os.utime(f, ns=(old[f.name].st_atime_ns, old[f.name].st_mtime_ns))
        return folder

    monkeypatch.setattr(recipes, "write_minari_dataset", write_keeping_times)
    fixed = load_dataset("hopper-random", num_steps=200, rebuild=True)
    assert {f.name: f.stat().st_size for f in data_dir.iterdir()} == {k: v.st_size for k, v in old.items()}
    np.testing.assert_array_equal(fixed.rewards, ds.rewards)


def test_rebuild_of_one_size_keeps_the_other_sizes(fresh):
    big = load_dataset("hopper-random", num_steps=400)
    load_dataset("hopper-random", num_steps=200)
    load_dataset("hopper-random", num_steps=200, rebuild=True)
    again = load_dataset("hopper-random", num_steps=400)
    assert again.info.source == "local Minari cache" and again.info.minari_id == big.info.minari_id
    np.testing.assert_array_equal(again.observations, big.observations)


def test_minari_ids_and_d4rl_names_resolve(hopper_small, data_log):
    assert resolve_name("mujoco/hopper/medium-v0") == ("hopper-medium", None)
    assert resolve_name("mopo_jax/halfcheetah/jump-v0") == ("halfcheetah-jump", None)
    name, note = resolve_name("hopper-medium-replay-v0")
    assert name == "hopper-medium-replay" and "D4RL" in note and "Hopper-v5" in note
    with pytest.raises(ValueError, match="mujoco/ namespace holds the levels random, medium, expert"):
        resolve_name("mujoco/hopper/medium-replay-v0")
    for alias in ("mopo_jax/hopper/random-v0", "hopper-random-v2", "mujoco/hopper/random-v0"):
        ds = load_dataset(alias, num_steps=SMALL_STEPS)
        assert ds.info.name == "hopper-random"
        np.testing.assert_array_equal(ds.observations, hopper_small.observations)
    assert "'hopper-random-v2' is a D4RL name; loading this project's 'hopper-random'" in data_log.text


def test_module_cli_prints_a_clean_error_for_an_inner_dataset_error(tmp_path):
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp_path / "minari"),
               MOPO_JAX_CACHE_DIR=str(tmp_path / "cache"), MOPO_JAX_OFFLINE="1")
    env["MOPO_JAX_BEHAVIOR_DIR"] = str(tmp_path / "behavior")  # no behaviour runs there
    proc = subprocess.run([sys.executable, "-m", "mopo_jax.data", "--dataset",
                           "halfcheetah-jump", "--num-steps", "200"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "behaviour run 'halfcheetah-vel3'" in error[0]
    assert "--reward halfcheetah-vel3" in error[0]  # the remedy
    assert "Minari has no such dataset, so no download was tried" in error[0]
