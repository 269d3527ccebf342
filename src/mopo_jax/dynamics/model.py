"""The stacked-weight probabilistic ensemble: parameters, forward pass, EnsembleModel, predict/sample.

Every array of member parameters carries the member axis first ([E, ...]); all functions are pure
jnp and work under jit/vmap/grad. Output layout (D = obs_dim + 1): [Δobs = next_obs − obs, reward].

Parameter pytree ("net params"), E members, fan_in -> fan_out per layer:
    {"hidden":      [{"w": [E, fan_in, fan_out], "b": [E, fan_out]}, ...],   # one per hidden layer
     "mean_head":   {"w": [E, last_hidden, out_dim], "b": [E, out_dim]},
     "logvar_head": {"w": [E, last_hidden, out_dim], "b": [E, out_dim]}}
Both heads read the last hidden layer (mathematically the original's single 2*out_dim output layer).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp

from mopo_jax.dynamics.config import ACTIVATION_NAMES


ACTIVATIONS = {"swish": jax.nn.swish, "relu": jax.nn.relu, "tanh": jnp.tanh}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES  # the config validates names against ACTIVATION_NAMES


def init_ensemble_params(
    key: jax.Array, num_members: int, in_dim: int, out_dim: int, hidden_sizes: Sequence[int]
) -> dict:
    """Initial net params for E=num_members members (layout in the module docstring).

    Weights: truncated normal (±2 std) with std 1/(2·sqrt(fan_in)); biases zero. All weights come from
    one flat draw (1-D random draws compile several times faster than N-D ones on XLA:CPU).
    """
    sizes = (in_dim, *hidden_sizes)
    shapes = [(sizes[i], sizes[i + 1]) for i in range(len(hidden_sizes))]
    shapes += [(sizes[-1], out_dim)] * 2  # mean head, log-variance head
    counts = [num_members * fan_in * fan_out for fan_in, fan_out in shapes]
    flat = jax.random.truncated_normal(key, -2.0, 2.0, (sum(counts),), jnp.float32)
    layers, start = [], 0
    for (fan_in, fan_out), count in zip(shapes, counts):
        w = flat[start:start + count].reshape(num_members, fan_in, fan_out) / (2.0 * math.sqrt(fan_in))
        layers.append({"w": w, "b": jnp.zeros((num_members, fan_out), jnp.float32)})
        start += count
    return {"hidden": layers[:-2], "mean_head": layers[-2], "logvar_head": layers[-1]}


def _dense(layer: dict, x: jax.Array) -> jax.Array:
    """x [B, i] (shared by all members) or [E, B, i] (one batch per member) -> [E, B, o]."""
    spec = "bi,eio->ebo" if x.ndim == 2 else "ebi,eio->ebo"
    return jnp.einsum(spec, x, layer["w"]) + layer["b"][:, None, :]


def ensemble_forward(net: dict, x: jax.Array, activation: str = "swish") -> tuple[jax.Array, jax.Array]:
    """Raw ensemble outputs.

    Args:
      net: net params with E members.
      x: standardised inputs, [B, in] (same rows for every member) or [E, B, in].
      activation: a key of ACTIVATIONS.
    Returns:
      (mean [E, B, out], unclamped log-variance [E, B, out]).
    """
    act = ACTIVATIONS[activation]
    h = x
    for layer in net["hidden"]:
        h = act(_dense(layer, h))
    return _dense(net["mean_head"], h), _dense(net["logvar_head"], h)


def soft_clamp_logvar(logvar: jax.Array, max_logvar: jax.Array, min_logvar: jax.Array) -> jax.Array:
    """Smoothly bound log-variance into (min_logvar, max_logvar); bounds broadcast on the last axis.

    lv = max − softplus(max − lv); lv = min + softplus(lv − min).  The exact range is
    (min, max + softplus(min − max)): the upper overshoot is 2.8e-5 for the defaults (0.5, −10).
    """
    logvar = max_logvar - jax.nn.softplus(max_logvar - logvar)
    return min_logvar + jax.nn.softplus(logvar - min_logvar)


class EnsembleModel(flax.struct.PyTreeNode):
    """A fitted ensemble. E members, D = obs_dim + 1 outputs, I = obs_dim + act_dim inputs.

    params: net params (see `mopo_jax.ensemble`), member axis first.
    max_logvar, min_logvar: [D] learned soft bounds of the log-variance (shared by members).
    input_mean, input_std: [I] standardisation of obs‖act (training split statistics).
    elite_idx: [num_elites] int32 member ids, best holdout MSE first.
    """

    params: dict
    max_logvar: jax.Array
    min_logvar: jax.Array
    input_mean: jax.Array
    input_std: jax.Array
    elite_idx: jax.Array
    activation: str = flax.struct.field(pytree_node=False, default="swish")

    @property
    def obs_dim(self) -> int:
        return self.max_logvar.shape[-1] - 1

    @property
    def act_dim(self) -> int:
        return self.input_mean.shape[-1] - self.obs_dim


def predict(model: EnsembleModel, obs: jax.Array, act: jax.Array,
            members: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-member Gaussian prediction of [next_obs, reward].

    Args:
      obs: [B, o]; act: [B, a] (vmap adds leading axes freely).
      members: optional [M] int member ids to evaluate (e.g. model.elite_idx); default all E.
    Returns:
      (mean [M, B, o+1], std [M, B, o+1]): mean[..., :o] = obs + predicted Δobs,
      mean[..., o] = reward; std = exp(½·clamped log-variance).
    """
    net = model.params
    if members is not None:
        net = jax.tree.map(lambda p: p[members], net)
    x = (jnp.concatenate([obs, act], axis=-1) - model.input_mean) / model.input_std
    mean, raw_logvar = ensemble_forward(net, x, model.activation)
    logvar = soft_clamp_logvar(raw_logvar, model.max_logvar, model.min_logvar)
    obs_part = mean[..., : model.obs_dim] + obs[None]
    mean = jnp.concatenate([obs_part, mean[..., model.obs_dim:]], axis=-1)
    return mean, jnp.exp(0.5 * logvar)


