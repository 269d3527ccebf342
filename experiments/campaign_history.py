"""The behaviour history a campaign's medium-replay runs need: trained before the group's first run.

`<env>-medium-replay` is the replay history of the online SAC run that the shipped medium policy
`<env>-medium` was taken from, up to the env step where it was taken (its policy file records the
step, the run's command line and the sha256 of its weights). When no local build of the dataset
exists and the history is missing or too short, the campaign trains that run afresh, in the folder
where dataset builds look (`mopo_jax.paths.behavior_run_dir(env)`), with the recorded command plus
`--stop-at <step>`, and then checks that the run's snapshot at that step has exactly the shipped
weights: only then is the history the one the medium policy came from.

A run the campaign started and that was interrupted is moved aside (`<env>.interrupted`) and
started again, because a resumed behaviour run abandons its open episode and so differs from the
original; a run it did not start is never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from collections.abc import Callable

from campaign_lib import now_iso, write_json
from mopo_jax import paths
from mopo_jax.run_layout import HISTORY_FILE

LEVEL = "medium-replay"
MARKER = "behavior-{env}.json"  # in the campaign root: this campaign started that behaviour run
LOG = "behavior-{env}.log"  # in the campaign root: the behaviour run's output


@dataclasses.dataclass(frozen=True)
class HistoryNeed:
    """The behaviour run a dataset is cut from: where it lives, how many env steps are needed,
    the command that trains it, and the sha256 its snapshot at `step` must have."""

    env: str
    run_dir: Path
    step: int
    argv: tuple[str, ...]
    weights_sha256: str


def history_need(dataset: str) -> HistoryNeed | None:
    """What `dataset` needs trained before its runs start; None when nothing (not a medium-replay
    dataset, already built here, no shipped medium policy: the run then reports that itself)."""
    env, _, level = dataset.partition("-")
    if level != LEVEL:
        return None
    from mopo_jax.data.minari_io import dataset_state
    from mopo_jax.data.recipes import find_policy
    from mopo_jax.envs.catalog import OUR_NAMESPACE

    prefix = find_policy(env, "medium")
    if prefix is None or dataset_state(f"{OUR_NAMESPACE}/{env}/{LEVEL}-v0") == "intact":
        return None
    meta = json.loads(prefix.with_suffix(".json").read_text(encoding="utf-8"))
    argv = shlex.split(meta["training_command"])
    argv = argv[argv.index("mopo_jax.behavior") + 1:]
    return HistoryNeed(env, paths.behavior_run_dir(env), int(meta["step"]), tuple(argv),
                       hashlib.sha256(prefix.with_suffix(".msgpack").read_bytes()).hexdigest())


def history_steps(run_dir: Path) -> int:
    """Env steps in the run's saved history (0 when it has none)."""
    if not (run_dir / HISTORY_FILE).exists():
        return 0
    from mopo_jax.behavior.artifacts import history_length

    return history_length(run_dir)


def behavior_command(need: HistoryNeed) -> list[str]:
    """The child's argv: the recorded training command, stopped at the needed step."""
    return [sys.executable, "-m", "mopo_jax.behavior", *need.argv, "--logdir", str(need.run_dir),
            "--stop-at", str(need.step), "--no-progress"]


def snapshot_matches(need: HistoryNeed) -> bool:
    """Whether the run's actor snapshot at `need.step` has exactly the shipped medium weights."""
    from mopo_jax.behavior.artifacts import snapshot_sha256

    return snapshot_sha256(need.run_dir, need.step) == need.weights_sha256


def ensure_history(need: HistoryNeed, root: Path, run_child: Callable[[list[str], Path], int],
                   say: Callable[[str], None]) -> bool:
    """Train the behaviour run `need` describes unless its history is there; True when the
    history is there and its snapshot matches the shipped policy. `run_child(argv, log)` runs a
    command with its output appended to `log` and returns its exit code."""
    marker, name = root / MARKER.format(env=need.env), f"behaviour run {need.run_dir}"
    if history_steps(need.run_dir) < need.step:
        if need.run_dir.exists() and not marker.exists():
            say(f"{name} holds {history_steps(need.run_dir)} of the {need.step} steps "
                f"{need.env}-{LEVEL} needs, and this campaign did not start it: finish it "
                f"(`python -m mopo_jax.behavior ... --resume --stop-at {need.step}`) or move it away")
            return False
        if need.run_dir.exists():
            aside = need.run_dir.with_name(f"{need.run_dir.name}.interrupted")
            say(f"{name} was interrupted; a resumed run would differ from the original, so it "
                f"moves to {aside} and starts again")
            if aside.exists():
                shutil.rmtree(aside)
            os.rename(need.run_dir, aside)
        cmd = behavior_command(need)
        say(f"training the history {need.env}-{LEVEL} is cut from: {shlex.join(['python', *cmd[1:]])}")
        _mark(marker, "running", need, command=shlex.join(cmd), started=now_iso())
        try:
            code = run_child(cmd, root / LOG.format(env=need.env))
        except BaseException:  # a stopped campaign: the next start begins this run again
            _mark(marker, "interrupted (it starts again with the next campaign run)", need)
            raise
        if code != 0 or history_steps(need.run_dir) < need.step:
            say(f"{name} failed (exit {code}); see {root / LOG.format(env=need.env)}")
            _mark(marker, f"failed (exit {code})", need)
            return False
    if not snapshot_matches(need):
        say(f"{name}: its snapshot at step {need.step} differs from the shipped {need.env}-medium "
            f"policy, so its history is not the one that policy came from; {need.env}-{LEVEL} is "
            "not built from it (another jax or CPU can change the run: see its evals.jsonl)")
        _mark(marker, "snapshot differs from the shipped policy", need)
        return False
    _mark(marker, "done (snapshot matches the shipped policy)", need)
    return True


def _mark(marker: Path, state: str, need: HistoryNeed, **fields) -> None:
    """Record the behaviour run's state in the campaign's marker file (atomically)."""
    try:
        old = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    write_json(marker, old | fields | {"state": state, "steps_needed": need.step, "updated": now_iso()})


def status_lines(root: Path) -> list[str]:
    """One line per behaviour run this campaign started: its state and its last evaluation line
    in the log (JSON and text only: no JAX)."""
    lines = []
    for marker in sorted(root.glob(MARKER.format(env="*"))):
        env = marker.name[len("behavior-"):-len(".json")]
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        try:
            log = (root / LOG.format(env=env)).read_text(encoding="utf-8").splitlines()
        except OSError:
            log = []
        last = next((ln.split()[1] for ln in reversed(log) if ln.startswith("step ")), "0")
        lines.append(f"behaviour history {env} (for {env}-{LEVEL}): {record.get('state', '?')}, "
                     f"evaluated at step {last} of {record.get('steps_needed', '?')}; "
                     f"log {root / LOG.format(env=env)}")
    return lines
