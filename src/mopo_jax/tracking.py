"""Experiment trackers (none, TensorBoard, Weights & Biases) fed with a run's metrics.jsonl rows."""

from __future__ import annotations

import numbers
import os
import time
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from mopo_jax.run_layout import TENSORBOARD_DIR

TrackerName = Literal["none", "tensorboard", "wandb"]  # the one list of tracker names
TRACKERS: tuple[str, ...] = get_args(TrackerName)
# Row fields that identify a row rather than measure anything: never logged as scalars.
ID_FIELDS = frozenset({"epoch", "sac_steps", "policy", "seed", "seed_index", "penalty_coef",
                       "rollout_length", "dataset"})


class MissingExtra(ImportError):
    """An optional dependency of a tracker is not installed; the message names the extra."""


class Tracker(Protocol):
    """Receives metrics.jsonl rows as they are written, and is closed at the end of the run."""

    def log_rows(self, rows: list[dict]) -> None: ...

    def close(self) -> None: ...


def row_scalars(row: dict) -> dict[str, float]:
    """`{"<policy>/<metric>": value}` for the numeric, non-identifying fields of one metrics row.

    Lists (eval_returns), strings, booleans and None (e.g. a normalized_score without reference
    scores) are skipped.
    """
    policy = row["policy"]
    return {f"{policy}/{k}": float(v) for k, v in row.items()
            if k not in ID_FIELDS and isinstance(v, numbers.Real) and not isinstance(v, bool)}


def _steps(rows: list[dict]) -> list[tuple[int, dict[str, float]]]:
    """Rows merged per sac_steps, in increasing step order: [(step, {tag: value})]."""
    merged: dict[int, dict[str, float]] = {}
    for row in rows:
        merged.setdefault(int(row["sac_steps"]), {}).update(row_scalars(row))
    return sorted(merged.items())


class NullTracker:
    """Logs nothing."""

    def log_rows(self, rows: list[dict]) -> None:
        """Ignore `rows`."""

    def close(self) -> None:
        """Nothing to close."""


class TensorBoardTracker:
    """Scalar summaries in event files under `<run_dir>/tensorboard` (tag "<policy>/<metric>",
    step = sac_steps). Uses the tensorboard package's own event writer (no TensorFlow)."""

    def __init__(self, run_dir: str | os.PathLike):
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as err:
            raise MissingExtra("the tensorboard tracker needs the tensorboard package: "
                               "pip install 'mopo_jax[tensorboard]'") from err
        self.logdir = Path(run_dir) / TENSORBOARD_DIR
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._event, self._summary = Event, Summary
        self._writer = EventFileWriter(str(self.logdir))

    def log_rows(self, rows: list[dict]) -> None:
        """Write one scalar event per (row, metric) and flush, so a killed run keeps its data."""
        now = time.time()
        for step, scalars in _steps(rows):
            values = [self._summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
            self._writer.add_event(self._event(wall_time=now, step=step,
                                               summary=self._summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


class WandbTracker:
    """A W&B run (files under `<run_dir>/wandb`); `mode="offline"` needs no network or account
    (upload later with `wandb sync`). W&B drops steps lower than one already logged, so rows must
    arrive in non-decreasing sac_steps across calls (the driver logs epoch by epoch)."""

    def __init__(self, run_dir: str | os.PathLike, config: dict, mode: str = "offline",
                 project: str = "mopo_jax"):
        try:
            import wandb
        except ImportError as err:
            raise MissingExtra("the wandb tracker needs the wandb package: "
                               "pip install 'mopo_jax[wandb]'") from err
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off")
        self._wandb = wandb
        self.run = wandb.init(project=project, dir=str(run_dir), name=run_dir.name, config=config,
                              mode=mode, settings=settings)

    def log_rows(self, rows: list[dict]) -> None:
        """One `run.log` per distinct sac_steps (all policies' metrics of that step together)."""
        for step, scalars in _steps(rows):
            self.run.log(scalars, step=step)

    def close(self) -> None:
        """Finish the W&B run and shut down W&B's service process: only then are the offline files
        complete (`finish` alone may return before its records reach the disk)."""
        self.run.finish()
        self._wandb.teardown()


def make_tracker(kind: TrackerName, run_dir: str | os.PathLike, config: dict[str, Any], *,
                 wandb_mode: str = "offline", wandb_project: str = "mopo_jax") -> Tracker:
    """The tracker named `kind` (one of TRACKERS) for a run directory.

    config: the run's config dict (recorded by W&B; ignored by the others).
    Raises ValueError for an unknown kind and MissingExtra (an ImportError) naming the
    `pip install 'mopo_jax[...]'` extra when the tracker's package is missing.
    """
    if kind == "none":
        return NullTracker()
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir)
    if kind == "wandb":
        return WandbTracker(run_dir, config, mode=wandb_mode, project=wandb_project)
    raise ValueError(f"unknown tracker {kind!r}: choose one of {', '.join(TRACKERS)}")
