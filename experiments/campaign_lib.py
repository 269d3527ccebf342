"""The campaign's view of its run directories (queue entries, state files, progress, status); no JAX."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

from mopo_jax.files import atomic_write_bytes  # JAX-free
from mopo_jax.mopo.results import LAST_K  # the report's last-K window (numpy only, no JAX)
from mopo_jax.run_layout import METRICS_FILE, RESULTS_FILE, holds_run  # the train command's own test

STATE_FILE = "campaign.json"  # per run: state, child pid, attempts (start, end, exit code), publication
LOG_FILE = "campaign.log"  # per run: the train command's output, appended
RECENT_CHUNKS = 20  # the rate is the median over this many recent chunks


@dataclasses.dataclass(frozen=True)
class Entry:
    """One queued run: a dataset and seed, optional λ and h (None: the dataset's preset), its
    epochs, and the group (default: the dataset) whose finished runs are published together."""

    dataset: str
    seed: int
    penalty_coef: float | None = None
    rollout_length: int | None = None
    epochs: int = 1000
    group: str = ""

    def __post_init__(self):
        if not self.group:
            object.__setattr__(self, "group", self.dataset)

    @property
    def name(self) -> str:
        """The run directory's name under the campaign root, e.g. hopper-random-seed0."""
        name = f"{self.dataset}-seed{self.seed}"
        if self.penalty_coef is not None:
            name += f"-lam{self.penalty_coef:g}"
        if self.rollout_length is not None:
            name += f"-h{self.rollout_length}"
        return name


def load_queue_json(path: str | os.PathLike) -> tuple[Entry, ...]:
    """Entries from a JSON list of objects with Entry's fields (tests, one-off campaigns)."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of queue entries")
    return tuple(Entry(**item) for item in items)


def now_iso() -> str:
    """The local time, e.g. 2025-01-31T14:05:00+0100."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_state(run_dir: Path) -> dict:
    """The run's campaign.json ({} when absent or unreadable)."""
    try:
        state = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_json(path: Path, value) -> None:
    """Replace `path` with `value` as JSON atomically (`files.atomic_write_bytes`: temp file,
    fsync, rename)."""
    atomic_write_bytes(path, json.dumps(value, indent=2).encode("utf-8"))


def write_state(run_dir: Path, state: dict) -> None:
    """Replace the run's campaign.json atomically."""
    write_json(run_dir / STATE_FILE, state)


def read_rows(path: Path) -> list[dict]:
    """metrics.jsonl's rows, read-only: unparsable lines (a torn last line) are skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    rows = []
    for raw in data.splitlines():
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def policy_rows(rows: list[dict]) -> list[dict]:
    """The rows of the policy of the last row (one per run in this campaign), one per epoch (the
    last written wins: a resume rewrites the epochs since its checkpoint), sorted by epoch."""
    if not rows:
        return []
    policy = rows[-1].get("policy")
    by_epoch = {int(r["epoch"]): r for r in rows if r.get("policy") == policy}
    return [by_epoch[e] for e in sorted(by_epoch)]


def chunk_rates(rows: list[dict]) -> list[tuple[int, float]]:
    """[(epochs, seconds)] of each compiled chunk, from one policy's rows sorted by epoch.

    Every row of a chunk carries its `chunk_seconds`; a chunk ends at an evaluation (eval_every >
    0), so evaluation rows mark the ends. Without evaluations, runs of equal values are a chunk."""
    ends = [r for r in rows if "eval_return" in r and "chunk_seconds" in r]
    if ends:
        out, previous = [], 0
        for row in ends:
            out.append((int(row["epoch"]) - previous, float(row["chunk_seconds"])))
            previous = int(row["epoch"])
        return out
    out = []
    for row in rows:
        if "chunk_seconds" not in row:
            continue
        if out and out[-1][1] == float(row["chunk_seconds"]):
            out[-1] = (out[-1][0] + 1, out[-1][1])
        else:
            out.append((1, float(row["chunk_seconds"])))
    return out


def last_k_mean(rows: list[dict]) -> tuple[str, float] | None:
    """("score" or "return", mean) of the evaluations in the last LAST_K epochs (None: none yet)."""
    evals = [r for r in rows if r.get("eval_return") is not None]
    if not evals:
        return None
    last = [r for r in evals if r["epoch"] > evals[-1]["epoch"] - LAST_K]
    scores = [r.get("normalized_score") for r in last]
    if all(isinstance(s, (int, float)) for s in scores):
        return "score", statistics.fmean(scores)
    return "return", statistics.fmean(r["eval_return"] for r in last)


@dataclasses.dataclass
class Progress:
    """What a run directory says about a run: epochs written, the rate and the latest scores."""

    epochs_done: int = 0
    complete: bool = False  # every epoch 1..total written (or results.json says so)
    seconds_per_epoch: float | None = None
    training_seconds: float = 0.0  # the chunks' seconds summed (compile, fit and startup excluded)
    last_k: tuple[str, float] | None = None


def progress(run_dir: Path, total_epochs: int) -> Progress:
    """Read `run_dir`'s metrics.jsonl and results.json (plain JSON; fast, no JAX)."""
    rows = policy_rows(read_rows(run_dir / METRICS_FILE))
    epochs = {int(r["epoch"]) for r in rows}
    chunks = chunk_rates(rows)
    recent = [seconds / n for n, seconds in chunks[-RECENT_CHUNKS:] if n > 0]
    try:
        results_epochs = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        results_epochs = 0
    complete = epochs >= set(range(1, total_epochs + 1)) or (results_epochs or 0) >= total_epochs
    return Progress(max(epochs, default=0), complete,
                    statistics.median(recent) if recent else None,
                    sum(seconds for _, seconds in chunks), last_k_mean(rows))


def pid_alive(pid: int | None, needle: str = "mopo_jax.train") -> bool:
    """Whether process `pid` exists (and, where /proc shows it, its command line holds `needle`)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def run_state(run_dir: Path, prog: Progress) -> str:
    """pending, running, finished, failed (exit N) or stopped."""
    state = read_state(run_dir)
    if state.get("state") == "running" and pid_alive(state.get("pid")):
        return "running"
    if prog.complete:
        return "finished"
    if state.get("state") == "failed":
        return f"failed (exit {state.get('returncode')})"
    if state or holds_run(run_dir):
        return "stopped"
    return "pending"


def last_log_line(run_dir: Path, limit: int = 100) -> str:
    """The child's last non-empty line in the run's campaign.log (read from its end), shortened."""
    try:
        with open(run_dir / LOG_FILE, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines()
                     if ln.strip() and not ln.startswith("=== campaign:")]
    except OSError:
        return ""
    line = lines[-1].strip() if lines else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"


def duration(seconds: float) -> str:
    """A short human duration: 45 s, 12 min, 3.4 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def status_line(entry: Entry, run_dir: Path) -> str:
    """One status line: name, state, epochs done/total, s/epoch, ETA, last-10 mean (or log tail)."""
    prog = progress(run_dir, entry.epochs)
    state = run_state(run_dir, prog)
    line = f"{entry.name:32s} {state:16s} {prog.epochs_done:5d}/{entry.epochs:<5d}"
    if prog.seconds_per_epoch is not None:
        eta = max(entry.epochs - prog.epochs_done, 0) * prog.seconds_per_epoch
        line += f"  {prog.seconds_per_epoch:7.2f} s/epoch  " + (
            "done       " if prog.complete else f"ETA {duration(eta):>7s}")
    elif state != "pending":
        line += "  rate not known yet"
    if prog.last_k is not None:
        line += f"  last-{LAST_K} {prog.last_k[0]} {prog.last_k[1]:.1f}"
    if state != "pending" and (prog.epochs_done == 0 or state.startswith("failed")):
        line += f"  | log: {last_log_line(run_dir) or '(empty)'}"
    return line
