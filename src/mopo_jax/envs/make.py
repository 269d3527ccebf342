"""Making a Gymnasium env from its id with this project's per-family default keyword arguments."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym

from mopo_jax.envs.catalog import env_family

# Keyword arguments applied to every env of a family unless the caller passes its own value.
#   ant: MOPO's Ant (tianheyu927/mopo, mopo/env/ant.py) observes qpos[2:] ‖ qvel = 27 dims;
#        Ant-v5 appends the 78 clipped contact forces cfrc_ext[1:] by default (105 dims).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ant": {"include_cfrc_ext_in_observation": False},
}


def default_kwargs(env_id: str) -> dict[str, Any]:
    """The default keyword arguments for `env_id`'s family (`catalog.env_family`; a fresh dict, {}
    for most envs and for ids outside the catalogue)."""
    return dict(FAMILY_DEFAULTS.get(env_family(env_id, known_only=False), {}))


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """`gym.make(env_id, **kwargs)` with the family defaults filled in where kwargs leave them out.

    Every env this project builds from an id goes through here, so datasets, behaviour training
    and evaluation see the same observation layout (e.g. 27-dim Ant observations). Pass a
    default's key explicitly to override it (include_cfrc_ext_in_observation=True: 105-dim Ant).
    """
    return gym.make(env_id, **{**default_kwargs(env_id), **kwargs})


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of `env_id` with the family defaults added to its kwargs: what
    `make_env(env_id)` makes (for libraries that take a spec, e.g. Minari's dataset writer)."""
    spec = gym.spec(env_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **default_kwargs(env_id)})
