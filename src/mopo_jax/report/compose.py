"""`report(run_dirs, out_dir)`: a results table and figures of training runs, as report.md + PNGs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mopo_jax.mopo.results import LAST_K
from mopo_jax.report.plots import PlotsUnavailable, write_plots
from mopo_jax.report.runs import Run, load_run, policy_histories, reference_sources
from mopo_jax.report.tables import format_table, summarize, table_notes
from mopo_jax.run_layout import REPORT_FILE
from mopo_jax.rundir import write_text_atomic



def _run_line(run: Run) -> str:
    extras = [f"{k}: {run.config[k]}" for k in ("dataset_source", "device", "jax_version")
              if run.config.get(k)]
    return f"- `{run.path}`" + (f" ({'; '.join(extras)})" if extras else "")


def _markdown(runs: list[Run], table: str, notes: str, plots: list[Path], skipped: str | None,
              out_dir: Path) -> str:
    parts = ["# MOPO results", "", "Runs:", *map(_run_line, runs), "", table, "", notes, ""]
    if skipped:
        parts += [f"_Plots skipped: {skipped}._", ""]
    elif plots:
        parts += ["## Learning curves", "", f"![learning curves]({plots[0].relative_to(out_dir)})", "",
                  "## Training diagnostics", ""]
        parts += [f"![{p.stem}]({p.relative_to(out_dir)})\n" for p in plots[1:]]
    return "\n".join(parts).rstrip("\n") + "\n"


def report(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike | None = None,
           plots: bool = True, last_k: int = LAST_K) -> dict[str, Any]:
    """Summarise training run directories into `<out_dir>/report.md` (+ PNG figures there).

    run_dirs: one or more run directories (their policies are pooled per (dataset, h, λ); a
    seed may appear in only one of them). out_dir: default the first run directory.
    plots: False skips the figures; they are also skipped, with a note in report.md, when
    matplotlib is not installed. Every file is written atomically.
    Returns {"table": markdown table, "notes": its notes, "summaries": [GroupSummary as dict],
    "report": path of report.md, "plots": [PNG paths], "plots_skipped": reason or None,
    "reference_sources": [str]}. Raises RunDirError (mopo_jax.rundir) for a path that is not a
    run directory, or runs with no metrics or no evaluation yet.
    """
    if not run_dirs:
        raise ValueError("report needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    histories = policy_histories(runs)
    summaries = summarize(histories, last_k)
    table, sources = format_table(summaries, last_k), reference_sources(runs)
    notes = table_notes(sources, last_k)
    out = Path(out_dir) if out_dir is not None else runs[0].path
    out.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    skipped = None if plots else "not requested"
    if plots:
        try:
            pngs = write_plots(histories, out)
        except PlotsUnavailable as err:
            skipped = str(err)
    path = out / REPORT_FILE
    write_text_atomic(path, _markdown(runs, table, notes, pngs, skipped, out))
    return {"table": table, "notes": notes, "summaries": [s._asdict() for s in summaries],
            "report": path, "plots": pngs, "plots_skipped": skipped, "reference_sources": sources}
