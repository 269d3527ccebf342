"""The GPU check's parts, their expected times on an H200, and the budget rule (no JAX here).

Figures measured on one H200 of this workplace on 2026-12-04. Morning
(experiments/results/2026-12-04-gpu-check-h200/): the benchmark's parts a, b and d with 1 and 16
policies took 58 s; the hopper-random build 116 s (collect 103 s on the serial chain, write 8.7 s
on 16 processes, read 2.4 s); the fit of seed 2's ensemble 48 s (34 epochs to early stopping,
~1.1 s each); the policy step's compilation 10 s; a compiled epoch 0.136 s; the run's epochs
1.0–2.0 s with the evaluation in the train process. Evening
(experiments/results/2026-12-04-gpu-campaign-h200-walker2d/), with `--eval-workers 10`: the
walker2d-random build 155 s; two campaign runs of 251 and 303 s each, i.e. fits of 92 and 129 s
(71 and 102 epochs), compilation 13 s, and 1000 epochs at 0.134 and 0.145 s of wall-clock
(0.129 s compiled). Those policies fell early; a policy that survives whole episodes makes the
evaluation up to ~10× longer, which is not measured on the device yet.
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
    Part("bench", "speed benchmark, parts a-d at paper shapes, 1 and 16 policies", 75,
         "measured: parts a, b, d took 58 s; part c adds one compilation and 3 calls",
         resumable=False),
    Part("dataset", "the dataset's build: 1M uniform-random steps (host CPU only, runs beside "
         "the benchmark)", 150,
         "measured: hopper-random 116 s, walker2d-random 155 s (the serial chain 103 and 139 s)",
         resumable=False),
    Part("fit", "dynamics ensemble fit on 1M rows (7 members, early stopping)", 100,
         "measured: 48 s (hopper-random, 34 epochs) to 129 s (walker2d-random, 102 epochs) at "
         "~1.1-1.2 s an epoch; with --campaign each run fits inside the policy part",
         resumable=True, min_s=60),
    Part("policy", "per run: 1000 epochs x 1000 SAC steps + 50k x h rollout, 10-episode evaluation "
         "every epoch on 10 workers, 100-episode final evaluation", 200,
         "measured on walker2d-random: 13 s compile + 1000 x 0.134-0.145 s; policies that "
         "survive whole episodes evaluate longer (in the train process it measured 1.0-2.0 s an "
         "epoch)", resumable=True, min_s=90),
)
SMALL = (  # --small on this project's 2-core CPU, measured by experiments/gpu/dry_run.sh
    Part("bench", "speed benchmark --quick, 1 and 2 policies", 110, "measured", resumable=False),
    Part("dataset", "hopper-random, 2,000 steps", 10, "measured", resumable=False),
    Part("fit", "dynamics fit on 2,000 rows, 3 epochs", 15, "measured", resumable=True, min_s=10),
    Part("policy", "3 tiny epochs, evaluation every epoch, 2-episode final evaluation", 30,
         "measured", resumable=True, min_s=10),
)
INSTALL_S = 30  # offline wheel install + import check, per command
MACHINE_START_S = 90  # device README: a minute or more to start a machine (40 s seen 2026-12-04)
SESSION_MIN = 15  # device minutes a session may use


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
        minutes = (total + INSTALL_S + MACHINE_START_S) / 60
        lines.append(f"  => ~{minutes:.0f} min of device time: "
                     f"{'within' if minutes <= SESSION_MIN else 'more than'} one "
                     f"{SESSION_MIN}-minute session; no command may run over 10 minutes, so a second "
                     "command on the warm machine continues (or, detached, waits for) the first")
    if budget_s is not None:
        lines.append(f"  budget: {budget_s:.0f} s for this command; a part starts only if it can "
                     "finish (or, if resumable, make progress) inside it")
    return "\n".join(lines)


def may_start(part: Part, remaining_s: float | None) -> bool:
    """The budget rule: unlimited, or the estimate fits, or a resumable part has min_s left."""
    if remaining_s is None:
        return True
    return remaining_s >= (part.min_s if part.resumable else part.estimate_s)
