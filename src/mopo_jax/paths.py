"""Every disk location and environment variable of the package, in one place.

Environment variables (all optional):
  MOPO_JAX_CACHE_DIR     derived files: flat dataset caches, fitted ensembles, behaviour runs
                         (default ~/.cache/mopo_jax)
  MOPO_JAX_OFFLINE       "1" skips every dataset download (the `--offline` flag does the same)
  MOPO_JAX_POLICY_DIR    extra folder searched first for behaviour policies `<env>-<level>.json`
  MOPO_JAX_BEHAVIOR_DIR  folder of behaviour-training runs (default <cache>/behavior)
  MINARI_DATASETS_PATH   Minari's own root of local datasets (default ~/.minari/datasets)
Each function reads the environment when called, never at import.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

CACHE_ENV_VAR = "MOPO_JAX_CACHE_DIR"
OFFLINE_ENV_VAR = "MOPO_JAX_OFFLINE"
POLICY_DIR_ENV_VAR = "MOPO_JAX_POLICY_DIR"
BEHAVIOR_DIR_ENV_VAR = "MOPO_JAX_BEHAVIOR_DIR"
MINARI_ENV_VAR = "MINARI_DATASETS_PATH"


def cache_dir() -> Path:
    """Where derived files go: $MOPO_JAX_CACHE_DIR, default ~/.cache/mopo_jax."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "mopo_jax")


def model_cache_dir() -> Path:
    """Fitted dynamics ensembles cached by training runs: <cache>/models."""
    return cache_dir() / "models"


def offline_by_default() -> bool:
    """True when $MOPO_JAX_OFFLINE asks that no download be tried."""
    return os.environ.get(OFFLINE_ENV_VAR, "") not in ("", "0", "false", "False")


def minari_root() -> Path:
    """Minari's local datasets root: $MINARI_DATASETS_PATH, default ~/.minari/datasets."""
    return Path(os.environ.get(MINARI_ENV_VAR) or Path.home() / ".minari" / "datasets")


def minari_dataset_dir(minari_id: str, root: Path | None = None) -> Path:
    """Folder of Minari dataset `minari_id` (e.g. 'mujoco/hopper/medium-v0') under `root`."""
    return (root or minari_root()) / minari_id


def shipped_policy_dir() -> Path:
    """The behaviour policies shipped inside the package (mopo_jax/policies)."""
    return Path(str(resources.files("mopo_jax") / "policies"))


def policy_dirs() -> list[Path]:
    """Folders searched for behaviour policies, in order: $MOPO_JAX_POLICY_DIR, then shipped."""
    extra = os.environ.get(POLICY_DIR_ENV_VAR)
    return ([Path(extra)] if extra else []) + [shipped_policy_dir()]


def behavior_root() -> Path:
    """Folder of behaviour-training runs: $MOPO_JAX_BEHAVIOR_DIR, default <cache>/behavior."""
    return Path(os.environ.get(BEHAVIOR_DIR_ENV_VAR) or cache_dir() / "behavior")


def behavior_run_dir(run: str) -> Path:
    """Directory of the behaviour-training run `run`, e.g. behavior_run_dir('hopper')."""
    return behavior_root() / run


def flat_cache_path(minari_id: str) -> Path:
    """The .npz flat-array cache of a Minari dataset (schema version in the name)."""
    return cache_dir() / "flat-v2" / (minari_id.replace("/", "__") + ".npz")


def default_run_dir(name: str) -> Path:
    """Default run directory of the train CLI: ./runs/<name>."""
    return Path("runs") / name
