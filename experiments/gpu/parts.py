"""The GPU check's parts as jobs within a budget, their records in the check's state, and its summary files (no JAX here)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from mopo_jax.run_layout import METRICS_FILE, RESULTS_FILE

from gpu import plan
from gpu.jobs import GRACE_S, Job, bench_summary, read_json, run_progress, write_json

NOTES = {  # log lines kept in the summary: what each part measured on the way
    "dataset": r"collected \d+/|writing |wrote |read \d+ transitions",
    "fit": r"epochs run:|wall time:|holdout MSE per member",
    "policy": r"compiled the|final evaluation|checkpoint at epoch|^\{",
}


def device_name(machine: dict) -> str:
    """The file-name form of a probed machine, e.g. 'gpu-nvidia_h200'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{machine['backend']}-{machine['device_kind']}").lower()


def bench_path(work: Path, name: str) -> Path:
    """The benchmark's results file in the work folder, for machine `name` (`device_name`)."""
    return work / f"gpu-check-bench-{name}.json"


class Parts:
    """One command's parts: their jobs within the budget (`cmds`: each part's command line), their
    records in the state (`targets`: what each part makes), and the summary files, rewritten
    after every part and every 30 s during one (`runs`: the train runs' folders)."""

    def __init__(self, args, work: Path, out_dir: Path, state: dict, t0: float,
                 cmds: dict[str, list[str]], runs: list[Path], targets: dict[str, str]):
        self.args, self.work, self.out_dir, self.state, self.t0 = args, work, out_dir, state, t0
        self.stop_at = None if args.budget_seconds is None else t0 + args.budget_seconds - GRACE_S - 5
        self.cmds, self.runs, self.targets = cmds, runs, targets
        name = device_name(state["machine"])
        self.bench_file = bench_path(work, name)
        self.summary = out_dir / f"gpu-check-{name}.json"

    def save(self) -> None:
        """Write the state and the summary; copy the benchmark's files and the latest run's
        results and metrics next to the summary."""
        state, runs = self.state, self.runs
        state["runs"] = {r.name: run_progress(r) for r in runs if (r / RESULTS_FILE).exists()}
        state["benchmark"] = bench_summary(read_json(self.bench_file))
        state["elapsed_this_command_s"] = round(time.perf_counter() - self.t0, 1)
        write_json(self.work / "state.json", state)
        write_json(self.summary, state)
        latest = max((r for r in runs if (r / METRICS_FILE).exists()),
                     key=lambda r: (r / METRICS_FILE).stat().st_mtime, default=runs[0])
        bench_md = self.bench_file.with_suffix(".md")
        for src, dst in ((self.bench_file, self.bench_file.name), (bench_md, bench_md.name),
                         (latest / RESULTS_FILE, "gpu-check-run-results.json"),
                         (latest / METRICS_FILE, "gpu-check-run-metrics.jsonl")):
            if src.exists():
                shutil.copyfile(src, self.out_dir / dst)

    def record(self, part: str, job: Job | None, result: dict | None, status: str) -> None:
        """Record a part's status (and its seconds, log notes, failure tail); save; print."""
        entry = self.state["parts"].setdefault(part, {"seconds_per_command": []})
        entry["status"], entry["target"] = status, self.targets[part]
        if result:
            entry["seconds_per_command"].append(result["seconds"])
            entry["seconds"] = round(sum(entry["seconds_per_command"]), 1)
            entry["rc"] = result["rc"]
        if job and part in NOTES:
            lines = job.tail(10**6).splitlines()
            entry["log_notes"] = [x for x in lines if re.search(NOTES[part], x)][-8:]
        if status == "failed" and job:
            entry["log_tail"] = job.tail(30)
        self.save()
        print(f"[{time.perf_counter() - self.t0:6.0f} s] {part}: {status}"
              + (f" after {result['seconds']:.0f} s" if result else ""), flush=True)
        if job and status != "done":
            print(job.tail(), flush=True)

    def done(self, part: str) -> bool:
        """Whether the part is done (for this command's dataset and seeds)."""
        return self.state["parts"].get(part, {}).get("status") == "done"

    def start(self, part: str, **kw) -> Job | None:
        """Start the part's job unless it is done or its estimate does not fit the budget."""
        x = next(x for x in plan.parts(self.args.small) if x.name == part)
        if self.done(part):
            return None
        remaining = None if self.stop_at is None else self.stop_at - time.perf_counter()
        if not plan.may_start(x, remaining):
            self.record(part, None, None, "not started: budget")
            return None
        return Job(part, self.cmds[part], self.work / "logs" / f"{part}.log", **kw).start()

    def finish(self, part: str, job: Job | None) -> bool:
        """Wait for a started part (None: not started now); True when the part is done."""
        if job is not None:
            result = job.wait(self.stop_at, on_tick=self.save)
            status = ("stopped: budget" if result["stopped"] else "done" if result["rc"] == 0
                      else "failed")
            self.record(part, job, result, status)
        return self.done(part)
