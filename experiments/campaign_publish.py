"""Publishing a campaign group's finished runs to experiments/results/<date>-<group>/ with a report."""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from campaign_lib import (LAST_K, LOG_FILE, STATE_FILE, Entry, duration, now_iso, pid_alive, progress,
                          read_state, write_state)
from mopo_jax.run_layout import CONFIG_FILE, METRICS_FILE, POLICIES, RESULTS_FILE

REPO = Path(__file__).resolve().parents[1]
REPORT_S = 1800  # seconds the report may take
MANIFEST = "campaign.json"  # marks a folder as a campaign publication (older ones get replaced)
RUN_STATE_COPY = "campaign_state.json"  # a published run's campaign.json (what restore puts back)


def copy_run(run_dir: Path, dest: Path) -> None:
    """Copy a run's config.json, results.json, gzipped metrics.jsonl, best/final actors and its
    campaign state (attempts: what `campaign.py restore` puts back) as campaign_state.json."""
    (dest / POLICIES).mkdir(parents=True)
    for name in (CONFIG_FILE, RESULTS_FILE):
        shutil.copy2(run_dir / name, dest / name)
    with open(run_dir / METRICS_FILE, "rb") as src, gzip.open(dest / f"{METRICS_FILE}.gz", "wb") as out:
        shutil.copyfileobj(src, out)
    for path in sorted((run_dir / POLICIES).glob("*")):
        if re.search(r"-(best|final)\.(msgpack|json)$", path.name):
            shutil.copy2(path, dest / POLICIES / path.name)
    if (run_dir / STATE_FILE).exists():  # with the count of logged starts, which the row shows
        state = read_state(run_dir) | {"starts_logged": _starts_logged(run_dir)}
        (dest / RUN_STATE_COPY).write_text(json.dumps(state, indent=2), encoding="utf-8")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_changes() -> str:
    """`git status --porcelain` of the repository outside experiments/results ("unknown" without
    git): publications, this one's temporary folder included, are not changes to the code."""
    return _git("status", "--porcelain", "--", ".", ":(exclude)experiments/results")


def _fmt(value, digits: int = 1) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value:.{digits}f}"


