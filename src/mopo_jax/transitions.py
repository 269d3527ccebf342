"""The flat transition-array pytree shared by datasets, the dynamics model, rollouts and SAC."""

from typing import NamedTuple

import jax


class Transitions(NamedTuple):
    """A batch of transitions; N is the leading (batch) axis of every field.

    Fields:
      observations:      [N, obs_dim] float32
      actions:           [N, act_dim] float32
      rewards:           [N] float32
      next_observations: [N, obs_dim] float32
      terminals:         [N] float32, 1.0 where the env truly terminated (no bootstrap), else 0.0
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminals: jax.Array

    @property
    def size(self) -> int:
        """Number of transitions N (static)."""
        return self.observations.shape[0]
