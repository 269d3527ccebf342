"""Run-directory layout: names of a run's files and folders, RunDirError, whether a folder holds a run."""

from __future__ import annotations

from pathlib import Path

# A policy-training run (mopo_jax.mopo.run; the train command) and a behaviour run
# (mopo_jax.behavior.train) both hold these:
CONFIG_FILE = "config.json"  # the settings and identity of the run
LOCK_FILE = ".lock"  # rundir.RunLock: records the pid of the process writing the run
CHECKPOINTS = "checkpoints"  # checkpoint generation folders gen-<NNNNNNNN>
STATE_FILE = "state.msgpack"  # in a generation folder: the checkpointed pytree
META_FILE = "meta.json"  # in a generation folder: its metadata and the msgpack's sha256

# Policy-training runs only:
METRICS_FILE = "metrics.jsonl"  # one row per epoch and policy (the source of truth)
RESULTS_FILE = "results.json"  # per-policy summaries rebuilt from metrics.jsonl
POLICIES = "policies"  # <policy>-best and <policy>-final actors
TENSORBOARD_DIR = "tensorboard"  # the TensorBoard tracker's event files
WANDB_DIR = "wandb"  # the W&B tracker's offline files
REPORT_FILE = "report.md"  # what `python -m mopo_jax.report` writes into a run directory

# Behaviour runs only:
EVALS_FILE = "evals.jsonl"  # one row per evaluation
SNAPSHOTS = "snapshots"  # the actor at every evaluation, step_<N>.{msgpack,json}
HISTORY_FILE = "history.npz"  # every transition so far
LEGACY_CHECKPOINT = "checkpoint"  # prefix of the checkpoint pair written before generation folders

# What makes a folder a (started) policy-training run; --overwrite removes exactly these.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, RESULTS_FILE, CHECKPOINTS, POLICIES, TENSORBOARD_DIR,
             WANDB_DIR, REPORT_FILE)


class RunDirError(RuntimeError):
    """A run directory is unusable; the message says what to do."""


def holds_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` is a folder holding (part of) a policy-training run (any of RUN_FILES):
    the train command continues such a folder only with --resume."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any((run_dir / name).exists() for name in RUN_FILES)
