"""Subprocesses with a deadline, atomic JSON files, the device probe, and the summaries of a run
directory and a benchmark (no JAX here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mopo_jax.run_layout import METRICS_FILE, RESULTS_FILE

GRACE_S = 30.0  # after SIGINT, seconds a part gets to save its state before SIGKILL
TICK_S = 30.0  # seconds between on_tick calls while waiting
PROBE = ("import json, os, sys, jax, jaxlib; d = jax.devices(); print(json.dumps({'backend': "
         "jax.default_backend(), 'device_kind': d[0].device_kind, 'device_count': len(d), "
         "'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'python': sys.version.split()[0], "
         "'host_cores': os.cpu_count()}))")


def write_json(path: str | Path, data) -> None:
    """Write `data` as JSON to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class Job:
    """One command, its output appended to `log`, stopped by SIGINT (then SIGKILL) at a deadline."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict | None = None):
        self.name, self.cmd, self.log, self.env = name, cmd, Path(log), env
        self.proc: subprocess.Popen | None = None
        self.started = self.ended = 0.0

    def start(self) -> Job:
        """Start the command (stdout and stderr go to the log)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as out:
            out.write(f"\n$ {' '.join(self.cmd)}\n")
            out.flush()
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        self.started = time.perf_counter()
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _watch(self) -> None:  # the end time, also when nobody waits yet (a part run beside another)
        self.proc.wait()
        self.ended = time.perf_counter()

    def wait(self, deadline: float | None, on_tick: Callable[[], None] | None = None) -> dict:
        """Wait for the end or the deadline (a time.perf_counter() value); at the deadline send
        SIGINT, wait GRACE_S, then SIGKILL. Returns {rc, seconds, stopped}."""
        assert self.proc is not None, "start() first"
        next_tick, stopped = time.perf_counter() + TICK_S, False
        while self.proc.poll() is None:
            now = time.perf_counter()
            if deadline is not None and now >= deadline and not stopped:
                stopped = True
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(GRACE_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                break
            if on_tick is not None and now >= next_tick:
                on_tick()
                next_tick = now + TICK_S
            time.sleep(0.5)
        self.proc.wait()
        ended = self.ended or time.perf_counter()
        return {"rc": self.proc.returncode, "seconds": round(ended - self.started, 2),
                "stopped": stopped}

    def tail(self, lines: int = 15) -> str:
        """The last lines of the log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def run_progress(run_dir: Path) -> dict:
    """What a train run directory shows so far: epochs, driver SAC steps/s and the scores."""
    results = read_json(run_dir / RESULTS_FILE) or {}
    rows = []
    try:
        with open(run_dir / METRICS_FILE) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pass
    rates, previous = [], {}
    for row in sorted(rows, key=lambda r: r["epoch"]):
        if row.get("chunk_seconds"):
            steps = row["sac_steps"] - previous.get(row["policy"], 0)
            previous[row["policy"]] = row["sac_steps"]
            if steps > 0:
                rates.append(steps / row["chunk_seconds"])
    rates.sort()
    evals = [r for r in rows if "eval_return" in r]
    policy = (results.get("policies") or {}).values()
    summary = next(iter(policy), {})
    return {
        "epochs_done": max((r["epoch"] for r in rows), default=0),
        "driver_sac_steps_per_s_median": round(rates[len(rates) // 2], 1) if rates else None,
        "driver_note": "per policy, evaluation every epoch included (the run's real pace)",
        "last_eval": ({k: evals[-1].get(k) for k in ("epoch", "eval_return", "normalized_score")}
                      if evals else None),
        "last10_normalized_score": summary.get("last10_normalized_score"),
        "best_normalized_score": summary.get("best_normalized_score"),
        "final_normalized_score": results.get("final_normalized_score"),
        "final_eval_normalized_score": results.get("final_eval_normalized_score"),
    }


def probe(env: dict) -> dict:
    """The device and versions, read in a subprocess (this process never starts a JAX backend,
    so it holds no GPU memory while the parts run)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=False,
                         env={**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, timeout=300)
    if out.returncode:
        raise SystemExit(f"JAX probe failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_summary(result: dict | None) -> dict | None:
    """The headline numbers of the benchmark JSON: per measurement of parts a-d, seconds per
    call, compile seconds and rate (grad steps/s, SAC steps/s); the d ratio most-vs-1 policy."""
    if not result:
        return None
    out = {}
    for part, records in result.get("parts", {}).items():
        for key, rec in records.items():
            out[f"{part}_{key}"] = {
                "median_s": rec["seconds"]["median"], "compile_s": rec.get("compile_s"),
                "rate": (rec.get("rate") or {}).get("median"), "unit": rec.get("unit"),
                "gflop_per_s": rec.get("gflop_per_s"), "device_memory": rec.get("device_memory")}
    d = result.get("parts", {}).get("d", {})
    seeds = sorted(d, key=lambda k: int(k.split("_")[1]))
    if len(seeds) > 1:
        first, last = d[seeds[0]], d[seeds[-1]]
        out["d_aggregate_ratio"] = {"policies": [first["num_seeds"], last["num_seeds"]],
                                    "ratio": round(last["rate"]["median"] / first["rate"]["median"], 2)}
    return out
