"""Dataset dims against the evaluation env: Minari's 105-dim Ant data cut to MOPO's 27 dims on
load (logged, never mixed with uncut data through the flat cache), and data whose dims do not fit
the env refused before any fit or write (library check and the train command)."""

import dataclasses
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mopo_jax import paths
from mopo_jax.data import minari_io
from mopo_jax.data.flat import check_env_dims, env_dims
from mopo_jax.data.load import DatasetError, load_dataset
from mopo_jax.envs.make import make_env
from mopo_jax.types import Transitions

EPISODE_STEPS = 25
CUT_LINE = "mujoco/ant/random-v0: observation dims 105 -> 27"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, part: str) -> list[str]:
        return [r.getMessage() for r in self.records if part in r.getMessage()]


@pytest.fixture
def data_log():
    """Records of the 'mopo_jax.data' logger at INFO, whatever the root logger's set-up."""
    logger, handler = logging.getLogger("mopo_jax.data"), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def write_minari(dataset_id: str, env_id: str, episodes: int = 2, **env_kwargs) -> list:
    """Write `episodes` truncated episodes of EPISODE_STEPS uniform random steps of
    make_env(env_id, **env_kwargs) as Minari dataset `dataset_id` (as a Minari download would
    leave it); returns each episode's (observations [T+1, o], actions [T, a])."""
    import minari
    from minari.data_collector import EpisodeBuffer

    env = make_env(env_id, **env_kwargs)
    env.action_space.seed(0)
    buffers, raw = [], []
    for i in range(episodes):
        obs = [env.reset(seed=i)[0]]
        actions, rewards = [], []
        for _ in range(EPISODE_STEPS):
            actions.append(env.action_space.sample())
            step = env.step(actions[-1])
            obs.append(step[0])
            rewards.append(step[1])
        ends = np.zeros(EPISODE_STEPS, bool)
        buffers.append(EpisodeBuffer(id=i, seed=i, observations=np.asarray(obs),
                                     actions=np.asarray(actions), rewards=np.asarray(rewards),
                                     terminations=ends, truncations=np.r_[ends[1:], True]))
        raw.append((np.asarray(obs), np.asarray(actions)))
    with pytest.warns(UserWarning):  # Minari asks for an author email; none here
        minari.create_dataset_from_buffers(dataset_id, buffers, env=env, eval_env=env,
                                           algorithm_name="random", author="test",
                                           description="test data")
    env.close()
    return raw


def test_minari_105_dim_ant_loads_as_mopo_27_dims(fresh, data_log):
    raw = write_minari("mujoco/ant/random-v0", "Ant-v5", include_cfrc_ext_in_observation=True)
    assert raw[0][0].shape == (EPISODE_STEPS + 1, 105)
    ds = load_dataset("ant-random")
    assert ds.info.minari_id == "mujoco/ant/random-v0" and ds.size == 2 * EPISODE_STEPS
    assert ds.observations.shape == ds.next_observations.shape == (ds.size, 27)
    assert ds.observations.flags.c_contiguous and ds.observations.dtype == np.float32
    source = np.concatenate([obs[:-1] for obs, _ in raw]).astype(np.float32)
    following = np.concatenate([obs[1:] for obs, _ in raw]).astype(np.float32)
    np.testing.assert_array_equal(ds.observations, source[:, :27])
    np.testing.assert_array_equal(ds.next_observations, following[:, :27])
    lines = data_log.messages("105 -> 27")
    assert len(lines) == 1 and lines[0].startswith(CUT_LINE), lines
    assert {r.name for r in data_log.records if "105 -> 27" in r.getMessage()} == {"mopo_jax.data"}
    assert "include_cfrc_ext_in_observation=True" in lines[0] and "qpos[2:]" in lines[0]
    check_env_dims(ds, ds.info)  # the cut data fit the 27-dim evaluation env
    # ... and they are what that env observes: replaying the actions from the same reset seeds
    env = make_env("Ant-v5")
    obs, _ = env.reset(seed=1)
    replay = [obs] + [env.step(a)[0] for a in raw[1][1]]
    np.testing.assert_array_equal(ds.observations[EPISODE_STEPS:], np.float32(replay[:-1]))
    env.close()


