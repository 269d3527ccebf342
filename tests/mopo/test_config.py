"""Presets: the paper's (h, λ) per dataset, the original's target entropy −3, and config validation."""

import dataclasses

import pytest

from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.envs.catalog import dataset_names
from mopo_jax.mopo.config import (PAPER_PRESETS, TrainConfig, config_from_dict, config_to_dict,
                                  preset, tiny)
from mopo_jax.sac.config import SACConfig


def test_paper_presets_and_target_entropy():
    assert preset("walker2d-medium-replay").rollout_length == 1
    assert preset("hopper-medium").penalty_coef == 5.0
    assert len(PAPER_PRESETS) == 12
    for name in dataset_names():
        config = preset(name)
        assert config.sac.target_entropy == -3.0, name  # the original's base config, every env
        if name not in PAPER_PRESETS:
            assert (config.rollout_length, config.penalty_coef) == (5, 1.0)
    assert preset("hopper-random", penalty_coef=0.3).penalty_coef == 0.3
    assert preset("hopper-random").buffer_capacity == 5 * 50_000 * 5
    assert tiny().sac.target_entropy == -3.0
    with pytest.raises(ValueError, match="Valid names"):
        preset("hopper-nothing")


@pytest.mark.parametrize("field,value,message", [
    ("real_ratio", 1.5, "real_ratio=1.5"), ("rollout_length", 0, "rollout_length=0"),
    ("epochs", 0, "epochs=0"), ("eval_every", 0, "eval_every=0"),
    ("penalty_coef", float("inf"), "penalty_coef=inf"), ("penalty_coef", float("nan"), "penalty_coef=nan"),
    ("penalty", "max", "penalty='max'"), ("dataset", "hopper-nothing", "dataset='hopper-nothing'"),
])
def test_invalid_train_config_names_field_value_and_range(field, value, message):
    with pytest.raises(ValueError, match="invalid TrainConfig") as err:
        dataclasses.replace(TrainConfig(), **{field: value})
    assert message in str(err.value) and "need" in str(err.value)


def test_invalid_sub_configs():
    with pytest.raises(ValueError, match="num_elites=8, num_members=7"):
        DynamicsConfig(num_elites=8)
    with pytest.raises(ValueError, match="gamma=1.5"):
        SACConfig(gamma=1.5)
    with pytest.raises(ValueError, match="hidden_weight_decays has 1 entries"):
        DynamicsConfig(hidden_weight_decays=(1e-4,))


def test_config_dict_round_trip():
    config = tiny("walker2d-medium", penalty_coef=2.5)
    assert config_from_dict(config_to_dict(config)) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        config_from_dict({**config_to_dict(config), "bogus": 1})
