"""Reading training run directories: config.json and metrics.jsonl, split into per-policy histories."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mopo_jax.run_layout import CONFIG_FILE, METRICS_FILE
from mopo_jax.rundir import RunDirError, read_jsonl

SCORE = "normalized_score"
RETURN = "eval_return"
GROUP_FIELDS = ("dataset", "rollout_length", "penalty_coef")


class Run(NamedTuple):
    """One run directory: its path, config.json contents and metrics.jsonl rows (file order)."""

    path: Path
    config: dict
    rows: list[dict]


class PolicyHistory(NamedTuple):
    """The metrics rows of one policy of one run, one per epoch, sorted by epoch."""

    run: Path
    policy: str
    dataset: str
    rollout_length: int
    penalty_coef: float
    seed: int
    rows: list[dict]


def load_run(path: str | os.PathLike) -> Run:
    """Read `<path>/config.json` and `<path>/metrics.jsonl`.

    A torn last line of metrics.jsonl (a run killed mid-write) is dropped by
    `mopo_jax.rundir.read_jsonl`. Raises RunDirError with a clear message when `path` is not a
    run directory, config.json is unreadable, or there are no metrics rows yet.
    """
    path = Path(path)
    config_path, metrics_path = path / CONFIG_FILE, path / METRICS_FILE
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory; give a training run directory")
    if not config_path.is_file():
        raise RunDirError(f"{path} is not a training run directory (no config.json); give the "
                          "folder that `python -m mopo_jax.train` wrote")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise RunDirError(f"{config_path} is unreadable ({err}); is the run directory intact?") from err
    if not isinstance(config, dict):
        raise RunDirError(f"{config_path} does not hold a JSON object")
    rows = read_jsonl(metrics_path, repair=False)
    if not rows and config.get("phase"):
        raise RunDirError(f"{path} is a training run that is {config['phase']}; it has no "
                          "metrics yet: report again after its first policy epoch")
    if not rows:
        raise RunDirError(f"{path} has no metrics yet ({metrics_path.name} is missing or empty); "
                          "report again after the first epoch has been written")
    return Run(path, config, rows)


def policy_histories(runs: list[Run]) -> list[PolicyHistory]:
    """Split the runs' rows by policy (rows missing dataset/h/λ fall back to config["config"]).

    Within a policy, a repeated epoch keeps its last row (the one written after a resume).
    Raises RunDirError when one (dataset, h, λ, seed) appears in two runs (it would count twice).
    """
    histories, owner = [], {}
    for run in runs:
        defaults = run.config.get("config", {})
        by_policy: dict[str, dict[int, dict]] = {}
        for row in run.rows:
            if "policy" not in row or "epoch" not in row:
                raise RunDirError(f"{run.path / METRICS_FILE}: row without 'policy'/'epoch': "
                                  f"{json.dumps(row)[:120]}")
            by_policy.setdefault(row["policy"], {})[int(row["epoch"])] = row
        for policy, epochs in by_policy.items():
            rows = [epochs[e] for e in sorted(epochs)]
            first = rows[0]
            try:
                fields = {k: first[k] if k in first else defaults[k] for k in GROUP_FIELDS + ("seed",)}
            except KeyError as err:
                raise RunDirError(f"{run.path}: policy {policy} has no {err} in its rows or in "
                                  "config.json") from err
            key = (fields["dataset"], int(fields["rollout_length"]),
                   float(fields["penalty_coef"]), int(fields["seed"]))
            if key in owner:
                raise RunDirError(f"{key[0]} h={key[1]} λ={key[2]:g} seed {key[3]} is in both "
                                  f"{owner[key]} and {run.path}; report each run once")
            owner[key] = run.path
            histories.append(PolicyHistory(run.path, policy, *key, rows))
    return histories


def has_scores(history: PolicyHistory) -> bool:
    """True when every evaluation row of the policy has a normalised score (not null)."""
    return all(row.get(SCORE) is not None for row in history.rows if row.get(RETURN) is not None)


def eval_series(history: PolicyHistory, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs [E] int, values [E] float) of the policy's evaluation rows, by epoch.

    metric: "normalized_score" or "eval_return". Rows without "eval_return" are training-only.
    """
    rows = [r for r in history.rows if r.get(RETURN) is not None]
    epochs = np.array([r["epoch"] for r in rows], dtype=np.int64)
    values = np.array([_float(r.get(metric)) for r in rows], dtype=np.float64)
    return epochs, values


def metric_series(history: PolicyHistory, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs [N] int, values [N] float, NaN where absent) of one training metric, all rows."""
    epochs = np.array([r["epoch"] for r in history.rows], dtype=np.int64)
    return epochs, np.array([_float(r.get(metric)) for r in history.rows], dtype=np.float64)


def _float(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def reference_sources(runs: list[Run]) -> list[str]:
    """Distinct reference-score sources named in the runs' config.json ("ref_source"), in order."""
    sources = []
    for run in runs:
        source = run.config.get("ref_source") or f"not recorded in {run.path / CONFIG_FILE}"
        if source not in sources:
            sources.append(source)
    return sources
