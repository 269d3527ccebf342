"""Presets: the paper's (h, λ) per dataset, the original's target entropy −3, and config validation."""

import dataclasses
import json

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
    ("epochs", 0, "epochs=0"), ("eval_every", -1, "eval_every=-1"),
    ("eval_every", True, "eval_every=True"), ("final_eval_episodes", -1, "final_eval_episodes=-1"),
    ("rollout_clip", "obs", "rollout_clip='obs'"),
    ("penalty_coef", float("inf"), "penalty_coef=inf"), ("penalty_coef", float("nan"), "penalty_coef=nan"),
    ("penalty", "max", "penalty='max'"), ("dataset", "hopper-nothing", "dataset='hopper-nothing'"),
])
def test_invalid_train_config_names_field_value_and_range(field, value, message):
    with pytest.raises(ValueError, match="invalid TrainConfig") as err:
        dataclasses.replace(TrainConfig(), **{field: value})
    assert message in str(err.value) and "need" in str(err.value)


def test_a_run_that_would_never_be_evaluated_is_refused():
    assert TrainConfig(eval_every=0).final_eval_episodes == 100  # final evaluation only: allowed
    with pytest.raises(ValueError, match="never be evaluated"):
        TrainConfig(eval_every=0, final_eval_episodes=0)


@pytest.mark.parametrize("name", dataset_names())
def test_defaults_are_the_originals_however_the_config_is_made(name, tmp_path):
    """TrainConfig(dataset=...), preset(), the CLI flags and a saved config.json all give the
    dataset's (h, λ), target entropy −3, evaluation every epoch of 10 episodes, 1000 epochs."""
    from mopo_jax.cli.train_flags import parse

    direct = TrainConfig(dataset=name)
    horizon, coef = PAPER_PRESETS.get(name, (5, 1.0))
    assert (direct.rollout_length, direct.penalty_coef) == (horizon, coef)
    assert direct.sac.target_entropy == -3.0
    assert (direct.eval_every, direct.eval_episodes, direct.final_eval_episodes) == (1, 10, 100)
    assert (direct.epochs, direct.steps_per_epoch, direct.rollout_batch_size) == (1000, 1000, 50_000)
    assert direct.rollout_clip == "none" and direct.penalty == "max_std"
    assert preset(name.upper()) == direct
    assert config_from_dict(config_to_dict(direct)) == direct
    cli_config, coefs, lengths, _ = parse(["--dataset", name])
    assert cli_config == direct and coefs == (coef,) and lengths == (horizon,)
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"config": config_to_dict(direct)}))
    assert parse(["--config", str(saved)])[0] == direct


def test_train_config_built_directly_uses_the_original_target_entropy():
    """Reproducer: TrainConfig() used SACConfig()'s −|A| (−6 on walker2d), unlike preset()."""
    assert TrainConfig(dataset="walker2d-random").sac.target_entropy == -3.0
    assert TrainConfig().sac.target_entropy == preset("hopper-random").sac.target_entropy


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


@pytest.mark.parametrize("form", ["hopper-random", "HOPPER-RANDOM", " hopper-random ",
                                  "mujoco/hopper/random-v0", "hopper-random-v2"])
def test_every_name_form_gives_the_same_config(form):
    """Reproducer: train rejected 'hopper-medium-v2', 'mujoco/hopper/random-v0', 'HOPPER-RANDOM'."""
    from mopo_jax.cli.train_flags import parse

    want = TrainConfig(dataset="hopper-random")
    assert TrainConfig(dataset=form) == preset(form) == want
    assert parse(["--dataset", form])[0] == want


@pytest.mark.parametrize("edit,message", [
    ({"config": {"real_ratio": "0.5"}}, "real_ratio='0.5': need float"),
    ({"config": {"eval_every": True}}, "eval_every=True: need int"),
    ({"config": {"sac": {"actor_lr": "fast"}}}, "sac.actor_lr='fast': need float"),
    ({"seed": "zero"}, "seed='zero': need int"),
])
def test_a_config_file_with_wrong_types_names_the_field(edit, message, tmp_path):
    """Reproducer: wrong types in a --config file gave a raw Python error or were accepted."""
    from mopo_jax.cli.train_flags import parse

    saved = {"config": config_to_dict(TrainConfig()), "seed": 0}
    for key, value in edit.items():
        saved[key] = saved[key] | value if isinstance(value, dict) else value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="--config") as err:
        parse(["--config", str(path)])
    assert message in str(err.value)
