"""Saved policies: an actor as `<prefix>.msgpack` + `<prefix>.json`, loaded back as a jitted callable."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mopo_jax import checkpoint
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.policy import Params, deterministic_action, make_actor, sample_action

_RESERVED = ("sac", "obs_dim", "act_dim", "hidden_sizes")
_SAC_FIELDS = tuple(f.name for f in dataclasses.fields(SACConfig))

_deterministic = jax.jit(deterministic_action)
_sample = jax.jit(sample_action, static_argnames="config")


class Policy(NamedTuple):
    """A loaded actor. `policy(obs [B, o]) -> action [B, a]` is the deterministic tanh(μ(obs)).

    params: the actor's params (jnp arrays). metadata: everything in the JSON file (including
    "sac", "obs_dim", "act_dim"). sac_config: the SACConfig it was trained with (log-std bounds).
    """

    params: Params
    metadata: dict
    sac_config: SACConfig

    def __call__(self, obs: jax.Array) -> jax.Array:
        """Deterministic evaluation action tanh(μ(obs)). obs [B, o] -> action [B, a] in [−1, 1]."""
        return _deterministic(self.params, jnp.asarray(obs, jnp.float32))

    def sample(self, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Stochastic action tanh(u), u ~ N(μ, σ²) with the saved log-std bounds. [B, o] -> [B, a]."""
        return _sample(self.params, jnp.asarray(obs, jnp.float32), key, config=self.sac_config)


def actor_dims(actor_params: Params) -> tuple[int, int]:
    """(obs_dim, act_dim) of an actor's params (read from the first and last kernels)."""
    trunk = actor_params["trunk"]
    obs_dim = int(trunk["hidden_0"]["kernel"].shape[0])
    return obs_dim, int(trunk["output"]["kernel"].shape[-1]) // 2


def save_policy(prefix: str | os.PathLike, actor_params: Params, sac_config: SACConfig,
                metadata: dict[str, Any]) -> dict[str, Any]:
    """Write one actor to `<prefix>.msgpack` + `<prefix>.json` (atomically, via save_pytree): the
    one writer of policy files (the driver's best/final actors, exported behaviour policies).

    actor_params: a single (unstacked) actor, e.g. `SACState.actor_params` (kernels [in, out]).
    The JSON holds `metadata` (JSON-serialisable: score, epoch, policy id, ...) plus "sac" (the
    whole SACConfig, log-std bounds included), "obs_dim", "act_dim" and "hidden_sizes"; those four
    keys are reserved. The params' shapes must match `sac_config.hidden_sizes`. Returns the
    metadata written (what `load_policy(prefix).metadata` gives back).
    """
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved (save_policy writes them itself)")
    obs_dim, act_dim = actor_dims(actor_params)
    expected = _template(obs_dim, act_dim, sac_config)
    leaves = zip(jax.tree.leaves(actor_params), jax.tree.leaves(expected))
    if jax.tree.structure(actor_params) != jax.tree.structure(expected) or any(
            jnp.shape(a) != b.shape for a, b in leaves):
        raise ValueError(f"actor_params do not match sac_config.hidden_sizes={sac_config.hidden_sizes} "
                         f"(obs_dim {obs_dim}, act_dim {act_dim}); pass one unstacked actor")
    sac = dataclasses.asdict(sac_config)
    sac["hidden_sizes"] = list(sac_config.hidden_sizes)
    meta = {**metadata, "sac": sac, "obs_dim": obs_dim, "act_dim": act_dim,
            "hidden_sizes": list(sac_config.hidden_sizes)}
    checkpoint.save_pytree(prefix, actor_params, meta)
    return meta


def sac_config_from_dict(d: dict) -> SACConfig:
    """SACConfig from its JSON dict; keys this version does not know are ignored."""
    known = {k: v for k, v in d.items() if k in _SAC_FIELDS}
    return SACConfig(**known)


@functools.lru_cache(maxsize=64)
def _template(obs_dim: int, act_dim: int, sac_config: SACConfig) -> Params:
    """The actor's params as jax.ShapeDtypeStruct leaves (cached: the driver saves often)."""
    obs = jax.ShapeDtypeStruct((1, obs_dim), jnp.float32)
    init = make_actor(sac_config, act_dim).init
    return jax.eval_shape(lambda o: init(jax.random.key(0), o)["params"], obs)


def load_policy(prefix: str | os.PathLike) -> Policy:
    """Load a policy written by `save_policy` (or a shipped behaviour policy, or a behaviour run's
    actor snapshot: same JSON keys); the one loader of actor files.

    The JSON must hold "obs_dim", "act_dim" and either "sac" (a SACConfig dict) or "hidden_sizes"
    (then the default log-std bounds are used). Raises FileNotFoundError / ValueError (from
    mopo_jax.checkpoint) for missing, corrupt or mismatching files.
    """
    meta = checkpoint.load_metadata(prefix)
    missing = [k for k in ("obs_dim", "act_dim") if k not in meta]
    if missing or ("sac" not in meta and "hidden_sizes" not in meta):
        raise ValueError(f"{checkpoint.json_path(prefix)} is not a policy file (missing "
                         f"{missing or ['sac']}); write policies with save_policy")
    if "sac" in meta:
        sac_config = sac_config_from_dict(meta["sac"])
    else:
        sac_config = SACConfig(hidden_sizes=tuple(meta["hidden_sizes"]))
    template = _template(int(meta["obs_dim"]), int(meta["act_dim"]), sac_config)
    params, meta = checkpoint.load_pytree(prefix, template)
    return Policy(jax.tree.map(jnp.asarray, params), meta, sac_config)
