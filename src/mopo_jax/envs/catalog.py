"""The catalogue: env families, their Gymnasium ids and reference scores, dataset names and the one parser.

Pure Python (no JAX, no Minari), so command-line help and configs can use it cheaply.
"""

from __future__ import annotations

import dataclasses

import numpy as np

D4RL_REF_SOURCE = "D4RL v2 reference constants (random/expert returns measured on the -v2 envs)"
OOD_REF_SOURCE = "none: MOPO reports raw returns for the out-of-distribution tasks"


@dataclasses.dataclass(frozen=True)
class EnvInfo:
    """A MuJoCo task: its Gymnasium id and D4RL reference returns used for normalised scores."""

    env_id: str
    ref_min_score: float
    ref_max_score: float


ENVS: dict[str, EnvInfo] = {
    "hopper": EnvInfo("Hopper-v5", -20.272305, 3234.3),
    "halfcheetah": EnvInfo("HalfCheetah-v5", -280.178953, 12135.0),
    "walker2d": EnvInfo("Walker2d-v5", 1.629008, 4592.3),
    "ant": EnvInfo("Ant-v5", -325.6, 3879.7),
}
LEVELS = ("random", "medium", "expert", "medium-expert", "medium-replay", "simple")
# Levels a build can make here; "simple" exists only as a Minari download.
BUILDABLE_LEVELS = ("random", "medium", "expert", "medium-expert", "medium-replay")
POLICY_LEVELS = ("medium", "expert")  # 1M steps of a shipped behaviour policy


@dataclasses.dataclass(frozen=True)
class OODDataset:
    """One of MOPO's out-of-distribution datasets: the env family it lives in, its level word,
    and the behaviour run whose whole replay history is relabelled with the target reward."""

    env: str
    level: str
    source_run: str


OOD_DATASETS: dict[str, OODDataset] = {
    "halfcheetah-jump": OODDataset("halfcheetah", "jump", "halfcheetah-vel3"),
    "ant-angle": OODDataset("ant", "angle", "ant"),
}
# Levels cut from a behaviour run's history: their size is set by the run, not requested.
HISTORY_LEVELS = ("medium-replay",) + tuple(d.level for d in OOD_DATASETS.values())
# Minari's official mujoco/ namespace: these levels exist there (medium-replay does not).
MINARI_OFFICIAL_LEVELS = ("random", "medium", "expert", "simple")


def dataset_names() -> list[str]:
    """All valid dataset names, e.g. 'hopper-random'."""
    return [f"{env}-{level}" for env in ENVS for level in LEVELS] + list(OOD_DATASETS)


def parse_dataset_name(name: str) -> tuple[str, str]:
    """Split 'hopper-medium-replay' into ('hopper', 'medium-replay'); ValueError lists valid names."""
    key = name.strip().lower()
    if key in OOD_DATASETS:
        return OOD_DATASETS[key].env, OOD_DATASETS[key].level
    env, _, level = key.partition("-")
    if env not in ENVS or level not in LEVELS:
        raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(dataset_names())}.")
    return env, level


def canonical_name(env: str, level: str) -> str:
    """Inverse of `parse_dataset_name`: ('halfcheetah', 'jump') -> 'halfcheetah-jump'."""
    for name, ood in OOD_DATASETS.items():
        if (ood.env, ood.level) == (env, level):
            return name
    return f"{env}-{level}"


def env_family(name: str) -> str:
    """The env family ('hopper', 'walker2d', ...) of a dataset name or a Gymnasium id."""
    key = name.strip().lower()
    if key in OOD_DATASETS:
        return OOD_DATASETS[key].env
    family = key.split("-")[0].replace("_", "")
    if family not in ENVS:
        raise ValueError(f"{name!r} names no known env family; known: {', '.join(ENVS)}.")
    return family


def ood_task(name: str) -> str:
    """The OOD task name of a dataset ('halfcheetah-jump'), or '' for an ordinary dataset."""
    key = name.strip().lower()
    return key if key in OOD_DATASETS else ""


def normalize_return(raw_return, ref_min_score: float, ref_max_score: float):
    """100 · (return − ref_min) / (ref_max − ref_min); NaN where the references are NaN (OOD)."""
    return 100.0 * (np.asarray(raw_return) - ref_min_score) / (ref_max_score - ref_min_score)
