"""The policy grid of one run: seeds × λs per rollout length, their ids, keys and evaluation seeds."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax.keys import eval_reset_seeds, policy_key


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One point (seed, λ, h) of a run's grid, i.e. one trained policy of the run: its seed (and
    position among the run's seeds), λ and h. (The saved policy itself is `sac.policy_io.Policy`.)"""

    seed: int
    seed_index: int
    penalty_coef: float
    rollout_length: int

    @property
    def id(self) -> str:
        """A stable name, e.g. 'h5-lam1-seed0' (λ printed with repr's shortest round trip)."""
        return f"h{self.rollout_length}-lam{self.penalty_coef:g}-seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Grid:
    """seeds × penalty_coefs × rollout_lengths. Each rollout length is one compiled group of
    len(seeds)·len(penalty_coefs) policies, ordered seed-major: (s0, λ0), (s0, λ1), ..., (s1, λ0)."""

    seeds: tuple[int, ...]
    penalty_coefs: tuple[float, ...]
    rollout_lengths: tuple[int, ...]

    def __post_init__(self):
        for name in ("seeds", "penalty_coefs", "rollout_lengths"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"grid {name}={values}: need one or more distinct values")

    def group(self, rollout_length: int) -> list[GridPoint]:
        """The policies trained together at horizon `rollout_length`, in state order."""
        return [GridPoint(s, i, float(lam), rollout_length) for i, s in enumerate(self.seeds)
                for lam in self.penalty_coefs]

    def policies(self) -> list[GridPoint]:
        """All policies of the run, group by group."""
        return [p for h in self.rollout_lengths for p in self.group(h)]

    def to_dict(self) -> dict:
        """JSON form (lists)."""
        return {"seeds": list(self.seeds), "penalty_coefs": list(self.penalty_coefs),
                "rollout_lengths": list(self.rollout_lengths)}


def group_keys_and_coefs(policies: list[GridPoint]) -> tuple[jax.Array, jax.Array]:
    """(keys [P], λ [P] float32) for `jax.vmap(fns.init)` over a group."""
    keys = jnp.stack([policy_key(p.seed) for p in policies])
    return keys, jnp.asarray([p.penalty_coef for p in policies], jnp.float32)


def eval_seeds(policy: GridPoint, episodes: int, epoch: int | None = None) -> np.ndarray:
    """Reset seeds [episodes] of `policy`'s evaluation at `epoch` (None: the final evaluation),
    from the run's key tree (`mopo_jax.keys.eval_reset_seeds`): (seed, λ, h, epoch) only."""
    return eval_reset_seeds(policy.seed, policy.penalty_coef, policy.rollout_length, episodes, epoch)
