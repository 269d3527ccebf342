"""Result tables: scores over seeds per (dataset, h, λ), the best λ, IQM with bootstrap intervals."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from mopo_jax.mopo.config import DEFAULT_PRESET, PAPER_PRESETS
from mopo_jax.mopo.results import LAST_K, last_window
from mopo_jax.report.runs import RETURN, SCORE, PolicyHistory, eval_series, has_scores
from mopo_jax.rundir import RunDirError

MIN_SEEDS_FOR_IQM = 5


class GroupSummary(NamedTuple):
    """Scores of one (dataset, h, λ) over its seeds.

    metric: "normalized_score", or "eval_return" (raw returns) when some policy of the group has
    no normalised score (OOD tasks without reference scores). final_*: over seeds of each policy's
    last evaluation. last_k_*: over seeds of the mean of each policy's evaluations in the last
    `last_k` epochs of its run; min_window_evals: how many evaluations that window held for the
    policy with fewest (last_k with evaluation every epoch). final_eval_*: over seeds of the final
    evaluation on fresh start states (None where a policy has none). Std: sample std over seeds
    (ddof=1), NaN for one seed. iqm / iqm_ci: IQM of the last-k means and its 95% bootstrap
    interval, None below MIN_SEEDS_FOR_IQM seeds. preset: (h, λ) is the dataset's preset.
    best: highest last_k_mean among the num_lambdas λ of its (dataset, h), i.e. chosen by online
    evaluation on the test env.
    """

    dataset: str
    rollout_length: int
    penalty_coef: float
    metric: str
    seeds: tuple[int, ...]
    min_window_evals: int
    final_mean: float
    final_std: float
    last_k_mean: float
    last_k_std: float
    final_eval_mean: float | None
    final_eval_std: float | None
    iqm: float | None
    iqm_ci: tuple[float, float] | None
    preset: bool
    num_lambdas: int
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


def _final_evals(members: list[PolicyHistory], metric: str) -> np.ndarray | None:
    """Final-evaluation values [S] of the members (from their last rows), None if any lacks one."""
    field = "final_eval_normalized_score" if metric == SCORE else "final_eval_return"
    values = [h.rows[-1].get(field) if h.rows else None for h in members]
    return None if any(v is None for v in values) else np.array(values, dtype=np.float64)


def is_preset(dataset: str, rollout_length: int, penalty_coef: float) -> bool:
    """Whether (h, λ) is the dataset's preset (the original's setting, or the default (5, 1))."""
    return PAPER_PRESETS.get(dataset, DEFAULT_PRESET) == (rollout_length, penalty_coef)


def _summarize_group(key: tuple, members: list[PolicyHistory], last_k: int) -> GroupSummary:
    metric = SCORE if all(has_scores(h) for h in members) else RETURN
    series = [eval_series(h, metric) for h in members]
    windows = [last_window(epochs, last_k) for epochs, _ in series]
    final = np.array([values[-1] for _, values in series])
    last = np.array([values[w].mean() for (_, values), w in zip(series, windows)])
    finals = _final_evals(members, metric)
    enough = len(members) >= MIN_SEEDS_FOR_IQM
    return GroupSummary(
        *key, metric=metric, seeds=tuple(sorted(h.seed for h in members)),
        min_window_evals=min(int(w.sum()) for w in windows),
        final_mean=float(final.mean()), final_std=_std(final),
        last_k_mean=float(last.mean()), last_k_std=_std(last),
        final_eval_mean=None if finals is None else float(finals.mean()),
        final_eval_std=None if finals is None else _std(finals),
        iqm=iqm(last) if enough else None, iqm_ci=bootstrap_ci(last) if enough else None,
        preset=is_preset(*key), num_lambdas=1, best=False)


def summarize(histories: list[PolicyHistory], last_k: int = LAST_K) -> list[GroupSummary]:
    """One GroupSummary per (dataset, h, λ), sorted by dataset, h, then the preset λ first and the
    others by λ; policies with no evaluation yet are left out. Raises RunDirError when no policy
    has been evaluated."""
    groups: dict[tuple, list[PolicyHistory]] = {}
    for h in histories:
        if len(eval_series(h, RETURN)[0]):
            groups.setdefault((h.dataset, h.rollout_length, h.penalty_coef), []).append(h)
    if not groups:
        raise RunDirError("no policy has been evaluated yet (no metrics row has 'eval_return'); "
                          "report again after the first evaluation epoch")
    order = sorted(groups, key=lambda k: (k[0], k[1], not is_preset(*k), k[2]))
    out = [_summarize_group(key, groups[key], last_k) for key in order]
    best: dict[tuple, int] = {}
    count: dict[tuple, int] = {}
    for i, s in enumerate(out):
        cell = (s.dataset, s.rollout_length, s.metric)
        count[cell] = count.get(cell, 0) + 1
        if cell not in best or s.last_k_mean > out[best[cell]].last_k_mean:
            best[cell] = i
    return [s._replace(best=i in best.values(),
                       num_lambdas=count[(s.dataset, s.rollout_length, s.metric)])
            for i, s in enumerate(out)]


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def format_table(summaries: list[GroupSummary], last_k: int = LAST_K) -> str:
    """A markdown table, one line per GroupSummary: each (dataset, h)'s preset λ first (its
    headline row), the λ chosen by online evaluation in bold."""
    head = (f"| dataset | h | λ | seeds | score | final | last {last_k} epochs | final eval "
            f"(fresh states) | IQM last {last_k} epochs [95% CI] | λ chosen online |")
    lines = [head, "|" + "---|" * 10]
    for s in summaries:
        lam = f"**{s.penalty_coef:g}**" if s.best else f"{s.penalty_coef:g}"
        lam += " (preset)" if s.preset else ""
        iqm_text = "—" if s.iqm is None else f"{s.iqm:.1f} [{s.iqm_ci[0]:.1f}, {s.iqm_ci[1]:.1f}]"
        score = "normalised" if s.metric == SCORE else "raw return"
        last = _pm(s.last_k_mean, s.last_k_std) + ("" if s.min_window_evals >= last_k else
                                                   f" ({s.min_window_evals} evals)")
        final_eval = "—" if s.final_eval_mean is None else _pm(s.final_eval_mean, s.final_eval_std)
        chosen = f"best of {s.num_lambdas} (optimistic)" if s.best and s.num_lambdas > 1 else ""
        lines.append(f"| {s.dataset} | {s.rollout_length} | {lam} | {len(s.seeds)} | {score} | "
                     f"{_pm(s.final_mean, s.final_std)} | {last} | {final_eval} | {iqm_text} | "
                     f"{chosen} |")
    return "\n".join(lines)


def table_notes(reference_sources: list[str], last_k: int = LAST_K) -> str:
    """The markdown notes under the table: what each column means and where the references come from."""
    return "\n".join([
        f"- final: each policy's last evaluation; last {last_k} epochs: the mean of its "
        f"evaluations in the last {last_k} epochs of its run (one per epoch when evaluating every "
        "epoch, as the original; fewer are marked); mean ± sample std (ddof=1) over seeds.",
        "- final eval: the policy after the last epoch on start states no evaluation during "
        "training used (its episode count is in results.json).",
        f"- IQM: interquartile mean over seeds of the last-{last_k}-epoch means, with a 95% "
        f"percentile bootstrap interval (2000 resamples of seeds); only where ≥ "
        f"{MIN_SEEDS_FOR_IQM} seeds exist.",
        "- (preset): the dataset's (h, λ) from the original MOPO configs (h=5, λ=1 where it has "
        "none): each (dataset, h)'s headline row.",
        f"- λ chosen online (bold): the highest last-{last_k}-epoch mean among the λ tried for a "
        "(dataset, h), chosen by evaluating on the test env itself, so optimistic; 'best of N' "
        "gives the tuning budget. The same holds for any 'best' evaluation in results.json.",
        "- score: normalised = 100·(return − random)/(expert − random); raw return where the task "
        "has no reference scores.",
        "- reference scores: " + "; ".join(reference_sources),
    ])
