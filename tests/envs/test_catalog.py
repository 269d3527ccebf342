"""env_family: the one map from dataset and env names to families, covering every input that the
rules it replaced accepted (catalog's, make's, termination's and the behaviour run names')."""

import pytest

from mopo_jax.envs.catalog import ENVS, HALFCHEETAH_VEL3, OOD_DATASETS, env_family
from mopo_jax.envs.ood import OOD_TASKS


@pytest.mark.parametrize("name, family", [
    # dataset names in every form resolve_name takes (the old catalog.env_family)
    ("hopper-medium-replay", "hopper"), ("HalfCheetah-Random", "halfcheetah"),
    ("halfcheetah-jump", "halfcheetah"), ("ant-angle", "ant"), (" walker2d-expert ", "walker2d"),
    ("mujoco/hopper/medium-v0", "hopper"), ("mopo_jax/halfcheetah/jump-v0", "halfcheetah"),
    ("hopper-medium-v2", "hopper"), ("walker2d-medium-replay-v2", "walker2d"),
    # Gymnasium ids (the old make.env_family and behaviour run names)
    ("Ant-v5", "ant"), ("HalfCheetah-v5", "halfcheetah"), ("Walker2d-v5", "walker2d"),
    ("Hopper-v4", "hopper"), ("Ant", "ant"),
    # first word, any case, '_' dropped (the old termination rule lookup)
    ("hopper", "hopper"), ("HOPPER", "hopper"), ("walker2d-medium", "walker2d"),
    ("half_cheetah", "halfcheetah"), ("Half_Cheetah-v5", "halfcheetah"), ("ant-anything", "ant"),
])
def test_env_family_of_every_accepted_form(name, family):
    assert env_family(name) == family
    assert env_family(name, known_only=False) == family


@pytest.mark.parametrize("name", ["humanoid", "Humanoid-v5", "mujoco/hopper/medium-replay-v0", ""])
def test_unknown_names_raise_naming_the_families(name):
    with pytest.raises(ValueError, match="known: " + ", ".join(ENVS)):
        env_family(name)


@pytest.mark.parametrize("name, family", [
    ("Humanoid-v5", "humanoid"), ("InvertedPendulum-v5", "invertedpendulum"),
    ("Foo-Bar-v0", "foo-bar"), ("CartPole", "cartpole"),
])
def test_ids_outside_the_catalogue_keep_their_name_without_version(name, family):
    """What the behaviour run names (split at '-v', lower-cased) gave for any other id."""
    assert env_family(name, known_only=False) == family


def test_make_env_defaults_and_termination_use_it():
    from mopo_jax.envs.make import default_kwargs
    from mopo_jax.envs.termination import ant_done, hopper_done, termination_fn

    assert default_kwargs("Ant-v5") == default_kwargs("ant") != {}
    assert default_kwargs("Humanoid-v5") == {} and default_kwargs("Hopper-v5") == {}
    assert termination_fn("Hopper-v5") is termination_fn("hopper-medium") is hopper_done
    assert termination_fn("mujoco/ant/medium-v0") is termination_fn("ant-angle") is ant_done
    with pytest.raises(ValueError, match="known envs"):
        termination_fn("Humanoid-v5")


def test_one_ood_table():
    """The OOD tasks take their source env from the catalogue; the vel3 run is the constant."""
    assert set(OOD_TASKS) == set(OOD_DATASETS)
    for name, task in OOD_TASKS.items():
        assert task.name == name and task.source_env == OOD_DATASETS[name].env == task.termination
        assert task.env_id == ENVS[task.source_env].env_id
    assert OOD_DATASETS["halfcheetah-jump"].source_run == HALFCHEETAH_VEL3
