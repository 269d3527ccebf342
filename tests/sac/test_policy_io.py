"""Saved policies: save_policy / load_policy round trips and the shipped behaviour policies."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.checkpoint import save_pytree
from mopo_jax.paths import shipped_policy_dir
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.policy import deterministic_action, sample_action
from mopo_jax.sac.policy_io import Policy, load_policy, save_policy
from mopo_jax.sac.update import init_sac

OBS_DIM, ACT_DIM = 5, 2


@pytest.fixture(scope="module")
def state_and_config():
    config = SACConfig(hidden_sizes=(16, 8), log_std_min=-3.0, log_std_max=0.5)
    init = jax.jit(init_sac, static_argnums=(1, 2, 3))  # one compile beats eager dispatch here
    return init(jax.random.key(1), OBS_DIM, ACT_DIM, config), config


def test_round_trip_gives_the_training_actors_actions(tmp_path, state_and_config):
    state, config = state_and_config
    save_policy(tmp_path / "pol", state.actor_params, config, {"policy": "h5-lam1-seed0", "epoch": 7,
                                                               "normalized_score": 41.5})
    policy = load_policy(tmp_path / "pol")
    assert isinstance(policy, Policy)
    obs = jax.random.normal(jax.random.key(2), (9, OBS_DIM))
    for got, want in zip(jax.tree.leaves(policy.params), jax.tree.leaves(state.actor_params)):
        np.testing.assert_array_equal(got, want)
    # The policy is jitted; eager reference values may differ in the last float32 bit.
    np.testing.assert_allclose(policy(obs), deterministic_action(state.actor_params, obs),
                               rtol=1e-6, atol=1e-6)
    key = jax.random.key(3)
    np.testing.assert_allclose(policy.sample(obs, key),
                               sample_action(state.actor_params, obs, key, config),
                               rtol=1e-6, atol=1e-6)
    assert policy(obs).shape == (9, ACT_DIM)
    assert policy.sac_config == config
    meta = policy.metadata
    assert (meta["policy"], meta["epoch"], meta["normalized_score"]) == ("h5-lam1-seed0", 7, 41.5)
    assert (meta["obs_dim"], meta["act_dim"], meta["hidden_sizes"]) == (OBS_DIM, ACT_DIM, [16, 8])
    on_disk = json.loads((tmp_path / "pol.json").read_text())
    assert on_disk["sac"]["log_std_min"] == -3.0 and on_disk["sac"]["log_std_max"] == 0.5
    assert (tmp_path / "pol.msgpack").exists()


def test_sample_uses_the_saved_log_std_bounds(tmp_path, state_and_config):
    """With log_std_min ≈ log_std_max the std is fixed, so the sample is tanh(μ + e^b·ε)."""
    state, trained = state_and_config
    config = SACConfig(hidden_sizes=trained.hidden_sizes, log_std_min=-1.0, log_std_max=-0.999)
    save_policy(tmp_path / "p", state.actor_params, config, {})
    policy = load_policy(tmp_path / "p")
    obs, key = jnp.ones((4, OBS_DIM)), jax.random.key(5)
    mean = jnp.arctanh(policy(obs))
    u = jnp.arctanh(policy.sample(obs, key))
    std = jnp.abs(u - mean) / jnp.abs(jax.random.normal(key, mean.shape))
    np.testing.assert_allclose(std, np.exp(-1.0), rtol=2e-3)


def test_stacked_params_and_reserved_keys_are_rejected(tmp_path, state_and_config):
    state, config = state_and_config
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), state.actor_params)
    with pytest.raises(ValueError, match="unstacked"):
        save_policy(tmp_path / "s", stacked, config, {})
    with pytest.raises(ValueError, match="reserved"):
        save_policy(tmp_path / "s", state.actor_params, config, {"obs_dim": 3})
    assert not (tmp_path / "s.json").exists()


def test_non_policy_checkpoint_is_a_clear_error(tmp_path):
    save_pytree(tmp_path / "x", {"a": np.zeros(2)}, {"kind": "something else"})
    with pytest.raises(ValueError, match="not a policy file"):
        load_policy(tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing")


@pytest.mark.parametrize("level", ["medium", "expert"])
def test_shipped_behaviour_policies_load(level):
    policy = load_policy(shipped_policy_dir() / f"hopper-{level}")
    assert policy.metadata["level"] == level and policy.sac_config.hidden_sizes == (256, 256)
    action = policy(np.zeros((3, 11), np.float32))
    assert action.shape == (3, 3) and bool(jnp.all(jnp.abs(action) <= 1.0))


@pytest.mark.parametrize("name", sorted(p.stem for p in shipped_policy_dir().glob("*.json")))
def test_the_one_writer_reproduces_every_shipped_policy_byte_for_byte(name, tmp_path):
    """save_policy (which export_policy uses) writes the shipped files' exact bytes back from what
    load_policy reads: one file format for run policies and exported behaviour policies."""
    shipped = shipped_policy_dir() / name
    policy = load_policy(shipped)
    reserved = ("sac", "obs_dim", "act_dim", "hidden_sizes")
    meta = {k: v for k, v in policy.metadata.items() if k not in reserved}
    written = save_policy(tmp_path / name, policy.params, policy.sac_config, meta)
    assert written == policy.metadata
    for suffix in (".json", ".msgpack"):
        assert (tmp_path / f"{name}{suffix}").read_bytes() == shipped.with_suffix(suffix).read_bytes()
