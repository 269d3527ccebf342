"""Hyper-parameters of the dynamics ensemble and its fit (a plain dataclass; no JAX import)."""

from __future__ import annotations

import dataclasses
import math

ACTIVATION_NAMES = ("swish", "relu", "tanh")


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """Static hyper-parameters of the ensemble and its fit; defaults are the original MOPO values.

    Early stopping (the original's rule): after each epoch every member's holdout MSE is compared
    with its best; a member improves when (best − mse)/best > improvement_threshold (its snapshot
    is then kept). The fit stops once MORE than `patience` consecutive epochs passed with no member
    improving — the original's `epochs_since_update > 5` with patience 5, i.e. after the 6th such
    epoch. The best snapshots are restored; elites are the num_elites lowest holdout MSEs.
    """

    num_members: int = 7  # networks in the ensemble
    num_elites: int = 5  # members rollouts sample next states from: the lowest holdout MSEs
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)  # hidden-layer widths of each member
    activation: str = "swish"  # hidden-layer activation: swish, relu or tanh
    hidden_weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)  # one per hidden layer
    head_weight_decay: float = 1e-4  # mean and log-variance heads
    max_logvar_init: float = 0.5  # initial upper bound of the predicted log-variance (trained)
    min_logvar_init: float = -10.0  # initial lower bound of the predicted log-variance (trained)
    logvar_bound_coef: float = 0.01  # loss weight of the log-variance bounds
    learning_rate: float = 1e-3  # Adam step size
    batch_size: int = 256  # rows per gradient step of each member
    holdout_fraction: float = 0.2  # share of the rows held out for early stopping and elites
    max_holdout: int = 1000  # cap on the held-out rows
    improvement_threshold: float = 0.01  # relative holdout-MSE gain that counts as improvement
    patience: int = 5  # stop when more than this many epochs in a row saw no member improve
    max_epochs: int | None = None  # None: no cap other than safety_max_epochs
    safety_max_epochs: int = 1000  # hard cap; also the length of the report's history arrays

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "hidden_weight_decays", tuple(float(w) for w in self.hidden_weight_decays))
        problems = []
        if len(self.hidden_weight_decays) != len(self.hidden_sizes):
            problems.append(f"hidden_weight_decays has {len(self.hidden_weight_decays)} entries but "
                            f"hidden_sizes has {len(self.hidden_sizes)} layers: give one per layer")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            problems.append(f"hidden_sizes={self.hidden_sizes}: need one or more widths >= 1")
        if not 1 <= self.num_elites <= self.num_members:
            problems.append(f"num_elites={self.num_elites}, num_members={self.num_members}: need "
                            "1 <= num_elites <= num_members")
        if self.activation not in ACTIVATION_NAMES:
            problems.append(f"activation={self.activation!r}: need one of {ACTIVATION_NAMES}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate={self.learning_rate}: need a finite value > 0")
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size}: need >= 1")
        if not 0.0 < self.holdout_fraction < 1.0:
            problems.append(f"holdout_fraction={self.holdout_fraction}: need 0 < fraction < 1")
        if self.max_holdout < 1:
            problems.append(f"max_holdout={self.max_holdout}: need >= 1")
        if not 0.0 <= self.improvement_threshold < 1.0:
            problems.append(f"improvement_threshold={self.improvement_threshold}: need [0, 1)")
        if self.patience < 0:
            problems.append(f"patience={self.patience}: need >= 0")
        if self.max_epochs is not None and self.max_epochs < 1:
            problems.append(f"max_epochs={self.max_epochs}: need None or >= 1")
        if self.safety_max_epochs < 1:
            problems.append(f"safety_max_epochs={self.safety_max_epochs}: need >= 1")
        if not self.min_logvar_init < self.max_logvar_init:
            problems.append(f"min_logvar_init={self.min_logvar_init}, max_logvar_init="
                            f"{self.max_logvar_init}: need min < max")
        if problems:
            raise ValueError("invalid DynamicsConfig: " + "; ".join(problems))

    @property
    def epoch_cap(self) -> int:
        """Largest number of epochs fit may run (static)."""
        if self.max_epochs is None:
            return self.safety_max_epochs
        return min(self.max_epochs, self.safety_max_epochs)
