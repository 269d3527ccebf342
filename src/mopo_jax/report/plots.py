"""PNG figures of training runs: learning curves and diagnostics (matplotlib Agg, imported lazily)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from mopo_jax.files import atomic_write_bytes
from mopo_jax.report.runs import RETURN, SCORE, PolicyHistory, eval_series, has_scores, metric_series

MAX_PNG_BYTES = 200_000
DPIS = (90, 70, 50)  # tried in turn until the PNG fits in MAX_PNG_BYTES
DIAGNOSTICS = (("q_mean", "Q mean"), ("critic_loss", "critic loss"),
               ("rollout_penalty", "rollout penalty"), ("alpha", "alpha"),
               ("rollout_mean_length", "rollout mean length"))


class PlotsUnavailable(ImportError):
    """matplotlib is not installed; the message names the extra to install."""


FEW_POINTS = 20  # curves with at most this many evaluations are drawn with point markers


def _matplotlib():
    """(Figure, FigureCanvasAgg), without pyplot: no global backend switch, no GUI."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise PlotsUnavailable("plots need matplotlib: pip install 'mopo_jax[plot]'") from err
    return Figure, FigureCanvasAgg


def band(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Mean and std over seeds of per-seed curves that may cover different epochs.

    series: per seed (epochs [E_i], values [E_i]). Returns (epochs [E], mean [E], std [E],
    count [E]) on the sorted union of finite epochs: mean/std (ddof=1; 0 for one seed) over the
    seeds with a finite value there, count = how many seeds that is.
    """
    series = [(e[np.isfinite(v)], v[np.isfinite(v)]) for e, v in series]
    epochs = np.unique(np.concatenate([e for e, _ in series] + [np.zeros(0, np.int64)]))
    table = np.full((len(series), len(epochs)), np.nan)
    for i, (e, v) in enumerate(series):
        table[i, np.searchsorted(epochs, e)] = v
    have = np.isfinite(table)
    count = have.sum(axis=0)
    filled = np.where(have, table, 0.0)
    mean = filled.sum(axis=0) / np.maximum(count, 1)
    sq = np.where(have, (table - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(sq / np.maximum(count - 1, 1))
    return epochs, mean, std, count


def _save(fig, path: Path) -> Path:
    """Render `fig` as PNG at the first DPIS entry that fits MAX_PNG_BYTES; write atomically."""
    for dpi in DPIS:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        data = buf.getvalue()
        if len(data) <= MAX_PNG_BYTES:
            break
    atomic_write_bytes(path, data)
    return path


def _cells(histories: list[PolicyHistory]) -> dict[tuple[str, int], dict[float, list[PolicyHistory]]]:
    cells: dict[tuple[str, int], dict[float, list[PolicyHistory]]] = {}
    for h in sorted(histories, key=lambda h: (h.dataset, h.rollout_length, h.penalty_coef, h.seed)):
        cells.setdefault((h.dataset, h.rollout_length), {}).setdefault(h.penalty_coef, []).append(h)
    return cells


def _draw(ax, series: list[tuple[np.ndarray, np.ndarray]], label: str) -> bool:
    """One mean line with a ±std band; False (nothing drawn) when no value is finite."""
    epochs, mean, std, _ = band(series)
    if not len(epochs):
        return False
    marker = "o" if len(epochs) <= FEW_POINTS else None  # a 2-point curve still shows its points
    (line,) = ax.plot(epochs, mean, label=label, linewidth=1.2, marker=marker, markersize=3)
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return True


def _epoch_axis(ax) -> None:
    """Integer epoch ticks and plain numbers (no offset notation) on both axes, at any run length."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="both", style="plain", useOffset=False)


def _grid(num_panels: int, ncols: int, panel_size=(4.0, 2.8)):
    figure, canvas = _matplotlib()
    ncols = min(ncols, num_panels)
    nrows = math.ceil(num_panels / ncols)
    fig = figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    canvas(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[num_panels:]:
        ax.set_axis_off()
    return fig, axes


def plot_learning_curves(histories: list[PolicyHistory], path: str | Path) -> Path:
    """Evaluation score vs epoch, mean ± std band over seeds per λ, one panel per (dataset, h).

    The score is the normalised score, or the raw return for a panel where some policy has none.
    Policies without an evaluation are skipped. Returns `path`.
    """
    cells = _cells([h for h in histories if len(eval_series(h, RETURN)[0])])
    if not cells:
        raise ValueError("no evaluated policy to plot")
    fig, axes = _grid(len(cells), ncols=3)
    for ax, ((dataset, h), by_lam) in zip(axes, cells.items()):
        metric = SCORE if all(has_scores(p) for ps in by_lam.values() for p in ps) else RETURN
        for lam, members in by_lam.items():
            _draw(ax, [eval_series(p, metric) for p in members], f"λ={lam:g} (n={len(members)})")
        ax.set_title(f"{dataset}, h={h}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        _epoch_axis(ax)
        ax.set_ylabel("normalised score" if metric == SCORE else "return", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_diagnostics(histories: list[PolicyHistory], path: str | Path, title: str = "") -> Path:
    """Training diagnostics vs epoch (Q mean, critic loss, rollout penalty, alpha, rollout mean
    length), mean ± std band over seeds per λ, one panel per metric. Returns `path`."""
    cells = _cells(histories)
    if len(cells) != 1:
        raise ValueError(f"plot_diagnostics takes the policies of one (dataset, h), got {len(cells)}")
    by_lam = next(iter(cells.values()))
    fig, axes = _grid(len(DIAGNOSTICS) + 1, ncols=3, panel_size=(3.6, 2.5))
    axes[len(DIAGNOSTICS)].set_axis_off()  # holds the legend
    for ax, (metric, label) in zip(axes, DIAGNOSTICS):
        drawn = [_draw(ax, [metric_series(p, metric) for p in members], f"λ={lam:g}")
                 for lam, members in by_lam.items()]
        if not any(drawn):
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        _epoch_axis(ax)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes[:len(DIAGNOSTICS)]),
                          key=lambda hl: len(hl[0]))
    if handles:
        axes[len(DIAGNOSTICS)].legend(handles, labels, loc="center", fontsize=8, title=title,
                                      title_fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def write_plots(histories: list[PolicyHistory], out_dir: str | Path) -> list[Path]:
    """`learning_curves.png` and one `diagnostics_<dataset>_h<h>.png` per (dataset, h) in `out_dir`.

    Raises PlotsUnavailable when matplotlib is missing. Returns the paths written.
    """
    out_dir = Path(out_dir)
    paths = [plot_learning_curves(histories, out_dir / "learning_curves.png")]
    for (dataset, h), by_lam in _cells(histories).items():
        members = [p for ps in by_lam.values() for p in ps]
        paths.append(plot_diagnostics(members, out_dir / f"diagnostics_{dataset}_h{h}.png",
                                      title=f"{dataset}, h={h}"))
    return paths