def _starts_logged(run_dir: Path) -> int:
    """How many times the campaign started the run's child (its campaign.log's start lines)."""
    try:
        text = (run_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(line.startswith("=== campaign: start ") for line in text.splitlines())


def _run_row(entry: Entry, run_dir: Path) -> str:
    """One README table row: the run, its config, scores and wall-clock."""
    config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    pid = results["policy_ids"][0]
    summary = results["policies"][pid]
    grid, prog = config.get("grid", {}), progress(run_dir, entry.epochs)
    state = read_state(run_dir)
    attempts = state.get("attempts", [])
    wall = sum(a.get("seconds", 0.0) for a in attempts)
    starts = max(_starts_logged(run_dir), state.get("starts_logged", 0))  # restored: no log
    counted = f"{len(attempts)} starts" + (
        f", {starts - len(attempts)} more unrecorded" if starts > len(attempts) else "")
    wall_text = (f"{duration(wall)} ({counted})" if attempts else
                 state.get("wall_clock") or "—")  # a restored run: its earlier publication's text
    scored = summary.get(f"last{LAST_K}_normalized_score") is not None
    score = "normalized_score" if scored else "return_mean"
    values = lambda key: ", ".join(f"{v:g}" for v in grid.get(key, []))  # noqa: E731
    return (f"| {entry.name} | {pid} | {values('penalty_coefs')} | {values('rollout_lengths')} | "
            f"{results['epochs']} | {_fmt(summary.get(f'final_{score}'))} | "
            f"{_fmt(summary.get(f'last{LAST_K}_{score}'))} | "
            f"{_fmt(summary.get(f'final_eval_{score}'))} | "
            f"{wall_text} | "
            f"{duration(prog.training_seconds)} | {config.get('device', '?')} |")


def readme(group: str, done: list[tuple[Entry, Path]], total: int, out: Path, report_note: str,
           campaign_cmd: str) -> str:
    """README.md of a publication: runs, exact commands, commit, machine, wall-clock."""
    configs = [json.loads((d / CONFIG_FILE).read_text(encoding="utf-8")) for _, d in done]
    dirty = {"": "", "unknown": " (whether the working tree had uncommitted changes is unknown)"}.get(
        code_changes(), " (the working tree had uncommitted changes)")
    run_commits = sorted({str(c.get("git_commit")) for c in configs})
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    lines = [
        f"# {group}: MOPO campaign, {len(done)} of {total} queued runs finished",
        "", f"Published {now_iso()} by `experiments/campaign.py`. Scores are D4RL-normalised where "
        f"the run has reference scores (else raw returns); last-{LAST_K} = mean of the evaluations "
        "of the last 10 epochs; final eval = the final evaluation on fresh start states.", "",
        "| run | policy | λ | h | epochs | final | last-10 | final eval | wall-clock | training "
        "| device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(_run_row(entry, run_dir) for entry, run_dir in done), "",
        "Wall-clock: the campaign's train processes from start to exit, all recorded starts summed "
        "(dataset, dynamics fit, compilation, checkpoints, resumes; a start ended by a kill counts "
        "to its last minute; \"unrecorded\" starts ran before the campaign recorded starts as they "
        "ran and are not counted); training: the compiled chunks' seconds.",
        "", "## Commands", "", "```bash", campaign_cmd, "# which ran, per run (from its config.json):",
        *(c.get("command", "?") for c in configs),
        f"python -m mopo_jax.report {' '.join(str(d) for _, d in done)} --out {shown}", "```", "",
        *([report_note] if report_note else []), "## Machine", "",
        f"- git commit at publication: {_git('rev-parse', 'HEAD')}{dirty}; runs' commits: "
        f"{', '.join(run_commits)}",
        f"- `uname -m`: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}",
        *(f"- {e.name}: {c.get('device', '?')}, jax {c.get('jax_version', '?')}"
          for (e, _), c in zip(done, configs)),
        "", "## Files", "",
        "Per run folder: `config.json`, `results.json`, `metrics.jsonl.gz` (gunzip to read), "
        "`policies/<id>-best|final.{msgpack,json}` (`mopo_jax.load_policy(prefix)`). "
        "`report.md` and the PNGs pool the runs above (`python -m mopo_jax.report`).", ""]
    return "\n".join(lines)


def _report(run_dirs: list[Path], out: Path) -> str:
    """Run the report over `run_dirs` into `out`; a note for the README when it failed."""
    try:
        proc = subprocess.run([sys.executable, "-m", "mopo_jax.report", *map(str, run_dirs),
                               "--out", str(out)], capture_output=True, text=True, timeout=REPORT_S)
    except subprocess.TimeoutExpired:
        return f"**The report failed**: it took over {REPORT_S} s\n"
    if proc.returncode == 0:
        return ""
    return (f"**The report failed** (exit {proc.returncode}): "
            f"`{(proc.stderr.strip().splitlines() or ['?'])[-1]}`\n")


def _clear_stale(results: Path, group: str) -> None:
    """Remove temporary folders of `group`'s publications left by campaign processes now dead."""
    pattern = r"\.\d{4}-\d{2}-\d{2}-" + re.escape(group) + r"\.(tmp|old)-(\d+)"
    for path in results.glob(f".*-{group}.*"):
        match = re.fullmatch(pattern, path.name)
        if match and path.is_dir() and not pid_alive(int(match[2]), needle="campaign"):
            shutil.rmtree(path, ignore_errors=True)


def _swap(tmp: Path, final: Path, group: str) -> None:
    """Put `tmp` in place of `final` (rename; the old folder moves aside first) and remove the
    group's publications of earlier days."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    for other in final.parent.glob(f"*-{group}"):
        if (other != final and re.fullmatch(r"\d{4}-\d{2}-\d{2}-" + re.escape(group), other.name)
                and (other / MANIFEST).exists()):
            shutil.rmtree(other)


def publish(group: str, queue: tuple[Entry, ...], root: Path, results: Path, campaign_cmd: str,
            say=print) -> Path | None:
    """Publish the finished runs of `group` into `results/<today>-<group>/`, replacing the group's
    previous publication. Returns the folder (None when no run of the group has finished)."""
    members = [e for e in queue if e.group == group]
    done = [(e, root / e.name) for e in members if progress(root / e.name, e.epochs).complete]
    if not done:
        return None
    results.mkdir(parents=True, exist_ok=True)
    _clear_stale(results, group)
    final = results / f"{time.strftime('%Y-%m-%d')}-{group}"
    tmp = results / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for entry, run_dir in done:
        copy_run(run_dir, tmp / entry.name)
    note = _report([d for _, d in done], tmp)
    (tmp / "README.md").write_text(readme(group, done, len(members), final, note, campaign_cmd),
                                   encoding="utf-8")
    (tmp / MANIFEST).write_text(json.dumps({"group": group, "published": now_iso(),
                                            "runs": [e.name for e, _ in done]}, indent=2))
    _swap(tmp, final, group)
    for _, run_dir in done:
        write_state(run_dir, read_state(run_dir) | {"published": now_iso(), "published_to": str(final)})
    say(f"published {len(done)} run(s) of {group} to {final}" + (" (report failed)" if note else ""))
    return final
