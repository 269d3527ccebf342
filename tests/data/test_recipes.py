"""Local builds of the policy-based levels and the OOD tasks through `load_dataset`: medium/expert from a
policy file, medium-expert = medium + expert, medium-replay and halfcheetah-jump from a behaviour run."""

import json
import shutil

import jax
import numpy as np
import pytest

from mopo_jax import checkpoint, paths
from mopo_jax.behavior.config import BehaviorConfig
from mopo_jax.behavior.train import train_behavior
from mopo_jax.envs.catalog import ENVS
from mopo_jax.data.load import DatasetError, episode_returns, load_dataset
from mopo_jax.paths import BEHAVIOR_DIR_ENV_VAR, POLICY_DIR_ENV_VAR
from mopo_jax.data.collect import collect_policy_steps
from mopo_jax.data.recipes import shipped_policies
from mopo_jax.behavior.artifacts import HISTORY_FIELDS, export_policy, history_extras, load_history
from mopo_jax.envs.ood import halfcheetah_jump_reward
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.update import init_sac

SAC = SACConfig(hidden_sizes=(16, 16), batch_size=16)


def _write_policy(prefix, env_id, obs_dim, act_dim, level, step, seed):
    """A policy file in the exported format (an untrained but real actor network)."""
    params = init_sac(jax.random.key(seed), obs_dim, act_dim, SAC).actor_params
    sac = json.loads(json.dumps(SAC.__dict__))
    checkpoint.save_pytree(prefix, params, {"env_id": env_id, "level": level, "step": step,
                                            "obs_dim": obs_dim, "act_dim": act_dim, "sac": sac,
                                            "hidden_sizes": list(SAC.hidden_sizes),
                                            "return_mean": 1.0})
    return params


def _description(dataset) -> str:
    """The description a local build wrote into its Minari metadata."""
    import minari

    return minari.load_dataset(dataset.info.minari_id).storage.metadata["description"]


