"""Dataset names, local builds, flat loading, caching and the promised errors."""

import numpy as np
import pytest

from mopo_jax import paths
from mopo_jax.cli.data import main as data_main
from mopo_jax.data.collect import collect_random_steps
from mopo_jax.data.load import DatasetError, episode_returns, load_dataset
from mopo_jax.envs.catalog import parse_dataset_name
from mopo_jax.envs.termination import termination_fn

SMALL_STEPS = 5000  # rows of the conftest fixture hopper_small


def test_names_resolve_and_bad_names_list_valid_ones():
    assert parse_dataset_name("hopper-medium-replay") == ("hopper", "medium-replay")
    assert parse_dataset_name("HalfCheetah-Random") == ("halfcheetah", "random")
    with pytest.raises(ValueError, match="Valid names: .*walker2d-medium-expert"):
        parse_dataset_name("hopper-mediocre")
    with pytest.raises(ValueError, match="Unknown dataset 'swimmer-random'"):
        load_dataset("swimmer-random")


def test_arrays_shapes_dtypes_and_metadata(hopper_small):
    ds = hopper_small
    n = SMALL_STEPS
    assert ds.observations.shape == ds.next_observations.shape == (n, 11)
    assert ds.actions.shape == (n, 3)
    for arr in (ds.rewards, ds.terminations, ds.truncations, ds.episode_ends):
        assert arr.shape == (n,)
    for arr in (ds.observations, ds.actions, ds.rewards, ds.terminations, ds.episode_ends):
        assert arr.dtype == np.float32
    assert np.all(np.abs(ds.actions) <= 1.0)
    assert ds.info.source == "built locally" and ds.info.env_id == "Hopper-v5"
    assert ds.info.minari_id == "mopo_jax/hopper/random-n5000-v0"
    assert (ds.info.ref_min_score, ds.info.ref_max_score) == (-20.272305, 3234.3)
    assert "D4RL" in ds.info.ref_source
    t = ds.transitions()
    assert t.observations is ds.observations and t.terminations is ds.terminations


def test_alignment_inside_episodes_and_terminal_rows_end_episodes(hopper_small):
    ds = hopper_small
    inside = ds.episode_ends[:-1] == 0
    np.testing.assert_array_equal(ds.next_observations[:-1][inside], ds.observations[1:][inside])
    assert np.all(ds.episode_ends[ds.terminations == 1] == 1)
    assert np.all((ds.terminations + ds.truncations)[ds.episode_ends == 1] == 1)  # exactly one reason
    assert ds.episode_ends[-1] == 1
    assert ds.info.num_episodes == int(ds.episode_ends.sum()) > 100  # random hopper falls fast
    # The dataset's terminal flags are the env rule applied to next_obs.
    rule = np.asarray(termination_fn("hopper")(ds.observations, ds.actions, ds.next_observations))
    np.testing.assert_array_equal(rule, ds.terminations == 1)
    returns = episode_returns(ds)
    assert returns.shape == (ds.info.num_episodes,)
    np.testing.assert_allclose(returns.sum(), ds.rewards.sum(dtype=np.float64), rtol=1e-6)


def test_second_load_is_cached_and_subset_truncates(hopper_small, data_dirs):
    assert (data_dirs / "cache" / "flat-v2" / "mopo_jax__hopper__random-n5000-v0.npz").exists()
    again = load_dataset("hopper-random", num_steps=SMALL_STEPS)
    assert again.info.source == "local Minari cache"
    np.testing.assert_array_equal(again.observations, hopper_small.observations)
    cut = 1234
    sub = load_dataset("hopper-random", num_steps=cut)
    np.testing.assert_array_equal(sub.rewards, hopper_small.rewards[:cut])
    assert sub.episode_ends[-1] == 1
    assert sub.terminations[-1] == hopper_small.terminations[cut - 1]
    assert sub.truncations[-1] == 1 - sub.terminations[-1]


def test_random_recipe_is_deterministic_and_seeds_episodes():
    a = collect_random_steps("Hopper-v5", 300)
    b = collect_random_steps("Hopper-v5", 300)
    np.testing.assert_array_equal(a["observations"], b["observations"])
    np.testing.assert_array_equal(a["actions"], b["actions"])
    assert a["episode_lengths"].sum() == 300
    assert a["episode_seeds"].tolist() == list(range(123, 123 + len(a["episode_lengths"])))
    assert len(a["observations"]) == 300 + len(a["episode_lengths"])  # T+1 obs per episode


def test_unbuildable_level_offline_names_ids_and_remedy(data_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "shipped_policy_dir", lambda: tmp_path / "nothing-shipped")
    with pytest.raises(DatasetError, match=r"mujoco/ant/medium-v\*.*No behaviour policy "
                       r"ant-medium.*python -m mopo_jax.behavior --env Ant-v5.*minari download"):
        load_dataset("ant-medium")
    with pytest.raises(DatasetError, match=r"mujoco/hopper/simple-v\*.*minari download"):
        load_dataset("hopper-simple")


def test_killed_build_leaves_no_dataset(data_dirs, monkeypatch):
    from minari.dataset.minari_storage import MinariStorage

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed halfway")

    monkeypatch.setattr(MinariStorage, "update_metadata", crash)  # after the files are created
    with pytest.raises(KeyboardInterrupt):
        load_dataset("halfcheetah-random", num_steps=200)
    root = data_dirs / "minari"
    assert not (root / "mopo_jax" / "halfcheetah").exists() or not any(
        (root / "mopo_jax" / "halfcheetah").iterdir())
    assert not [p for p in root.iterdir() if p.name.startswith(".mopo_jax-build")]
    monkeypatch.undo()
    ds = load_dataset("halfcheetah-random", num_steps=200)
    assert ds.size == 200 and ds.terminations.sum() == 0


def test_cli_prints_summary_and_rejects_bad_names(data_dirs, capsys):
    assert data_main(["--dataset", "hopper-random", "--num-steps", "500", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "transitions  500" in out and "dims         obs 11   action 3" in out
    assert "ep. return   mean" in out and "stored at" in out
    assert data_main(["--dataset", "hopper-nope"]) == 2
    assert "Valid names" in capsys.readouterr().err
