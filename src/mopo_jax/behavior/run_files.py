"""A behaviour run directory's checkpoint (generations, old-format pair, cut-back, config check)
and the files written at each evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mopo_jax import checkpoint, rundir
from mopo_jax.behavior.artifacts import list_snapshots, save_history, snapshot_prefix
from mopo_jax.behavior.config import config_from_dict, config_to_dict
from mopo_jax.run_layout import EVALS_FILE, LEGACY_CHECKPOINT


def _legacy_metadata(logdir: Path) -> dict | None:
    """Metadata of `<logdir>/checkpoint.{msgpack,json}` (checksum verified); None without that JSON."""
    prefix = logdir / LEGACY_CHECKPOINT
    if not Path(checkpoint.json_path(prefix)).exists():
        return None
    try:
        meta = checkpoint.read_metadata_file(checkpoint.json_path(prefix))
        if not checkpoint.payload_matches(meta, Path(checkpoint.msgpack_path(prefix)).read_bytes()):
            raise ValueError(f"{checkpoint.msgpack_path(prefix)} does not match the checksum in "
                             f"{checkpoint.json_path(prefix)}")
    except (OSError, ValueError) as err:
        raise ValueError(f"the old-format checkpoint in {logdir} cannot be resumed ({err}); delete "
                         f"{prefix}.msgpack and {prefix}.json to start the run over in this --logdir "
                         "(evals, snapshots and history are rewritten), or use a new --logdir.") from err
    return checkpoint.user_metadata(meta)


def saved_metadata(logdir: str | Path) -> dict | None:
    """Metadata of the run's checkpoint: the newest good generation (`rundir.checkpoint_metadata`),
    else the pair `checkpoint.{msgpack,json}` that earlier versions wrote; None when there is none.

    Raises RunDirError when generations exist but none is readable, ValueError (saying what to
    delete) for an old pair left inconsistent by a save killed between its two writes.
    """
    meta = rundir.checkpoint_metadata(logdir)
    return _legacy_metadata(Path(logdir)) if meta is None else meta


def load_state(logdir: str | Path, template: Any) -> tuple[Any, dict]:
    """(tree, metadata) of the checkpoint `saved_metadata` describes, checked against `template`."""
    loaded = rundir.load_checkpoint(logdir, template)
    return loaded or checkpoint.load_pytree(Path(logdir) / LEGACY_CHECKPOINT, template)


def save_state(logdir: str | Path, tree: Any, metadata: dict) -> None:
    """Write a checkpoint generation (`rundir.save_checkpoint`); then remove the old-format pair,
    which it supersedes."""
    rundir.save_checkpoint(logdir, tree, metadata)
    prefix = Path(logdir) / LEGACY_CHECKPOINT
    for path in (checkpoint.json_path(prefix), checkpoint.pending_path(prefix),
                 checkpoint.msgpack_path(prefix)):
        Path(path).unlink(missing_ok=True)


def cut_back_to(logdir: str | Path, step: int) -> None:
    """Drop what was written after the checkpoint at env step `step`: later evals.jsonl rows (a torn
    last line too) and later actor snapshots (they will be redone)."""
    rundir.rewind_jsonl(Path(logdir) / EVALS_FILE, lambda r: r.get("step", step + 1) <= step)
    for s, _ in list_snapshots(logdir):
        if s > step:
            prefix = snapshot_prefix(logdir, s)
            for path in (checkpoint.msgpack_path(prefix), checkpoint.json_path(prefix),
                         checkpoint.pending_path(prefix)):
                Path(path).unlink(missing_ok=True)


def check_same_config(logdir: Path, saved: dict, config_dict: dict) -> None:
    """ValueError naming the differing fields when a run's saved config is not `config_dict`."""
    saved = config_to_dict(config_from_dict(saved["config"]))  # fields added since take their defaults
    diffs = rundir.resume_differences(saved, config_dict)
    if diffs:
        raise ValueError(f"--resume: {logdir} was started with a different configuration "
                         f"({'; '.join(diffs)}); use a new --logdir.")


def write_eval_outputs(logdir: Path, meta: dict, state: Any, history: dict, row: dict,
                       returns: np.ndarray, wall: float) -> None:
    """At an evaluation: the evals.jsonl line `row`, the actor snapshot, history.npz and the
    checkpoint of `state` (a `mopo_jax.behavior.train.BehaviorState`), in that order (so the
    checkpoint never runs ahead of the other files). returns: [eval_episodes] evaluation returns."""
    step = row["step"]
    rundir.append_records(logdir / EVALS_FILE, [row])
    checkpoint.save_pytree(snapshot_prefix(logdir, step), state.sac.actor_params, {
        **meta, "env_id": meta["config"]["env_id"], "step": step, "seed": meta["config"]["seed"],
        "sac": meta["config"]["sac"], "eval_return_mean": row["return_mean"],
        "eval_return_std": row["return_std"], "eval_returns": returns.tolist(),
        "sac_updates": row["sac_updates"], "wall_seconds": row["wall_seconds"]})
    save_history(logdir, history, step)
    save_state(logdir, checkpoint.keys_to_data(state),
               {**meta, "step": step, "episodes": row["episodes"], "wall_seconds": wall})
