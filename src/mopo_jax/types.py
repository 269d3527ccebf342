"""The one flat transition container shared by datasets, the dynamics model, buffers, rollouts and SAC."""

from typing import Any, NamedTuple

Array = Any  # a jax.Array or a numpy array: the container is used on both sides of the device


class Transitions(NamedTuple):
    """A batch of transitions; N is the leading (batch) axis of every field.

    The flag words are Gymnasium's: `terminations` marks true terminations (no bootstrap),
    `truncations` marks episodes cut by a time limit or by the end of the data.

    Fields:
      observations:      [N, obs_dim] float32
      actions:           [N, act_dim] float32
      rewards:           [N] float32
      next_observations: [N, obs_dim] float32
      terminations:      [N] float32, 1.0 where the env truly terminated (no bootstrap), else 0.0
    """

    observations: Array
    actions: Array
    rewards: Array
    next_observations: Array
    terminations: Array

    @property
    def size(self) -> int:
        """Number of transitions N (static)."""
        return self.observations.shape[0]
