"""The catalogue: env families, their Gymnasium ids and reference scores, dataset names, the one
name parser and the one map from any dataset or env name to its family (`env_family`).

Pure Python (no JAX, no Minari), so command-line help and configs can use it cheaply.
"""

from __future__ import annotations

import dataclasses
import re

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


# The behaviour run whose history becomes halfcheetah-jump, and its training reward
# (BehaviorConfig.reward): SAC on HalfCheetah with the forward velocity capped at 3
# (mopo_jax.envs.ood_env.CappedVelocityRewardWrapper).
HALFCHEETAH_VEL3 = "halfcheetah-vel3"
OOD_DATASETS: dict[str, OODDataset] = {
    "halfcheetah-jump": OODDataset("halfcheetah", "jump", HALFCHEETAH_VEL3),
    "ant-angle": OODDataset("ant", "angle", "ant"),
}
# Levels cut from a behaviour run's history: their size is set by the run, not requested.
HISTORY_LEVELS = ("medium-replay",) + tuple(d.level for d in OOD_DATASETS.values())
# Minari's official mujoco/ namespace: these levels exist there (medium-replay does not).
MINARI_OFFICIAL_LEVELS = ("random", "medium", "expert", "medium-expert", "simple")


def dataset_names() -> list[str]:
    """All valid dataset names, e.g. 'hopper-random'."""
    return [f"{env}-{level}" for env in ENVS for level in LEVELS] + list(OOD_DATASETS)


OUR_NAMESPACE = "mopo_jax"  # the Minari namespace of this project's local builds
MINARI_NAMESPACE = "mujoco"  # Minari's official namespace of the MuJoCo datasets
D4RL_LEVELS = ("random", "medium", "expert", "medium-expert", "medium-replay")
_MINARI_ID = re.compile(r"(?P<ns>[a-z0-9_]+)/(?P<env>[a-z0-9]+)/(?P<level>[a-z-]+?)(-n\d+)?-v\d+")
_D4RL_NAME = re.compile(r"(?P<name>[a-z0-9]+-[a-z-]+?)-v\d+")


def _our_name(key: str, original: str) -> tuple[str, str]:
    """'hopper-medium-replay' -> ('hopper', 'medium-replay'); ValueError listing the valid names."""
    if key in OOD_DATASETS:
        return OOD_DATASETS[key].env, OOD_DATASETS[key].level
    env, _, level = key.partition("-")
    if env not in ENVS or level not in LEVELS:
        raise ValueError(f"Unknown dataset {original!r}. Valid names: {', '.join(dataset_names())} "
                         f"(also as Minari ids, e.g. '{MINARI_NAMESPACE}/hopper/medium-v0', or "
                         "D4RL names, e.g. 'hopper-medium-v2').")
    return env, level


def _from_minari_id(match: re.Match, original: str) -> str:
    namespace, env, level = match.group("ns"), match.group("env"), match.group("level")
    if namespace == MINARI_NAMESPACE:
        if env not in ENVS or level not in MINARI_OFFICIAL_LEVELS:
            raise ValueError(
                f"{original!r} is not a Minari dataset: Minari's {MINARI_NAMESPACE}/ namespace holds "
                f"the levels {', '.join(MINARI_OFFICIAL_LEVELS)} of {', '.join(ENVS)}. "
                f"Ask for '{env}-{level}' to have this project build it locally.")
        return f"{env}-{level}"
    if namespace == OUR_NAMESPACE:
        return canonical_name(*_our_name(f"{env}-{level}", original))
    raise ValueError(f"Unknown dataset {original!r}: only the Minari namespaces "
                     f"{MINARI_NAMESPACE}/ and {OUR_NAMESPACE}/ are known.")


def resolve_name(name: str) -> tuple[str, str | None]:
    """Any accepted dataset name -> (our canonical name, a note to log or None).

    Accepts our names ('hopper-medium-replay', 'halfcheetah-jump'), Minari ids
    ('mujoco/hopper/medium-v0', 'mopo_jax/hopper/random-v0'; the version is not pinned, the newest
    local one is used) and D4RL names ('hopper-medium-v2'), which map to our name with a note that
    the data differ. ValueError names the valid forms.
    """
    key = name.strip().lower()
    minari_match = _MINARI_ID.fullmatch(key)
    if minari_match:
        return _from_minari_id(minari_match, name), None
    d4rl_match = _D4RL_NAME.fullmatch(key)
    if d4rl_match and key not in OOD_DATASETS:
        ours = d4rl_match.group("name")
        env, level = _our_name(ours, name)
        if level not in D4RL_LEVELS:
            raise ValueError(f"{name!r} is not a D4RL dataset (D4RL levels: {', '.join(D4RL_LEVELS)}).")
        return ours, (
            f"{name!r} is a D4RL name; loading this project's {ours!r} instead. The data differ: "
            f"D4RL recorded {ENVS[env].env_id.rsplit('-', 1)[0]}-v2 (mujoco-py) with its own "
            f"policies, whereas Minari's {MINARI_NAMESPACE}/ datasets and this project's builds use "
            f"{ENVS[env].env_id} (newer MuJoCo, fixed env bugs) and other policies, so results "
            "compare to D4RL papers only loosely (scores stay normalised with the D4RL reference "
            "returns).")
    return canonical_name(*_our_name(key, name)), None


def parse_dataset_name(name: str) -> tuple[str, str]:
    """Split any accepted name (see `resolve_name`) into (env, level), e.g. 'hopper-medium-replay'
    -> ('hopper', 'medium-replay'); ValueError lists valid names."""
    return _our_name(resolve_name(name)[0], name)


def canonical_name(env: str, level: str) -> str:
    """Inverse of `parse_dataset_name`: ('halfcheetah', 'jump') -> 'halfcheetah-jump'."""
    for name, ood in OOD_DATASETS.items():
        if (ood.env, ood.level) == (env, level):
            return name
    return f"{env}-{level}"


def env_family(name: str, known_only: bool = True) -> str:
    """The env family ('hopper', 'walker2d', ...) of a dataset or env name: the one place that maps
    names to families (termination rules, make_env's defaults, behaviour run names, trainers).

    Accepts, ignoring case and surrounding spaces: every dataset name form of `resolve_name`
    ('hopper-medium-replay', 'halfcheetah-jump', 'mujoco/hopper/medium-v0', 'hopper-medium-v2'),
    and any name whose first '-'-separated word, without '_', is a family: the family itself
    ('walker2d'), a Gymnasium id ('Hopper-v5', 'HalfCheetah-v5'), 'walker2d-medium'. Any other
    name raises ValueError naming the known families, unless known_only=False: then the result is
    the name without its '-v<N>' version, lower-cased ('Humanoid-v5' -> 'humanoid'), for callers
    that take Gymnasium ids outside the catalogue.
    """
    key = name.strip().lower()
    try:
        return parse_dataset_name(key)[0]
    except ValueError:
        pass
    family = key.split("-")[0].replace("_", "")
    if family in ENVS:
        return family
    if not known_only:
        return key.split("-v")[0]
    raise ValueError(f"{name!r} names no known env family; known: {', '.join(ENVS)}.")


def normalize_return(raw_return, ref_min_score: float, ref_max_score: float):
    """100 · (return − ref_min) / (ref_max − ref_min); NaN where the references are NaN (OOD)."""
    return 100.0 * (np.asarray(raw_return) - ref_min_score) / (ref_max_score - ref_min_score)
