"""A run's results rebuilt from its metrics rows (metrics.jsonl is the source of truth)."""

from __future__ import annotations

import math

import numpy as np

LAST_K = 10  # the usual report: mean of the last 10 evaluations


def _finite_or_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def policy_results(rows: list[dict]) -> dict:
    """Summary of one policy's rows (any order): its evaluations by epoch, the final one, the
    mean of the last LAST_K, and the best. Scores are None where there is no reference (OOD)."""
    evals = sorted((r for r in rows if "eval_return" in r), key=lambda r: r["epoch"])
    out = {"evaluations": [{"epoch": r["epoch"], "return_mean": r["eval_return"],
                            "return_std": r["eval_return_std"],
                            "normalized_score": r.get("normalized_score")} for r in evals]}
    if not evals:
        return out | {"final_return_mean": None, "final_normalized_score": None}
    last = evals[-LAST_K:]
    best = max(evals, key=lambda r: (r["eval_return"], -r["epoch"]))
    scores = [r.get("normalized_score") for r in last]
    return out | {
        "final_epoch": evals[-1]["epoch"],
        "final_return_mean": evals[-1]["eval_return"],
        "final_normalized_score": evals[-1].get("normalized_score"),
        f"last{LAST_K}_return_mean": float(np.mean([r["eval_return"] for r in last])),
        f"last{LAST_K}_normalized_score": (None if any(s is None for s in scores)
                                            else float(np.mean(scores))),
        "best_epoch": best["epoch"], "best_return_mean": best["eval_return"],
        "best_normalized_score": best.get("normalized_score"),
    }


def build_results(rows: list[dict], policy_ids: list[str], meta: dict) -> dict:
    """results.json content: per-policy summaries (in `policy_ids` order) plus the run's identity.

    `meta` supplies dataset, ref_source and dataset_source. final_return_mean and
    final_normalized_score are lists in policy order (None where a policy has no evaluation yet).
    """
    by_policy = {pid: [] for pid in policy_ids}
    for row in rows:
        by_policy.setdefault(row["policy"], []).append(row)
    summaries = {pid: policy_results(by_policy[pid]) for pid in policy_ids}
    epochs = max((r["epoch"] for r in rows), default=0)
    return {
        "dataset": meta.get("dataset"), "epochs": epochs, "policies": summaries,
        "policy_ids": policy_ids,
        "final_return_mean": [summaries[p]["final_return_mean"] for p in policy_ids],
        "final_normalized_score": [_finite_or_none(summaries[p]["final_normalized_score"])
                                   for p in policy_ids],
        "ref_source": meta.get("ref_source"), "dataset_source": meta.get("dataset_source"),
    }