@pytest.fixture(scope="module")
def dirs(data_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("levels")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(POLICY_DIR_ENV_VAR, str(root / "policies"))
        mp.setenv(BEHAVIOR_DIR_ENV_VAR, str(root / "behavior"))
        yield root


def test_policy_levels_and_medium_expert(dirs, tmp_path, monkeypatch):
    with monkeypatch.context() as mp:  # as if nothing were shipped
        mp.setattr(paths, "shipped_policy_dir", lambda: tmp_path / "nothing-shipped")
        with pytest.raises(DatasetError, match="No behaviour policy ant-medium"):
            load_dataset("ant-medium", num_steps=300)
    (dirs / "policies").mkdir()  # these shadow the shipped hopper policies: $MOPO_JAX_POLICY_DIR wins
    params = _write_policy(dirs / "policies" / "hopper-medium", "Hopper-v5", 11, 3, "medium", 400, 0)
    _write_policy(dirs / "policies" / "hopper-expert", "Hopper-v5", 11, 3, "expert", 900, 1)
    medium = load_dataset("hopper-medium", num_steps=300)
    assert medium.observations.shape == (300, 11) and medium.actions.shape == (300, 3)
    assert medium.info.source == "built locally" and medium.info.minari_id == "mopo_jax/hopper/medium-n300-v0"
    assert np.all(np.abs(medium.actions) <= 1.0)
    # The data is the policy's: the same seeds give the same actions; observations chain within episodes.
    again = collect_policy_steps("Hopper-v5", params, 300)
    np.testing.assert_allclose(medium.actions, again["actions"], rtol=1e-6)
    inside = medium.episode_ends[:-1] == 0
    np.testing.assert_array_equal(medium.next_observations[:-1][inside], medium.observations[1:][inside])
    both = load_dataset("hopper-medium-expert", num_steps=600)
    assert both.size == 600
    np.testing.assert_array_equal(both.observations[:300], medium.observations)
    expert = load_dataset("hopper-expert", num_steps=300)
    np.testing.assert_array_equal(both.actions[300:], expert.actions)
    assert both.episode_ends[299] == 1 and both.info.num_episodes == medium.info.num_episodes + expert.info.num_episodes
    import minari
    description = minari.load_dataset(medium.info.minari_id).storage.metadata["description"]
    assert "300 steps of the medium behaviour policy hopper-medium" in description


def test_history_levels_from_a_behaviour_run(dirs):
    with pytest.raises(DatasetError, match="training history of the behaviour run 'halfcheetah-vel3'"):
        load_dataset("halfcheetah-jump")
    cfg = BehaviorConfig(env_id="HalfCheetah-v5", total_steps=600, start_steps=200, update_every=50,
                         eval_every=300, eval_episodes=1, seed=0, max_episode_steps=150, sac=SAC)
    train_behavior(cfg, dirs / "behavior" / "halfcheetah-vel3")
    jump = load_dataset("halfcheetah-jump")
    assert jump.size == 600 and jump.info.task == "halfcheetah-jump"
    assert np.isnan(jump.info.ref_min_score) and "raw returns" in jump.info.ref_source
    # The rewards are the target reward of the run's own transitions and recorded extras (exact
    # rootx displacement, the episode's reset height); the env's rewards were not these.
    history = load_history(dirs / "behavior" / "halfcheetah-vel3")
    expected = halfcheetah_jump_reward(history["observations"], history["actions"],
                                       history["next_observations"], history_extras(history))
    np.testing.assert_allclose(jump.rewards, np.asarray(expected), rtol=1e-5, atol=1e-5)
    assert np.abs(jump.rewards - history["rewards"]).mean() > 0.1
    assert jump.info.num_episodes == 4 and jump.truncations.sum() == 4 and jump.terminations.sum() == 0
    assert np.isfinite(episode_returns(jump)).all()
    # medium-replay = the history of the run '<env>' up to the medium policy's step, rewards as run.
    shutil.copytree(dirs / "behavior" / "halfcheetah-vel3", dirs / "behavior" / "halfcheetah")
    _write_policy(dirs / "policies" / "halfcheetah-medium", "HalfCheetah-v5", 17, 6, "medium", 900, 2)
    with pytest.raises(DatasetError, match="holds 600 steps; 900 are needed: resume that run"):
        load_dataset("halfcheetah-medium-replay")
    _write_policy(dirs / "policies" / "halfcheetah-medium", "HalfCheetah-v5", 17, 6, "medium", 450, 2)
    replay = load_dataset("halfcheetah-medium-replay")
    assert replay.size == 450 and replay.truncations[-1] == 1 and replay.info.task == ""
    with np.load(dirs / "behavior" / "halfcheetah" / "history.npz") as raw:
        np.testing.assert_allclose(replay.rewards, raw["rewards"][:450], rtol=1e-6)
        np.testing.assert_allclose(replay.observations, raw["observations"][:450], rtol=1e-6)
    np.testing.assert_allclose(replay.observations, jump.observations[:450])
    # That policy is no snapshot of the run, and the build says so; with the run's own snapshot
    # as its medium policy, the replay is the one that policy came from (a changed input: rebuilt).
    assert "is not the medium policy halfcheetah-medium" in _description(replay)
    export_policy(dirs / "behavior" / "halfcheetah", 300, dirs / "policies" / "halfcheetah-medium",
                  "medium", episodes=1)
    replay = load_dataset("halfcheetah-medium-replay")
    assert replay.size == 300 and "where the medium policy halfcheetah-medium was taken" in _description(replay)
    # A run whose history predates the extras cannot be relabelled: the error says what to do.
    old = dirs / "behavior" / "old" / "halfcheetah-vel3"
    old.mkdir(parents=True)
    np.savez(old / "history.npz", num_steps=np.int64(600), **{k: history[k] for k in HISTORY_FIELDS})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(BEHAVIOR_DIR_ENV_VAR, str(old.parent))
        mp.setenv("MINARI_DATASETS_PATH", str(dirs / "minari-old"))
        with pytest.raises(DatasetError, match=r"lacks per-step extras.*train it again"):
            load_dataset("halfcheetah-jump")


@pytest.mark.parametrize("name", shipped_policies())
def test_shipped_policy_builds_its_dataset(name, tmp_path, monkeypatch):
    """Every policy shipped in the package loads, carries how it was made and what it scored, and
    builds its dataset offline with the right shapes and metadata."""
    from mopo_jax.data.recipes import find_policy
    from mopo_jax.sac.policy_io import load_policy

    monkeypatch.delenv(POLICY_DIR_ENV_VAR, raising=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("MOPO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MOPO_JAX_OFFLINE", "1")
    env, level = name.split("-", 1)
    params, meta, _ = load_policy(find_policy(env, level))
    assert meta["level"] == level and meta["env_id"] == ENVS[env].env_id
    assert len(meta["returns"]) == meta["eval_episodes"] >= 10
    assert meta["return_mean"] == pytest.approx(np.mean(meta["returns"]))
    assert {"training_command", "wall_seconds_to_step", "device", "step"} <= set(meta)
    ds = load_dataset(name, num_steps=200)
    assert ds.observations.shape == (200, params["trunk"]["hidden_0"]["kernel"].shape[0])
    assert ds.actions.shape == (200, params["trunk"]["output"]["kernel"].shape[1] // 2)
    assert ds.info.source == "built locally" and ds.info.env_id == meta["env_id"]
    assert np.isfinite(ds.rewards).all() and np.all(np.abs(ds.actions) <= 1)


def test_rebuild_without_its_inputs_keeps_the_old_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("MOPO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(POLICY_DIR_ENV_VAR, str(tmp_path / "policies"))
    monkeypatch.setattr(paths, "shipped_policy_dir", lambda: tmp_path / "nothing-shipped")
    (tmp_path / "policies").mkdir()
    _write_policy(tmp_path / "policies" / "ant-medium", "Ant-v5", 27, 8, "medium", 400, 3)
    built = load_dataset("ant-medium", num_steps=200, allow_download=False)
    shutil.rmtree(tmp_path / "policies")
    with pytest.raises(DatasetError, match="No behaviour policy ant-medium"):
        load_dataset("ant-medium", num_steps=200, allow_download=False, rebuild=True)
    kept = load_dataset("ant-medium", num_steps=200, allow_download=False)
    assert kept.info.source == "local Minari cache" and kept.info.minari_id == built.info.minari_id
    np.testing.assert_array_equal(kept.actions, built.actions)


def test_a_build_from_a_policy_changed_since_is_built_again(tmp_path, monkeypatch, caplog):
    """Reproducer: re-exporting a policy used to leave its old local dataset in use silently."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("MOPO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(POLICY_DIR_ENV_VAR, str(tmp_path / "policies"))
    monkeypatch.setenv(BEHAVIOR_DIR_ENV_VAR, str(tmp_path / "behavior"))
    monkeypatch.setattr(paths, "shipped_policy_dir", lambda: tmp_path / "nothing-shipped")
    (tmp_path / "policies").mkdir()
    flags = dict(num_steps=200, allow_download=False)
    _write_policy(tmp_path / "policies" / "hopper-medium", "Hopper-v5", 11, 3, "medium", 400, 4)
    _write_policy(tmp_path / "policies" / "hopper-expert", "Hopper-v5", 11, 3, "expert", 900, 5)
    old_expert = load_dataset("hopper-expert", **flags)
    old_both = load_dataset("hopper-medium-expert", num_steps=400, allow_download=False)
    assert load_dataset("hopper-expert", **flags).info.source == "local Minari cache"
    new_params = _write_policy(tmp_path / "policies" / "hopper-expert", "Hopper-v5", 11, 3,
                               "expert", 950, 6)
    with caplog.at_level("WARNING", logger="mopo_jax.data"):
        new_expert = load_dataset("hopper-expert", **flags)
    assert new_expert.info.source == "built locally"
    assert new_expert.info.minari_id == old_expert.info.minari_id
    assert "inputs changed since it was built: policy hopper-expert" in caplog.text
    np.testing.assert_allclose(new_expert.actions,
                               collect_policy_steps("Hopper-v5", new_params, 200)["actions"], rtol=1e-6)
    assert np.abs(new_expert.actions - old_expert.actions).max() > 0.01
    assert load_dataset("hopper-expert", **flags).info.source == "local Minari cache"
    # medium-expert holds the old expert half: it is built again from the new one.
    new_both = load_dataset("hopper-medium-expert", num_steps=400, allow_download=False)
    assert new_both.info.source == "built locally"
    np.testing.assert_array_equal(new_both.actions[:200], old_both.actions[:200])
    np.testing.assert_array_equal(new_both.actions[200:], new_expert.actions)
    # A policy that is gone cannot be compared: the copy built from it is kept.
    shutil.rmtree(tmp_path / "policies")
    assert load_dataset("hopper-expert", **flags).info.source == "local Minari cache"


def test_an_ood_build_is_stale_once_its_run_has_grown(tmp_path, monkeypatch):
    from mopo_jax.data.recipes import changed_inputs, input_stamps

    monkeypatch.setenv(BEHAVIOR_DIR_ENV_VAR, str(tmp_path / "behavior"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert input_stamps("halfcheetah", "jump") is None  # no run: nothing to compare
    run = tmp_path / "behavior" / "halfcheetah-vel3"
    run.mkdir(parents=True)
    np.savez(run / "history.npz", num_steps=np.int64(600))
    assert input_stamps("halfcheetah", "jump") == {"history halfcheetah-vel3": "600"}
    assert input_stamps("halfcheetah", "random") == {}
    meta = tmp_path / "minari" / "mopo_jax" / "halfcheetah" / "jump-v0" / "data" / "metadata.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"mopo_jax_inputs": {"history halfcheetah-vel3": "600"}}))
    assert changed_inputs("mopo_jax/halfcheetah/jump-v0", "halfcheetah-jump") == []
    np.savez(run / "history.npz", num_steps=np.int64(900))
    assert changed_inputs("mopo_jax/halfcheetah/jump-v0", "halfcheetah-jump") == [
        "history halfcheetah-vel3 (built from 600, now 900)"]
    meta.write_text(json.dumps({}))  # a build that predates the record is not second-guessed
    assert changed_inputs("mopo_jax/halfcheetah/jump-v0", "halfcheetah-jump") == []
