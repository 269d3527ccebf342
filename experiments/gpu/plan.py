"""The GPU check's parts, their expected times on an H200, and the budget rule (no JAX here).

Estimates for one H200 at the paper's shapes, from the CPU figures measured in BENCHMARKS.md and
shared DESIGN §6, under these assumptions (none measured on a GPU yet):
  * small-batch matmul work on the GPU is latency-bound: a 7-member × batch-256 dynamics step
    (1.4 GFLOP) ~0.3 ms, a SAC step (0.64 GFLOP, twin Q 256×2, batch 256) ~0.15 ms;
  * the 50k × h=5 rollout (89 GFLOP per model step, 7 members) runs at ~30 TFLOP/s: ~15 ms;
  * compilation takes about twice its CPU time (BENCHMARKS.md: 1–9 s per program on CPU);
  * the host core is ~1.5× this project's 2-core EPYC VM: building hopper-random (measured here:
    50k random Hopper-v5 steps collected in 19 s, written in 6.7 s, read back in 4.7 s) scales to
    ~400 s for 1M; a 10-episode evaluation of a hopper-random policy (~250 steps an episode,
    ~1 ms of one-row actor calls + 10 × 0.13 ms of env steps per step) takes ~0.6 s;
  * the dynamics fit stops early after ~100 epochs of 3,900 steps on 1M rows (not measured).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One part of the check. `resumable`: a stopped part continues where it stopped, so it may
    start with `min_s` left; otherwise it starts only when its estimate fits."""

    name: str
    what: str
    estimate_s: float  # expected wall-clock on one H200 (full mode) or this CPU (--small)
    how: str  # the arithmetic behind the estimate
    resumable: bool
    min_s: float = 0.0


FULL = (
    Part("bench", "speed benchmark, parts a-d at paper shapes, 1 and 16 policies", 150,
         "~8 compilations x ~10 s + JAX start 15 s + timed calls <20 s (1000 SAC steps ~0.2 s; "
         "16 policies ~1-2 s an epoch, x4)", resumable=False),
    Part("dataset", "hopper-random build: 1M uniform-random Hopper-v5 steps (host CPU only, "
         "runs beside the benchmark)", 400,
         "50k steps took 30 s here (collect 19 + write 6.7 + read 4.7), so 1M ~610 s here; "
         "/ 1.5 for the device's faster host core", resumable=False),
    Part("fit", "dynamics ensemble fit on 1M rows (7 members, early stopping)", 150,
         "3,900 steps x 0.3 ms = 1.2 s an epoch, ~100 epochs, + 20 s compile", resumable=True,
         min_s=60),
    Part("policy", "1000 epochs x 1000 SAC steps + 50k x 5 rollout, 10-episode evaluation every "
         "epoch, 100-episode final evaluation", 650,
         "epoch on the GPU ~0.2 s (0.15 s SAC + 15 ms rollout) hidden behind the host's 0.6 s "
         "evaluation: 1000 x 0.6 s + 30 s compile + 15 s final evaluation", resumable=True,
         min_s=90),
)
SMALL = (  # --small on this project's 2-core CPU, measured by experiments/gpu/dry_run.sh
    Part("bench", "speed benchmark --quick, 1 and 2 policies", 110, "measured", resumable=False),
    Part("dataset", "hopper-random, 2,000 steps", 10, "measured", resumable=False),
    Part("fit", "dynamics fit on 2,000 rows, 3 epochs", 15, "measured", resumable=True, min_s=10),
    Part("policy", "3 tiny epochs, evaluation every epoch, 2-episode final evaluation", 30,
         "measured", resumable=True, min_s=10),
)
INSTALL_S = 30  # offline wheel install + import check, per command
MACHINE_START_S = 90  # device README: a minute or more to start a machine


def parts(small: bool) -> tuple[Part, ...]:
    """The parts in priority order."""
    return SMALL if small else FULL


def total_s(small: bool) -> float:
    """Expected wall-clock of the whole check: the dataset overlaps the benchmark."""
    p = {x.name: x.estimate_s for x in parts(small)}
    return max(p["bench"], p["dataset"]) + p["fit"] + p["policy"]


def plan_text(small: bool, budget_s: float | None) -> str:
    """The plan printed before the check starts."""
    where = "this CPU (--small)" if small else "one H200 (estimates; see experiments/gpu/plan.py)"
    lines = [f"plan, expected wall-clock on {where}:"]
    for x in parts(small):
        kind = "resumable" if x.resumable else "restarts if stopped"
        lines.append(f"  {x.name:<8} {x.estimate_s:5.0f} s  {x.what} [{kind}]")
        if not small:
            lines.append(f"  {'':<8} {'':>7}  ({x.how})")
    total = total_s(small)
    lines.append(f"  total    {total:5.0f} s  (dataset beside bench), plus ~{INSTALL_S} s install "
                 f"+ import check per command and ~{MACHINE_START_S} s to start a machine")
    if not small:
        lines.append(f"  => ~{(total + INSTALL_S + MACHINE_START_S) / 60:.0f} min of device time: "
                     "more than one 15-minute session; a second command on the warm machine "
                     "continues where the first stopped")
    if budget_s is not None:
        lines.append(f"  budget: {budget_s:.0f} s for this command; a part starts only if it can "
                     "finish (or, if resumable, make progress) inside it")
    return "\n".join(lines)


def may_start(part: Part, remaining_s: float | None) -> bool:
    """The budget rule: unlimited, or the estimate fits, or a resumable part has min_s left."""
    if remaining_s is None:
        return True
    return remaining_s >= (part.min_s if part.resumable else part.estimate_s)
