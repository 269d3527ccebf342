"""Artifacts of a behaviour-training run: the transition history file, snapshots, shipped policies."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import jax
import numpy as np

from mopo_jax import checkpoint, files
from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.envs.extras import EXTRA_FIELDS, StepExtras, step_extras
from mopo_jax.run_layout import HISTORY_FILE, SNAPSHOTS
from mopo_jax.sac import policy_io

HISTORY_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations",
                  "truncations")
# Optional per-row fields (mopo_jax.envs.extras: positions [N, p], next_positions [N, p],
# reset_heights [N], contact_forces_sq [N], float64): histories written before they were recorded
# lack them, and rows of such a run continued by a resume hold NaN there.
OPTIONAL_FIELDS = EXTRA_FIELDS
_SNAPSHOT = re.compile(r"^step_(\d+)\.json$")


def cut_history(history: dict, upto_step: int) -> dict:
    """First `upto_step` rows (copies); the last row is marked truncated unless it terminated, since
    the episode it belongs to is cut there. Optional fields present in `history` are kept."""
    fields = HISTORY_FIELDS + tuple(k for k in OPTIONAL_FIELDS if k in history)
    out = {k: np.array(history[k][:upto_step]) for k in fields}
    if upto_step > 0 and not out["terminations"][-1]:
        out["truncations"][-1] = True
    return out


def empty_history(total: int, obs_dim: int, act_dim: int, pos_dim: int) -> dict:
    """Zeroed host history of `total` rows (layout as `load_history` returns), with the step
    extras (positions [total, pos_dim] etc.) NaN until recorded: rows restored from a history
    written before extras were recorded keep NaN there."""
    extras = {k: np.full((total, pos_dim) if "positions" in k else total, np.nan)
              for k in EXTRA_FIELDS}
    return {"observations": np.zeros((total, obs_dim)), "actions": np.zeros((total, act_dim), np.float32),
            "rewards": np.zeros(total), "next_observations": np.zeros((total, obs_dim)),
            "terminations": np.zeros(total, bool), "truncations": np.zeros(total, bool), **extras}


def save_history(logdir: str | Path, history: dict, num_steps: int) -> None:
    """Write rows [0, num_steps) (via `cut_history`) to `<logdir>/history.npz` atomically
    (`files.atomic_write`: temp file + os.replace, mode 0o666 & ~umask)."""
    arrays = cut_history(history, num_steps)
    files.atomic_write(Path(logdir) / HISTORY_FILE,
                            lambda f: np.savez(f, num_steps=np.int64(num_steps), **arrays))


def history_length(logdir: str | Path) -> int:
    """Number of transitions saved in `<logdir>/history.npz` (reads only that count)."""
    with np.load(Path(logdir) / HISTORY_FILE, allow_pickle=False) as f:
        return int(f["num_steps"])


def load_history(logdir: str | Path, upto_step: int | None = None) -> dict:
    """Transitions [0, upto_step) of a run, in env order (default: all saved rows).

    Returns observations [N, o] f64, actions [N, a] f32, rewards [N] f64, next_observations [N, o]
    f64, terminations [N] bool (bootstrap flag), truncations [N] bool (time limit, or the episode was
    cut: at a resume, at the end of the run, or at upto_step). Episodes end where either is set.
    Plus, when the file has them, the OPTIONAL_FIELDS (the per-step extras; see `history_extras`).
    """
    path = Path(logdir) / HISTORY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {logdir} a behaviour-training run?")
    with np.load(path, allow_pickle=False) as f:
        saved = int(f["num_steps"])
        fields = HISTORY_FIELDS + tuple(k for k in OPTIONAL_FIELDS if k in f.files)
        history = {k: f[k] for k in fields}
    upto = saved if upto_step is None else upto_step
    if not 0 <= upto <= saved:
        raise ValueError(f"upto_step={upto_step} is outside [0, {saved}] (rows saved in {path})")
    return cut_history(history, upto)


def history_extras(history: dict) -> StepExtras:
    """The `StepExtras` of a loaded history's rows (displacements [N, p], reset_heights [N],
    contact_forces_sq [N]), the input the OOD target rewards need besides (s, a, s').

    ValueError when the history does not have them for every row: it was written before the
    extras were recorded (or continued from such a run); train the run afresh to get them.
    """
    try:
        return step_extras(history)
    except ValueError as err:
        raise ValueError(f"this behaviour history lacks per-step extras ({err}); it was written "
                         "before they were recorded: train the run afresh to record them") from err


def snapshot_prefix(logdir: str | Path, step: int) -> Path:
    """`<logdir>/snapshots/step_<step>` (checkpoint prefix of the actor saved at that env step)."""
    return Path(logdir) / SNAPSHOTS / f"step_{step}"


def snapshot_sha256(logdir: str | Path, step: int) -> str | None:
    """Hex sha256 of the run's actor snapshot at env `step` (its .msgpack), None when missing."""
    snapshot = Path(checkpoint.msgpack_path(snapshot_prefix(logdir, step)))
    return _sha256(snapshot) if snapshot.exists() else None


def snapshot_has_weights(logdir: str | Path, step: int, policy_prefix: str | Path) -> bool:
    """Whether the run's actor snapshot at env `step` holds exactly the weights of the policy file
    `policy_prefix` (equal sha256 of the two .msgpack files); False when that snapshot is missing.
    Only then is the run's history up to `step` the one that policy was taken from: a run
    retrained on another machine can take another path (XLA's CPU numerics differ between CPUs)."""
    policy = Path(checkpoint.msgpack_path(policy_prefix))
    return snapshot_sha256(logdir, step) == _sha256(policy)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot_metadata(logdir: str | Path) -> list[tuple[int, dict]]:
    folder = Path(logdir) / SNAPSHOTS
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; is {logdir} a behaviour-training run?")
    steps = sorted(int(m.group(1)) for m in map(_SNAPSHOT.match, os.listdir(folder)) if m)
    return [(s, checkpoint.load_metadata(snapshot_prefix(logdir, s))) for s in steps]


def list_snapshots(logdir: str | Path) -> list[tuple[int, float]]:
    """[(env step, deterministic eval return mean)] of the run's actor snapshots, by step."""
    return [(s, float(m["eval_return_mean"])) for s, m in _snapshot_metadata(logdir)]


def select_expert_step(logdir: str | Path) -> int:
    """Step of the snapshot with the best eval return (the earliest on ties)."""
    snaps = list_snapshots(logdir)
    if not snaps:
        raise ValueError(f"{logdir} has no snapshots yet")
    return max(snaps, key=lambda s: (s[1], -s[0]))[0]


def select_medium_step(logdir: str | Path, fraction: float = 1 / 3) -> int:
    """Step of the first snapshot whose eval return ≥ fraction × the best snapshot's return.

    D4RL's "medium" policies are early-stopped online SAC (Fu et al. 2020), described as reaching
    about 1/3 of the expert's return; here the expert is the best snapshot. Needs a positive best.
    Snapshots taken before the first SAC update (an untrained actor) are never picked.
    """
    metas = _snapshot_metadata(logdir)
    snaps = [(s, float(m["eval_return_mean"])) for s, m in metas]
    untrained = {s for s, m in metas if m.get("sac_updates", 1) == 0}
    if not snaps:
        raise ValueError(f"{logdir} has no snapshots yet")
    best = max(r for _, r in snaps)
    if best <= 0:
        raise ValueError(f"best snapshot return in {logdir} is {best:.1f} <= 0; a fraction of it "
                         "does not define a medium policy (train longer)")
    for step, ret in snaps:
        if ret >= fraction * best and step not in untrained:
            return step
    raise ValueError(f"no trained snapshot in {logdir} reaches {fraction:.3g} x the best return")


def select_snapshot(logdir: str | Path, level: str, fraction: float = 1 / 3) -> tuple[int, dict]:
    """(step, how it was chosen) of the snapshot to export as `level` ('expert': the best;
    'medium': select_medium_step with `fraction`); the record goes into the policy's JSON."""
    best = select_expert_step(logdir)
    best_record = {"best_step": best, "best_training_return": dict(list_snapshots(logdir))[best]}
    if level == "expert":
        return best, {"rule": "the best snapshot by its training evaluation", **best_record}
    return select_medium_step(logdir, fraction), {
        "rule": "the first trained snapshot at >= fraction x the best's training evaluation",
        "fraction": fraction, **best_record}


def load_snapshot(logdir: str | Path, step: int) -> policy_io.Policy:
    """The actor snapshot at env step `step` (`policy_io.load_policy`: params as jnp arrays, the
    snapshot's metadata, its SACConfig)."""
    return policy_io.load_policy(snapshot_prefix(logdir, step))


def export_policy(logdir: str | Path, step: int, out_prefix: str | Path, level: str,
                  extra_metadata: dict | None = None, episodes: int = 10, seed: int = 0) -> dict:
    """Ship the actor snapshot at `step` as `<out_prefix>.msgpack` + `.json` (written by
    `policy_io.save_policy`, read back by `policy_io.load_policy`); returns the metadata.

    The returns are measured afresh: `episodes` deterministic episodes reset with seeds seed,
    seed+1, ... The JSON holds env_id, level, step, the training command, training wall time to
    that step, training device, jax version, the returns and `extra_metadata`, plus what
    save_policy adds: the SACConfig ("sac"), hidden sizes and obs/act dims.
    """
    snap = load_snapshot(logdir, step)
    info = snap.metadata
    returns = evaluate_policy(snap.params, info["env_id"], episodes, seed=seed)
    meta = {"env_id": info["env_id"], "level": level, "step": int(step),
            "training_command": info["command"], "wall_seconds_to_step": info["wall_seconds"],
            "device": info["device"], "jax_version": jax.__version__,
            "training_jax_version": info["jax_version"], "training_seed": info["seed"],
            "training_eval_return_mean": info["eval_return_mean"], "eval_episodes": episodes,
            "eval_seed": seed, "returns": returns.tolist(), "return_mean": float(returns.mean()),
            "return_std": float(returns.std()), **(extra_metadata or {})}
    return policy_io.save_policy(out_prefix, snap.params, snap.sac_config, meta)
