"""MOPO run configuration: the algorithm's TrainConfig, per-dataset presets, and the tiny smoke config.

Plain dataclasses (no JAX import). Every field is validated when a config is made.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

from mopo_jax.config_dict import config_to_dict  # noqa: F401 (re-exported with config_from_dict)
from mopo_jax.dynamics.config import DynamicsConfig
from mopo_jax.envs.catalog import dataset_names, resolve_name
from mopo_jax.sac.config import SACConfig

# The uncertainty estimates u(s, a) (computed in mopo_jax.mopo.rollout.uncertainty_penalty).
PENALTIES = ("max_std", "max_std_elites", "disagreement", "disagreement_elites_with_reward")
ROLLOUT_CLIPS = ("none", "data")

# (h, λ) from the original MOPO configs (D4RL v0): the 12 datasets of the paper's Table 1.
PAPER_PRESETS: dict[str, tuple[int, float]] = {
    "halfcheetah-random": (5, 0.5), "hopper-random": (5, 1.0), "walker2d-random": (1, 1.0),
    "halfcheetah-medium": (1, 1.0), "hopper-medium": (5, 5.0), "walker2d-medium": (5, 5.0),
    "halfcheetah-medium-replay": (5, 1.0), "hopper-medium-replay": (5, 1.0),
    "walker2d-medium-replay": (1, 1.0), "halfcheetah-medium-expert": (5, 5.0),
    "hopper-medium-expert": (5, 1.0), "walker2d-medium-expert": (1, 2.0),
}
# Every other name (expert, simple, all ant levels, halfcheetah-jump, ant-angle): no published
# MOPO setting exists, so h=5, λ=1, the setting most of the paper's configs use (6 of 12), also
# MOPO's code default. Re-tune per dataset when results matter.
DEFAULT_PRESET = (5, 1.0)
# The original's base config sets SAC's target entropy to -3 for every environment.
PRESET_TARGET_ENTROPY = -3.0


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything static about one MOPO policy-optimisation run. The defaults are the original
    MOPO code's, however a config is made (`TrainConfig(...)`, `preset`, the CLI, a saved
    config.json): rollout_length and penalty_coef left as None take the dataset's preset (h, λ),
    and SAC's target entropy is the original's −3.

    rollout_length: model rollout horizon h.  penalty_coef: λ in r̃ = r − λ·u(s, a).
    penalty: the uncertainty estimate u (see mopo_jax.mopo.rollout.uncertainty_penalty).
    steps_per_epoch: SAC updates per epoch; one rollout batch of rollout_batch_size start states
    per epoch. model_retain_epochs: the model buffer holds this many rollout batches.
    real_ratio: fraction of real rows in each SAC batch. rollout_row_chunk: ensemble rows per
    chunk inside rollouts (speed/memory only; same values). rollout_clip: 'none' (the original)
    or 'data' (clip model next states and rewards to the dataset's range; not the paper's).
    eval_every / eval_episodes: epochs between real-env evaluations (1: every epoch, as the
    original; 0: none during training, not the paper's protocol), and episodes per evaluation.
    final_eval_episodes: episodes of the evaluation after the last epoch, on start states no
    evaluation during training used (0: none).
    """

    dataset: str = "hopper-random"  # dataset name, e.g. hopper-random, walker2d-medium-replay
    rollout_length: int | None = None  # model rollout horizon h (None: the dataset's preset)
    penalty_coef: float | None = None  # uncertainty penalty λ: r̃ = r − λ·u(s, a) (None: preset)
    penalty: str = "max_std"  # u(s, a): max_std (the paper), max_std_elites, disagreement, disagreement_elites_with_reward
    epochs: int = 1000  # epochs of policy optimisation (one rollout batch each)
    steps_per_epoch: int = 1000  # SAC updates per epoch
    rollout_batch_size: int = 50_000  # model rollouts started per epoch
    model_retain_epochs: int = 5  # the model buffer holds this many epochs of rollouts
    real_ratio: float = 0.05  # fraction of real transitions in each SAC batch
    rollout_row_chunk: int | None = None  # ensemble rows per chunk in rollouts (speed only)
    rollout_clip: str = "none"  # none (the original), or data: clip model next states and rewards to the data's range
    eval_every: int = 1  # epochs between real-env evaluations (0: only the final one; not the paper's protocol)
    eval_episodes: int = 10  # episodes per evaluation (deterministic actions)
    final_eval_episodes: int = 100  # episodes of the final evaluation on fresh start states (0: none)
    sac: SACConfig = SACConfig(target_entropy=PRESET_TARGET_ENTROPY)
    dynamics: DynamicsConfig = DynamicsConfig()

    def __post_init__(self):
        problems = []
        try:  # any accepted form: 'HOPPER-RANDOM', 'mujoco/hopper/random-v0', 'hopper-random-v2'
            object.__setattr__(self, "dataset", resolve_name(self.dataset)[0])
        except (ValueError, AttributeError):
            pass  # named below
        if self.dataset not in dataset_names():
            problems.append(f"dataset={self.dataset!r}: need one of {', '.join(dataset_names())}")
        else:  # None -> the dataset's preset; frozen, so set through object.__setattr__
            horizon, coef = PAPER_PRESETS.get(self.dataset, DEFAULT_PRESET)
            if self.rollout_length is None:
                object.__setattr__(self, "rollout_length", horizon)
            if self.penalty_coef is None:
                object.__setattr__(self, "penalty_coef", coef)
        positive = ("rollout_length", "epochs", "steps_per_epoch", "rollout_batch_size",
                    "model_retain_epochs", "eval_episodes")
        for name in positive:
            value = getattr(self, name)
            if value is None and name == "rollout_length":
                continue  # no preset: the dataset is unknown (named above)
            if not _is_int(value) or value < 1:
                problems.append(f"{name}={value!r}: need an integer >= 1")
        for name in ("eval_every", "final_eval_episodes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                problems.append(f"{name}={value!r}: need an integer >= 0")
        if self.eval_every == 0 and self.final_eval_episodes == 0:
            problems.append("eval_every=0 and final_eval_episodes=0: the run would never be "
                            "evaluated; set one of them >= 1")
        if self.penalty_coef is not None and not (isinstance(self.penalty_coef, (int, float)) and not isinstance(self.penalty_coef, bool)
                and math.isfinite(self.penalty_coef) and self.penalty_coef >= 0):
            problems.append(f"penalty_coef={self.penalty_coef!r}: need a finite value >= 0")
        if self.penalty not in PENALTIES:
            problems.append(f"penalty={self.penalty!r}: need one of {PENALTIES}")
        if self.rollout_clip not in ROLLOUT_CLIPS:
            problems.append(f"rollout_clip={self.rollout_clip!r}: need one of {ROLLOUT_CLIPS}")
        if not 0.0 <= self.real_ratio <= 1.0:
            problems.append(f"real_ratio={self.real_ratio}: need 0 <= real_ratio <= 1")
        if self.rollout_row_chunk is not None and self.rollout_row_chunk < 1:
            problems.append(f"rollout_row_chunk={self.rollout_row_chunk}: need None or >= 1")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    @property
    def buffer_capacity(self) -> int:
        """Rows in the model buffer: retain_epochs × rollout batch × h."""
        return self.model_retain_epochs * self.rollout_batch_size * self.rollout_length


def preset(dataset: str, **overrides) -> TrainConfig:
    """TrainConfig for `dataset` (any accepted name form, see `envs.catalog.resolve_name`) with
    `overrides` (field=value); the same as `TrainConfig(dataset=..., **overrides)`: the dataset's
    (h, λ) preset and the original's other defaults. ValueError names an unknown dataset."""
    return TrainConfig(dataset=resolve_name(dataset)[0], **overrides)


def tiny(dataset: str = "hopper-random", **overrides) -> TrainConfig:
    """A seconds-on-CPU configuration for smoke tests and CI (small nets, few steps)."""
    small = dict(
        epochs=2, steps_per_epoch=20, rollout_batch_size=64, eval_every=1, eval_episodes=1,
        final_eval_episodes=2,
        sac=SACConfig(hidden_sizes=(32, 32), batch_size=32, target_entropy=PRESET_TARGET_ENTROPY),
        dynamics=DynamicsConfig(num_members=3, num_elites=2, hidden_sizes=(16, 16),
                                hidden_weight_decays=(2.5e-5, 5e-5), max_epochs=3),
    )
    small.update(overrides)
    return preset(dataset, **small)


def _matches(value, kind) -> bool:
    """Whether a JSON value fits a field annotation (int, float, str, bool, X | None, tuple[X, ...])."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return _is_int(value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple:
        items = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
        return isinstance(value, (list, tuple)) and all(
            _matches(v, items[0] if len(items) == 1 else t) for v, t in zip(value, items))
    return kind is type(None) and value is None


def field_type_problems(cls, values: dict, prefix: str = "") -> list[str]:
    """'name=value: need TYPE' for every entry of `values` (a JSON dict, e.g. a config.json's
    config) whose type does not fit dataclass `cls`'s field; nested dataclasses are checked too."""
    hints, problems = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, kind = values[f.name], hints[f.name]
        if dataclasses.is_dataclass(kind):
            if isinstance(value, dict):
                problems += field_type_problems(kind, value, f"{prefix}{f.name}.")
            else:
                problems.append(f"{prefix}{f.name}={value!r}: need an object of {kind.__name__} fields")
        elif not _matches(value, kind):
            problems.append(f"{prefix}{f.name}={value!r}: need {getattr(kind, '__name__', kind)}")
    return problems


def config_from_dict(d: dict) -> TrainConfig:
    """Inverse of `config_to_dict` (mopo_jax.config_dict; nested SAC and dynamics configs, lists
    back to tuples).
    Unknown keys, and values of the wrong type (e.g. "0.5" for a number), raise ValueError
    naming them (a config.json from another version, or edited by hand)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
    problems = field_type_problems(TrainConfig, d)
    if problems:
        raise ValueError("invalid TrainConfig: " + "; ".join(problems))
    sac = SACConfig(**d.get("sac", {}))
    dynamics = DynamicsConfig(**d.get("dynamics", {}))
    return TrainConfig(**{**d, "sac": sac, "dynamics": dynamics})
