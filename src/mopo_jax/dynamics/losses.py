"""Training objectives of the ensemble: Gaussian NLL with learned log-variance bounds, weight decay, MSE."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mopo_jax.dynamics.model import ensemble_forward, soft_clamp_logvar


def weight_decay_penalty(
    net: dict, hidden_weight_decays: Sequence[float], head_weight_decay: float
) -> jax.Array:
    """Σ_layers ½·wd_layer·‖W‖² summed over members (biases and log-var bounds are not decayed)."""
    total = jnp.float32(0.0)
    for layer, wd in zip(net["hidden"], hidden_weight_decays, strict=True):
        total = total + 0.5 * wd * jnp.sum(jnp.square(layer["w"]))
    for head in ("mean_head", "logvar_head"):
        total = total + 0.5 * head_weight_decay * jnp.sum(jnp.square(net[head]["w"]))
    return total


def gaussian_nll_loss(
    trainable: dict,
    inputs: jax.Array,
    targets: jax.Array,
    row_weights: jax.Array | None,
    *,
    activation: str,
    hidden_weight_decays: Sequence[float],
    head_weight_decay: float,
    logvar_bound_coef: float,
) -> jax.Array:
    """Total training loss (scalar) of the ensemble on one minibatch per member.

    loss = Σ_members mean_{rows,dims}[(μ−y)²·exp(−lv) + lv] + weight decay
           + logvar_bound_coef·(Σ max_logvar − Σ min_logvar)

    Args:
      trainable: {"net": net params, "max_logvar": [out], "min_logvar": [out]}.
      inputs: standardised inputs [E, B, in]; targets: [E, B, out].
      row_weights: None, or [B] 0/1 weights marking real rows of a padded final minibatch; the
        mean over rows is then taken over the real rows only.
    """
    mean, raw_logvar = ensemble_forward(trainable["net"], inputs, activation)
    logvar = soft_clamp_logvar(raw_logvar, trainable["max_logvar"], trainable["min_logvar"])
    per_row = jnp.mean(jnp.square(mean - targets) * jnp.exp(-logvar) + logvar, axis=-1)  # [E, B]
    if row_weights is None:
        per_member = jnp.mean(per_row, axis=-1)
    else:
        per_member = jnp.sum(per_row * row_weights, axis=-1) / jnp.sum(row_weights)
    bounds = logvar_bound_coef * (jnp.sum(trainable["max_logvar"]) - jnp.sum(trainable["min_logvar"]))
    decay = weight_decay_penalty(trainable["net"], hidden_weight_decays, head_weight_decay)
    return jnp.sum(per_member) + decay + bounds


def per_dim_mse(net: dict, inputs: jax.Array, targets: jax.Array, activation: str = "swish") -> jax.Array:
    """MSE of each member's mean on shared rows: inputs [B, in], targets [B, out] -> [E, out]."""
    mean, _ = ensemble_forward(net, inputs, activation)
    return jnp.mean(jnp.square(mean - targets[None]), axis=1)
