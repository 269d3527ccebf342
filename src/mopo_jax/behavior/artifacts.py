"""Artifacts of a behaviour-training run: the transition history file, snapshots, shipped policies."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import checkpoint
from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.envs.extras import EXTRA_FIELDS, StepExtras, step_extras
from mopo_jax.sac import policy_io
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.update import init_sac

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
    (`checkpoint.atomic_write`: temp file + os.replace, mode 0o666 & ~umask)."""
    arrays = cut_history(history, num_steps)
    checkpoint.atomic_write(Path(logdir) / "history.npz",
                            lambda f: np.savez(f, num_steps=np.int64(num_steps), **arrays))


def history_length(logdir: str | Path) -> int:
    """Number of transitions saved in `<logdir>/history.npz` (reads only that count)."""
    with np.load(Path(logdir) / "history.npz", allow_pickle=False) as f:
        return int(f["num_steps"])


def load_history(logdir: str | Path, upto_step: int | None = None) -> dict:
    """Transitions [0, upto_step) of a run, in env order (default: all saved rows).

    Returns observations [N, o] f64, actions [N, a] f32, rewards [N] f64, next_observations [N, o]
    f64, terminations [N] bool (bootstrap flag), truncations [N] bool (time limit, or the episode was
    cut: at a resume, at the end of the run, or at upto_step). Episodes end where either is set.
    Plus, when the file has them, the OPTIONAL_FIELDS (the per-step extras; see `history_extras`).
    """
    path = Path(logdir) / "history.npz"
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
    return Path(logdir) / "snapshots" / f"step_{step}"


def _snapshot_metadata(logdir: str | Path) -> list[tuple[int, dict]]:
    folder = Path(logdir) / "snapshots"
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


def _actor_template(obs_dim: int, act_dim: int, sac: SACConfig):
    state = jax.eval_shape(lambda k: init_sac(k, obs_dim, act_dim, sac), jax.random.key(0))
    return state.actor_params


def _sac_config(d: dict) -> SACConfig:
    return SACConfig(**dict(d, hidden_sizes=tuple(d["hidden_sizes"])))


def load_snapshot(logdir: str | Path, step: int):
    """(actor params as jnp arrays, snapshot metadata) of the snapshot at env step `step`."""
    prefix = snapshot_prefix(logdir, step)
    meta = checkpoint.load_metadata(prefix)
    template = _actor_template(meta["obs_dim"], meta["act_dim"], _sac_config(meta["sac"]))
    params, meta = checkpoint.load_pytree(prefix, template)
    return jax.tree.map(jnp.asarray, params), meta


def export_policy(logdir: str | Path, step: int, out_prefix: str | Path, level: str,
                  extra_metadata: dict | None = None, episodes: int = 10, seed: int = 0) -> dict:
    """Ship the actor snapshot at `step` as `<out_prefix>.msgpack` + `.json`; returns the metadata.

    The returns are measured afresh: `episodes` deterministic episodes reset with seeds seed,
    seed+1, ... The JSON holds env_id, level, step, the training command, training wall time to
    that step, training device, jax version, hidden sizes, obs/act dims and the returns.
    """
    params, snap = load_snapshot(logdir, step)
    returns = evaluate_policy(params, snap["env_id"], episodes, seed=seed)
    meta = {"env_id": snap["env_id"], "level": level, "step": int(step),
            "training_command": snap["command"], "wall_seconds_to_step": snap["wall_seconds"],
            "device": snap["device"], "jax_version": jax.__version__,
            "training_jax_version": snap["jax_version"], "hidden_sizes": snap["sac"]["hidden_sizes"],
            "obs_dim": snap["obs_dim"], "act_dim": snap["act_dim"], "sac": snap["sac"],
            "training_seed": snap["seed"], "training_eval_return_mean": snap["eval_return_mean"],
            "eval_episodes": episodes, "eval_seed": seed, "returns": returns.tolist(),
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            **(extra_metadata or {})}
    checkpoint.save_pytree(out_prefix, params, meta)
    return meta


def load_policy(prefix: str | Path):
    """(actor params as jnp arrays, metadata) of a policy written by `export_policy`.

    Use with `mopo_jax.sac.deterministic_action(params, obs [B, o]) -> [B, a]` or `sample_action`;
    `mopo_jax.sac.policy_io.load_policy` gives the same policy as a jitted callable.
    """
    policy = policy_io.load_policy(prefix)
    return policy.params, policy.metadata
