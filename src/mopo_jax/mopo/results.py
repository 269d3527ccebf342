"""A run's results rebuilt from its metrics rows (metrics.jsonl is the source of truth)."""

from __future__ import annotations

import math

import numpy as np

LAST_K = 10  # the usual report: the mean of the evaluations of the last 10 epochs
NOTES = {
    "last_k": f"last{LAST_K}_*: mean of the evaluations made in the last {LAST_K} epochs of the run "
              f"(every epoch's with eval_every=1, as the original; fewer with sparser evaluation: "
              f"last{LAST_K}_evaluations says how many)",
    "best": "best_*: the highest evaluation during training, chosen on the same evaluations it is "
            "scored on: optimistic, not a held-out score",
    "final_eval": "final_eval_*: the policy after the last epoch on final_eval_episodes start "
                  "states that no evaluation during training used",
}


def _finite_or_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def last_window(epochs: np.ndarray, last_k: int = LAST_K) -> np.ndarray:
    """Mask [E] of the evaluations (at `epochs` [E], ascending) inside the last `last_k` epochs of
    the run (epoch > last epoch − last_k); the last evaluation is always inside."""
    epochs = np.asarray(epochs)
    return epochs > (epochs[-1] - last_k) if len(epochs) else np.zeros(0, bool)


def _final_eval(last_row: dict) -> dict:
    """The final-evaluation fields of a policy, from its last row (None while there is none)."""
    return {"final_eval_return_mean": last_row.get("final_eval_return"),
            "final_eval_return_std": last_row.get("final_eval_return_std"),
            "final_eval_normalized_score": last_row.get("final_eval_normalized_score"),
            "final_eval_episodes": last_row.get("final_eval_episodes")}


def policy_results(rows: list[dict]) -> dict:
    """Summary of one policy's rows (any order): its evaluations by epoch, the final one, the mean
    of those in the last LAST_K epochs, the best (optimistic, see NOTES) and the final evaluation
    on fresh start states. Scores are None where there is no reference (OOD)."""
    ordered = sorted(rows, key=lambda r: r["epoch"])
    evals = [r for r in ordered if "eval_return" in r]
    out = {"evaluations": [{"epoch": r["epoch"], "return_mean": r["eval_return"],
                            "return_std": r["eval_return_std"],
                            "normalized_score": r.get("normalized_score")} for r in evals]}
    out |= _final_eval(ordered[-1]) if ordered else _final_eval({})
    if not evals:
        return out | {"final_return_mean": None, "final_normalized_score": None}
    inside = last_window(np.array([r["epoch"] for r in evals]))
    last = [r for r, keep in zip(evals, inside) if keep]
    best = max(evals, key=lambda r: (r["eval_return"], -r["epoch"]))
    scores = [r.get("normalized_score") for r in last]
    return out | {
        "final_epoch": evals[-1]["epoch"],
        "final_return_mean": evals[-1]["eval_return"],
        "final_normalized_score": evals[-1].get("normalized_score"),
        f"last{LAST_K}_return_mean": float(np.mean([r["eval_return"] for r in last])),
        f"last{LAST_K}_normalized_score": (None if any(s is None for s in scores)
                                            else float(np.mean(scores))),
        f"last{LAST_K}_evaluations": len(last),
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
        "final_eval_normalized_score": [summaries[p]["final_eval_normalized_score"]
                                        for p in policy_ids],
        "ref_source": meta.get("ref_source"), "dataset_source": meta.get("dataset_source"),
        "notes": NOTES,
    }
