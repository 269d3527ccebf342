"""Configuration of an online SAC behaviour run, its seeds and its default run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mopo_jax import paths
from mopo_jax.config_dict import config_to_dict  # noqa: F401 (re-exported with config_from_dict)
from mopo_jax.envs.catalog import HALFCHEETAH_VEL3, env_family
from mopo_jax.sac.config import SACConfig


TRAINING_REWARDS = ("env", HALFCHEETAH_VEL3)


@dataclasses.dataclass(frozen=True)
class BehaviorConfig:
    """Online SAC run (SpinningUp-style schedule). update_after=None means start_steps.

    Every env step at index >= update_after is matched by one SAC update, run in the chunk
    that collected it, so a run makes total_steps − update_after updates.

    max_episode_steps overrides the training env's time limit (None: the env's own, 1000 for
    MuJoCo); evaluation always uses the env's own limit. The replay buffer holds all total_steps.
    """

    env_id: str = "Hopper-v5"  # Gymnasium id
    total_steps: int = 1_000_000  # env steps of the run (the replay buffer holds them all)
    start_steps: int = 10_000  # uniform-random actions for env steps [0, start_steps)
    update_after: int | None = None  # env steps before the first SAC update (None: start_steps)
    update_every: int = 50  # env steps per chunk (host), then one jitted call for its updates
    eval_every: int = 10_000  # env steps between evaluations (each saves an actor snapshot)
    eval_episodes: int = 10  # episodes per evaluation (deterministic actions)
    sac: SACConfig = SACConfig()
    seed: int = 0  # PRNG and env-reset seed of the run
    max_episode_steps: int | None = None  # training-env time limit (None: the env's own)
    reward: str = "env"  # one of TRAINING_REWARDS: "env", or HALFCHEETAH_VEL3, the source task of halfcheetah-jump (mopo_jax.envs.ood)

    def __post_init__(self):
        for name in ("total_steps", "update_every", "eval_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.start_steps < 0 or (self.update_after is not None and self.update_after < 0):
            raise ValueError("start_steps and update_after must be >= 0")
        if self.reward not in TRAINING_REWARDS:
            raise ValueError(f"reward must be one of {TRAINING_REWARDS}, got {self.reward!r}")
        if self.sac.batch_size < 1 or (self.max_episode_steps is not None and self.max_episode_steps < 1):
            raise ValueError("batch_size and max_episode_steps must be positive")

    @property
    def first_update_step(self) -> int:
        """Env steps collected before the first SAC update."""
        return self.start_steps if self.update_after is None else self.update_after


def config_from_dict(d: dict) -> BehaviorConfig:
    """Inverse of `config_to_dict` (mopo_jax.config_dict)."""
    sac = dict(d["sac"], hidden_sizes=tuple(d["sac"]["hidden_sizes"]))
    return BehaviorConfig(**{**d, "sac": SACConfig(**sac)})


def reset_seed(config: BehaviorConfig, episode: int) -> int:
    """Reset seed of the `episode`-th episode (0-based) of the run's history, abandoned ones included."""
    return config.seed * 1_000_003 + episode


def eval_seed(config: BehaviorConfig) -> int:
    """First reset seed of every evaluation (the same episodes at each evaluation)."""
    return 2**31 + 1000 * config.seed


def default_behavior_logdir(config: BehaviorConfig) -> Path:
    """Where the dataset builds look for this run: <behavior dir>/<run>[-seed<s>], the run being
    the env's family (`catalog.env_family`) or, for the capped-velocity reward (HalfCheetah only),
    HALFCHEETAH_VEL3; e.g. ~/.cache/mopo_jax/behavior/hopper for Hopper-v5, seed 0 (see
    mopo_jax.data.recipes)."""
    if config.reward == HALFCHEETAH_VEL3:
        name = HALFCHEETAH_VEL3
    else:
        name = env_family(config.env_id, known_only=False)
    return paths.behavior_run_dir(name + (f"-seed{config.seed}" if config.seed else ""))


def stop_step(config: BehaviorConfig, stop_at: int | None) -> int:
    """The env step a run stops at: `stop_at`, which must be a positive multiple of eval_every no
    larger than total_steps (ValueError names the bad value), or total_steps when None."""
    if stop_at is None:
        return config.total_steps
    if stop_at <= 0 or stop_at % config.eval_every or stop_at > config.total_steps:
        raise ValueError(f"--stop-at {stop_at} must be a positive multiple of --eval-every "
                         f"({config.eval_every}) no larger than --steps ({config.total_steps})")
    return stop_at