def test_flat_cache_never_mixes_cut_and_uncut_data(fresh, data_log):
    write_minari("mujoco/ant/random-v0", "Ant-v5", include_cfrc_ext_in_observation=True)
    first = load_dataset("ant-random")
    cache = paths.flat_cache_path("mujoco/ant/random-v0")
    with np.load(cache) as npz:  # the cache holds the cut arrays, marked as cut
        assert npz["observations"].shape[1] == 27 and int(npz["cut_from"]) == 105
    data_log.records.clear()
    again = load_dataset("ant-random")  # from the cache: same arrays, the line again
    np.testing.assert_array_equal(again.observations, first.observations)
    assert again.info.data_stamp == first.info.data_stamp
    assert len(data_log.messages(CUT_LINE)) == 1
    # a cache written before the cut existed (uncut, same file stamp) is cut on load too
    arrays = minari_io.read_flat("mujoco/ant/random-v0")
    with np.load(cache) as npz:
        stamp = npz["stamp"]
    np.savez(cache, stamp=stamp, **arrays)
    old = load_dataset("ant-random")
    np.testing.assert_array_equal(old.observations, first.observations)
    assert old.info.data_stamp == first.info.data_stamp
    # models cached for uncut data never match the cut data
    from mopo_jax.data.flat import data_stamp

    assert first.info.data_stamp != data_stamp("mujoco/ant/random-v0")


def test_data_that_do_not_fit_the_env_are_refused_naming_both_shapes(hopper_small):
    check_env_dims(hopper_small, hopper_small.info)  # hopper data fit Hopper-v5
    check_env_dims(hopper_small.transitions(), hopper_small.info)
    assert env_dims("Walker2d-v5") == (17, 6) and env_dims("Ant-v5") == (27, 8)
    as_walker = dataclasses.replace(hopper_small.info, name="walker2d-random", env_id="Walker2d-v5")
    with pytest.raises(DatasetError) as err:
        check_env_dims(hopper_small, as_walker)
    message = str(err.value)
    assert "observations [N, 11] vs [N, 17]" in message and "actions [N, 3] vs [N, 6]" in message
    assert "'walker2d-random'" in message and hopper_small.info.path in message
    assert "Walker2d-v5 (observation (17,), action (6,))" in message and "\n" not in message
    t = hopper_small.transitions()
    wrong_action = Transitions(t.observations, t.actions[:, :2], t.rewards, t.next_observations,
                               t.terminations)
    with pytest.raises(DatasetError, match=r"actions \[N, 2\] vs \[N, 3\]") as err:
        check_env_dims(wrong_action, hopper_small.info)
    assert "observations" not in str(err.value).split(":")[1]  # only the misfit is named


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def test_train_refuses_wrong_dims_before_any_fit_or_write(hopper_small, tmp_path):
    """Hopper data (11 obs dims, 3 actions) under walker2d's name: exit 2 with one error line,
    no model fitted or cached and no run file written."""
    minari_root, cache = tmp_path / "minari", tmp_path / "cache"
    shutil.copytree(hopper_small.info.path, minari_root / "mujoco" / "walker2d" / "random-v0")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_root), MOPO_JAX_CACHE_DIR=str(cache),
               MOPO_JAX_OFFLINE="1", JAX_PLATFORMS="cpu")
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "mopo_jax.train", "--dataset", "walker2d-random",
                           "--tiny", "--offline", "--epochs", "1", "--no-progress",
                           "--dataset-steps", "500", "--logdir", str(run_dir)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "dynamics" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "observations [N, 11] vs [N, 17]" in errors[0] and "actions [N, 3] vs [N, 6]" in errors[0]
    assert "mujoco/walker2d/random-v0" in errors[0]
    assert _files(run_dir) in ([], [".lock"])  # the run lock only, no run file
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())
    assert [p for p in _files(cache) if not p.startswith("flat-")] == []


def test_dynamics_command_refuses_wrong_dims_before_its_fit(hopper_small, fresh, capsys):
    from mopo_jax.cli.dynamics import main

    shutil.copytree(hopper_small.info.path, fresh / "minari" / "mujoco" / "walker2d" / "random-v0")
    assert main(["--dataset", "walker2d-random", "--offline", "--num-steps", "200"]) == 2
    captured = capsys.readouterr()
    assert "fitting" not in captured.out
    assert "error: " in captured.err and "observations [N, 11] vs [N, 17]" in captured.err
    assert not paths.model_cache_dir().exists()
