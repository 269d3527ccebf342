"""Flax linen modules for SAC: a plain MLP, the tanh-Gaussian actor's network and twin critics."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


# Keras' Dense default (glorot-uniform weights, zero biases), as in the original MOPO/softlearning code.
default_kernel_init = nn.initializers.glorot_uniform()


class MLP(nn.Module):
    """Fully connected network: hidden Dense+activation layers, then a linear output layer.

    Input [..., in_dim] -> output [..., output_dim]. Layers are named hidden_0.. and output.
    """

    hidden_sizes: Sequence[int]
    output_dim: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.hidden_sizes):
            x = self.activation(nn.Dense(size, kernel_init=default_kernel_init, name=f"hidden_{i}")(x))
        return nn.Dense(self.output_dim, kernel_init=default_kernel_init, name="output")(x)


class Actor(nn.Module):
    """Gaussian policy head before the tanh squashing.

    obs [B, obs_dim] -> (mean [B, act_dim], log_std [B, act_dim]), log_std clipped to
    [log_std_min, log_std_max]. Sampling, squashing and log-probs live in `mopo_jax.sac`.
    """

    act_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden_sizes, 2 * self.act_dim, name="trunk")(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class TwinCritic(nn.Module):
    """`num_critics` independent Q-networks evaluated in one vmapped call.

    (obs [B, obs_dim], act [B, act_dim]) -> Q [num_critics, B]. Parameters are stacked on a
    leading axis of size num_critics.
    """

    hidden_sizes: Sequence[int] = (256, 256)
    num_critics: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        q = ensemble(self.hidden_sizes, 1, name="q")(jnp.concatenate([obs, act], axis=-1))
        return q[..., 0]
