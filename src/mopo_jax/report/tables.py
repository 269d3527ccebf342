"""Result tables: scores over seeds per (dataset, h, λ), the best λ, IQM with bootstrap intervals."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from mopo_jax.report.runs import RETURN, SCORE, PolicyHistory, eval_series, has_scores
from mopo_jax.rundir import RunDirError

LAST_K = 10
MIN_SEEDS_FOR_IQM = 5


class GroupSummary(NamedTuple):
    """Scores of one (dataset, h, λ) over its seeds.

    metric: "normalized_score", or "eval_return" (raw returns) when some policy of the group has
    no normalised score (OOD tasks without reference scores). final_*: over seeds of each policy's
    last evaluation. last_k_*: over seeds of the mean of each policy's last `last_k` evaluations
    (fewer where fewer were run; min_evals says how many the shortest policy had). Std: sample
    std over seeds (ddof=1), NaN for one seed. iqm / iqm_ci: IQM of the last-k means and its 95%
    bootstrap interval, None below MIN_SEEDS_FOR_IQM seeds. best: highest last_k_mean among the
    λ of its (dataset, h).
    """

    dataset: str
    rollout_length: int
    penalty_coef: float
    metric: str
    seeds: tuple[int, ...]
    min_evals: int
    final_mean: float
    final_std: float
    last_k_mean: float
    last_k_std: float
    iqm: float | None
    iqm_ci: tuple[float, float] | None
    best: bool


def iqm(values: np.ndarray) -> float:
    """Interquartile mean (Agarwal et al. 2021): the mean of the middle 50% of `values` [N].

    floor(N/4) values are dropped from each end of the sorted values (as scipy.stats.trim_mean
    with proportion 0.25); for N < 4 nothing is dropped, so it is the plain mean.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = len(x) // 4
    return float(x[k:len(x) - k].mean())


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of samples [B, N] -> [B]."""
    x = np.sort(samples, axis=1)
    k = x.shape[1] // 4
    return x[:, k:x.shape[1] - k].mean(axis=1)


def bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray] = _iqm_rows,
                 num_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of a statistic of `values` [N] (resampling seeds).

    Draws `num_resamples` resamples of N values with replacement (numpy Generator seeded with
    `seed`, so the interval is reproducible), applies `statistic` ([B, N] -> [B], default: the
    IQM of each resample) and returns the (1−confidence)/2 and (1+confidence)/2 quantiles.
    """
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    stats = statistic(x[rng.integers(0, len(x), size=(num_resamples, len(x)))])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def _summarize_group(key: tuple, members: list[PolicyHistory], last_k: int) -> GroupSummary:
    metric = SCORE if all(has_scores(h) for h in members) else RETURN
    series = [eval_series(h, metric)[1] for h in members]
    final = np.array([s[-1] for s in series])
    last = np.array([s[-last_k:].mean() for s in series])
    enough = len(members) >= MIN_SEEDS_FOR_IQM
    return GroupSummary(
        *key, metric=metric, seeds=tuple(sorted(h.seed for h in members)),
        min_evals=min(len(s) for s in series), final_mean=float(final.mean()), final_std=_std(final),
        last_k_mean=float(last.mean()), last_k_std=_std(last),
        iqm=iqm(last) if enough else None, iqm_ci=bootstrap_ci(last) if enough else None, best=False)


def summarize(histories: list[PolicyHistory], last_k: int = LAST_K) -> list[GroupSummary]:
    """One GroupSummary per (dataset, h, λ), sorted by dataset, h, λ; policies with no evaluation
    yet are left out. Raises RunDirError when no policy has been evaluated."""
    groups: dict[tuple, list[PolicyHistory]] = {}
    for h in histories:
        if len(eval_series(h, RETURN)[0]):
            groups.setdefault((h.dataset, h.rollout_length, h.penalty_coef), []).append(h)
    if not groups:
        raise RunDirError("no policy has been evaluated yet (no metrics row has 'eval_return'); "
                          "report again after the first evaluation epoch")
    out = [_summarize_group(key, groups[key], last_k) for key in sorted(groups)]
    best: dict[tuple, int] = {}
    for i, s in enumerate(out):
        cell = (s.dataset, s.rollout_length, s.metric)
        if cell not in best or s.last_k_mean > out[best[cell]].last_k_mean:
            best[cell] = i
    return [s._replace(best=i in best.values()) for i, s in enumerate(out)]


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def format_table(summaries: list[GroupSummary], last_k: int = LAST_K) -> str:
    """A markdown table, one line per GroupSummary (the best λ of each (dataset, h) in bold)."""
    head = (f"| dataset | h | λ | seeds | score | final | last-{last_k} mean | "
            f"IQM last-{last_k} [95% CI] | best λ |")
    lines = [head, "|" + "---|" * 9]
    for s in summaries:
        lam = f"**{s.penalty_coef:g}**" if s.best else f"{s.penalty_coef:g}"
        iqm_text = "—" if s.iqm is None else f"{s.iqm:.1f} [{s.iqm_ci[0]:.1f}, {s.iqm_ci[1]:.1f}]"
        score = "normalised" if s.metric == SCORE else "raw return"
        last = _pm(s.last_k_mean, s.last_k_std) + ("" if s.min_evals >= last_k else
                                                   f" (only {s.min_evals} evals)")
        lines.append(f"| {s.dataset} | {s.rollout_length} | {lam} | {len(s.seeds)} | {score} | "
                     f"{_pm(s.final_mean, s.final_std)} | {last} | {iqm_text} | "
                     f"{'yes' if s.best else ''} |")
    return "\n".join(lines)


def table_notes(reference_sources: list[str], last_k: int = LAST_K) -> str:
    """The markdown notes under the table: what each column means and where the references come from."""
    return "\n".join([
        f"- final: each policy's last evaluation; last-{last_k} mean: the mean of its last {last_k} "
        "evaluations (fewer where fewer were run, as marked); mean ± sample std (ddof=1) over seeds.",
        f"- IQM: interquartile mean over seeds of the last-{last_k} means, with a 95% percentile "
        f"bootstrap interval (2000 resamples of seeds); only where ≥ {MIN_SEEDS_FOR_IQM} seeds exist.",
        f"- best λ (bold): the highest last-{last_k} mean among the λ of each (dataset, h).",
        "- score: normalised = 100·(return − random)/(expert − random); raw return where the task "
        "has no reference scores.",
        "- reference scores: " + "; ".join(reference_sources),
    ])