def sample_step(key: jax.Array, model: EnsembleModel, obs: jax.Array,
                act: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sample one model step: each row uses a uniformly chosen elite and draws from N(μ, σ²).

    Args: obs [B, o], act [B, a].  Returns: (next_obs [B, o], reward [B]).
    """
    mean, std = predict(model, obs, act, members=model.elite_idx)  # [K, B, D]
    sample = sample_one_member(key, mean, std, jnp.arange(mean.shape[0]))
    return sample[:, : model.obs_dim], sample[:, model.obs_dim]


def sample_one_member(key: jax.Array, mean: jax.Array, std: jax.Array,
                      candidates: jax.Array) -> jax.Array:
    """Per row, pick one member uniformly from `candidates` [K] and draw from its N(μ, σ²).

    Args: mean, std [E, B, D] (indexed by the ids in candidates). Returns: sample [B, D].
    """
    choice, noise = draw_members_and_noise(key, mean.shape[1], mean.shape[2], candidates)
    return sample_chosen(mean, std, choice, noise)


def draw_members_and_noise(key: jax.Array, rows: int, dims: int,
                           candidates: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The random part of `sample_one_member`: member ids [B] drawn uniformly from `candidates` [K]
    and standard-normal noise [B, D] (one 1-D draw: N-D draws compile slowly on XLA:CPU)."""
    k_member, k_noise = jax.random.split(key)
    choice = candidates[jax.random.randint(k_member, (rows,), 0, candidates.shape[0])]
    return choice, jax.random.normal(k_noise, (rows * dims,)).reshape(rows, dims)


def sample_chosen(mean: jax.Array, std: jax.Array, choice: jax.Array, noise: jax.Array) -> jax.Array:
    """mean[choice_b, b] + std[choice_b, b] · noise_b per row. mean, std [E, B, D]; choice [B];
    noise [B, D] -> [B, D]."""
    pick = lambda a: jnp.take_along_axis(a, choice[None, :, None], axis=0)[0]  # noqa: E731
    return pick(mean) + pick(std) * noise
