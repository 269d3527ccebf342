"""SAC hyper-parameters as a plain dataclass (no JAX import, so the CLI can read it cheaply)."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Static SAC hyper-parameters (the original MOPO/softlearning values).

    hidden_sizes: layer widths of the actor and of each critic.
    log_std_min/log_std_max: clip of the actor's log-std (softlearning: [−20, 2]).
    target_entropy: α is tuned so that the policy entropy approaches it; None means −act_dim,
      SAC's usual choice. MOPO's presets set −3 (the original's base config, every env).
    batch_size: rows per update batch (the training loops sample it).
    """

    hidden_sizes: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 5e-3
    init_log_alpha: float = 0.0
    target_entropy: float | None = None
    batch_size: int = 256

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        problems = []
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            problems.append(f"hidden_sizes={self.hidden_sizes}: need one or more widths >= 1")
        if self.num_critics < 1:
            problems.append(f"num_critics={self.num_critics}: need >= 1")
        if not self.log_std_min < self.log_std_max:
            problems.append(f"log_std_min={self.log_std_min}, log_std_max={self.log_std_max}: "
                            "need log_std_min < log_std_max")
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name}={value}: need a finite value >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            problems.append(f"gamma={self.gamma}: need 0 <= gamma <= 1")
        if not 0.0 <= self.tau <= 1.0:
            problems.append(f"tau={self.tau}: need 0 <= tau <= 1")
        if not math.isfinite(self.init_log_alpha):
            problems.append(f"init_log_alpha={self.init_log_alpha}: need a finite value")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            problems.append(f"target_entropy={self.target_entropy}: need a finite value or None")
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size}: need >= 1")
        if problems:
            raise ValueError("invalid SACConfig: " + "; ".join(problems))
