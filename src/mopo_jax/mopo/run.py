"""The run driver: trains a policy grid chunk by chunk, evaluates it, writes and resumes a run directory.

The run directory's files (config.json, metrics.jsonl and its row schema, results.json,
checkpoints/, policies/) are described once, in docs/running.md ("The run directory");
`mopo_jax.rundir` owns the file mechanics. Several processes (`jax.distributed` initialised by the
caller): the policy axis spans every process's devices, each process evaluates the policies on its
own devices, and process 0 alone writes the run directory (which every process must see: resume
reads it in each).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import rundir
from mopo_jax.dynamics.model import EnsembleModel
from mopo_jax.mopo.config import TrainConfig, config_to_dict
from mopo_jax.mopo.grid import Grid
from mopo_jax.mopo.group import (EvaluateFn, Group, TrainingDiverged, evaluate_group,
                                 load_state_tree, metric_rows, state_tree)
from mopo_jax.mopo.results import build_results
from mopo_jax.mopo.schedule import chunk_plan, evaluates_at
from mopo_jax.run_layout import CONFIG_FILE, METRICS_FILE, RESULTS_FILE
from mopo_jax.sharding import any_process_flag, broadcast_flag, gather, replicate, seed_mesh
from mopo_jax.types import Transitions

__all__ = ["EvaluateFn", "RowsCallback", "RunSpec", "RunStopped", "TrainingDiverged", "resume_mismatch",
           "run"]

log = logging.getLogger("mopo_jax.run")

RowsCallback = Callable[[list[dict]], None]


class RunStopped(KeyboardInterrupt):
    """`run` stopped early on request, after its last chunk was read and checkpointed: `epoch`
    epochs are done and saved, and a resume continues from there without recomputing any."""

    def __init__(self, epoch: int):
        super().__init__(f"stopped after epoch {epoch}, with a checkpoint there: --resume continues "
                         "from it")
        self.epoch = epoch


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What `run` needs besides data, models and callbacks.

    meta: identity fields recorded in config.json (dataset source, model cache keys, versions,
    command line, ...). ref_scores: (min, max) reference returns for normalised scores (NaN: none).
    checkpoint_seconds: wall-clock time between checkpoints (one is always written at the end).
    env_name: the data's env family (`DatasetInfo.env_name`), whose termination rule the rollouts
    use; None: the family of config.dataset.
    """

    config: TrainConfig
    grid: Grid
    run_dir: Path
    meta: dict
    ref_scores: tuple[float, float]
    checkpoint_seconds: float = 600.0
    num_devices: int | None = None
    resume: bool = False
    env_name: str | None = None


def resume_mismatch(saved: dict, config: TrainConfig, grid: Grid) -> list[str]:
    """Fields (dotted paths) where a saved config.json differs from (config, grid); `epochs` may
    grow (extending a run) and is not a mismatch."""
    want = {"config": config_to_dict(config), "grid": grid.to_dict()}
    return rundir.resume_differences(saved, want, may_differ=("config.epochs",))


def _writer() -> bool:
    """Whether this process writes the run directory (process 0 of a multi-process run)."""
    return jax.process_index() == 0


def _restore(spec: RunSpec, groups: dict[int, Group]) -> tuple[int, list[dict]]:
    """Load the newest good checkpoint into `groups`; returns (epochs done, metric rows kept):
    metrics.jsonl is cut back to the checkpoint's epoch (by the writer; the others only read)."""
    loaded = rundir.load_checkpoint(spec.run_dir, state_tree(groups))
    metrics_path = spec.run_dir / METRICS_FILE
    if loaded is None:
        rundir.write_text_atomic(metrics_path, "")
        return 0, []
    tree, meta = loaded
    load_state_tree(groups, tree)
    done = int(meta["epoch"])
    rows = rundir.rewind_jsonl(metrics_path, lambda r: r["epoch"] <= done, write=_writer())
    log.info("resumed %s at epoch %d (%d metric rows kept)", spec.run_dir, done, len(rows))
    return done, rows


def _save_policies(spec: RunSpec, group: Group, actors, evals: list[dict], epoch: int,
                   best: dict, final: bool) -> None:
    """Write <policy>-best when a policy's evaluation beats its best so far (and -final at the end).
    'best' is chosen on the evaluations it is scored on, so its score is optimistic.
    actors: the group's host actor params [P, ...]."""
    for i, (p, ev) in enumerate(zip(group.policies, evals)):
        params = jax.tree.map(lambda x, i=i: x[i], actors)
        meta = {"policy": p.id, "epoch": epoch, "dataset": spec.config.dataset, **ev,
                "seed": p.seed, "penalty_coef": p.penalty_coef, "rollout_length": p.rollout_length}
        if "eval_return" in ev and ev["eval_return"] > best.get(p.id, -np.inf):
            best[p.id] = ev["eval_return"]
            rundir.save_run_policy(spec.run_dir, f"{p.id}-best", params, spec.config.sac,
                               meta | {"kind": "best", "optimistic": True})
        if final:
            rundir.save_run_policy(spec.run_dir, f"{p.id}-final", params, spec.config.sac,
                               meta | {"kind": "final"})


def config_record(config: TrainConfig, grid: Grid, meta: dict, **run_facts) -> dict:
    """The contents of config.json: the settings, the grid, its policy ids, `run_facts` (e.g. the
    devices used) and `meta`. The train command writes it early, before the dynamics fit."""
    return {"config": config_to_dict(config), "grid": grid.to_dict(),
            "policy_ids": [p.id for p in grid.policies()], **run_facts, **meta}


def _write_config(spec: RunSpec, devices_used: int) -> None:
    """config.json: the settings, the grid, the devices used and `spec.meta`."""
    rundir.write_json(spec.run_dir / CONFIG_FILE, config_record(
        spec.config, spec.grid, spec.meta, devices_used=devices_used,
        checkpoint_seconds=spec.checkpoint_seconds))


@dataclasses.dataclass
class _Progress:
    """What the run has produced so far: every metric row, and the best evaluation per policy."""

    rows: list[dict]
    best: dict[str, float]
    last_ready: float = -np.inf  # perf_counter time the previous chunk's results were ready

    @classmethod
    def of(cls, rows: list[dict]) -> _Progress:
        """The progress of the rows kept on resume (their best evaluations)."""
        progress = cls(rows, {})
        for row in rows:
            if "eval_return" in row:
                progress.best[row["policy"]] = max(progress.best.get(row["policy"], -np.inf),
                                                   row["eval_return"])
        return progress


class _Pending(NamedTuple):
    """A dispatched chunk whose results are not read yet: epochs first_epoch..epochs_done."""

    first_epoch: int  # the chunk's first epoch (1-based)
    epochs_done: int  # epochs the run has completed once the chunk has (its last epoch)
    metrics: dict  # per rollout length: metrics [P, num] on the devices
    actors: dict  # per rollout length: actor params [P, ...] after the chunk (copies)
    dispatched: float  # perf_counter time of dispatch


def _dispatch(groups: dict[int, Group], data: Transitions, done: int, num: int) -> _Pending:
    """Start the next `num` epochs (after `done`) of every group on the devices; returns at once."""
    metrics, actors = {}, {}
    compiled = {h: g.chunk(num, data) for h, g in groups.items()}  # compile time apart
    dispatched = time.perf_counter()
    for h, g in groups.items():
        g.state, metrics[h] = compiled[h](g.state, data, g.models)
        actors[h] = jax.tree.map(jnp.copy, g.state.sac.actor_params)  # survives donation
    return _Pending(done + 1, done + num, metrics, actors, dispatched)


class _Cadence:
    """The wall-clock checkpoint cadence. Every process takes the same branch: the decision is
    process 0's clock, shared (a collective, so every process asks)."""

    def __init__(self, clock: Callable[[], float], seconds: float):
        """Start the cadence now: a checkpoint is due `seconds` from now on `clock`."""
        self.clock, self.seconds, self.last = clock, seconds, clock()

    def due(self) -> bool:
        """Whether a checkpoint is due (process 0's answer, in every process)."""
        return broadcast_flag(self.clock() - self.last >= self.seconds)

    def restart(self) -> None:
        """A checkpoint was just written: the next is due `seconds` from now."""
        self.last = self.clock()


def _checkpoint(spec: RunSpec, groups: dict[int, Group], epochs_done: int) -> None:
    """Write a checkpoint generation of every group's state after `epochs_done` epochs (a
    collective: every process takes part, process 0 writes)."""
    state = gather(state_tree(groups))
    if _writer():
        rundir.save_checkpoint(spec.run_dir, state, {"epoch": epochs_done, "policy_ids": [
            p.id for p in spec.grid.policies()]})
    log.info("checkpoint at epoch %d", epochs_done)


def _finish(spec: RunSpec, groups: dict[int, Group], pending: _Pending, progress: _Progress, *,
            evaluate: EvaluateFn, callbacks: Sequence[RowsCallback], final: bool) -> None:
    """Read a dispatched chunk's metrics, evaluate its actors when due (and, with `final`, run the
    final evaluation), write its rows, results and policies."""
    config, rows = spec.config, []
    for h, g in groups.items():
        host_metrics, host_actors = gather((pending.metrics[h], pending.actors[h]))
        ready = time.perf_counter()  # the chunk's results are on the host: it has finished
        chunk_rows = metric_rows(g, host_metrics, pending.first_epoch, config.steps_per_epoch,
                                 config.dataset)
        last_rows, epoch = chunk_rows[-len(g.policies):], chunk_rows[-1]["epoch"]
        evals = [{} for _ in g.policies]
        if evaluates_at(config, epoch):
            evals = evaluate_group(g, host_actors, evaluate, spec.ref_scores, config.eval_episodes,
                                   epoch)
        if final and config.final_eval_episodes:
            finals = evaluate_group(g, host_actors, evaluate, spec.ref_scores,
                                    config.final_eval_episodes, None)
            evals = [e | f | {"final_eval_episodes": config.final_eval_episodes}
                     for e, f in zip(evals, finals)]
        for row, ev in zip(last_rows, evals):
            row.update(ev)
        if _writer():
            _save_policies(spec, g, host_actors, evals, epoch, progress.best, final)
        rows += chunk_rows
    # the chunk occupied the pipeline from its dispatch (or the previous chunk's end) to now
    seconds = ready - max(pending.dispatched, progress.last_ready)
    progress.last_ready = ready
    for row in rows[-sum(len(g.policies) for g in groups.values()):]:
        row["chunk_seconds"] = round(seconds, 3)
    progress.rows += rows
    if _writer():
        rundir.append_records(spec.run_dir / METRICS_FILE, rows)
        results = build_results(progress.rows, [p.id for p in spec.grid.policies()], spec.meta)
        rundir.write_json(spec.run_dir / RESULTS_FILE, results)
    for callback in callbacks:
        callback(rows)


def run(spec: RunSpec, data: Transitions, models: EnsembleModel, *, evaluate: EvaluateFn,
        callbacks: Sequence[RowsCallback] = (), clock: Callable[[], float] = time.monotonic,
        stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Train every policy of `spec.grid` chunk by chunk (see `chunk_plan`) in `spec.run_dir`,
    evaluating after the epochs `evaluates_at` names and, after the last one, on
    config.final_eval_episodes fresh start states.

    Args:
      data: the real transitions [N] (replicated over the devices).
      models: ensembles stacked on a leading axis [S], one per grid seed in order, or [1] shared.
      evaluate: `evaluate(actor params [P, ...], reset seeds [P, E]) -> returns [P, E]`.
      callbacks: each called with the metric rows of every finished chunk (progress, trackers).
      clock: the wall clock of the checkpoint cadence (injectable for tests).
      stop_requested: asked once per chunk (in every process; any process's True counts); when it
        says True, the chunk in flight is finished, read and checkpointed and RunStopped is raised.
    Each rollout length is one compiled group; all groups advance together. While the device runs
    chunk k+1, the actors copied out of chunk k are evaluated on the host. The caller holds the
    run-directory lock. Returns the results dict (also written to results.json).
    """
    config, run_dir = spec.config, spec.run_dir
    if _writer():
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.clean_stale_temp_files(run_dir)
    size = len(spec.grid.seeds) * len(spec.grid.penalty_coefs)
    mesh = seed_mesh(size, spec.num_devices)
    data = replicate(data, mesh)
    groups = {h: Group(config, spec.grid, h, data, models, mesh, spec.env_name)
              for h in spec.grid.rollout_lengths}
    done, rows_all = _restore(spec, groups) if spec.resume else (0, [])
    if _writer():
        if not spec.resume:
            rundir.write_text_atomic(run_dir / METRICS_FILE, "")
        _write_config(spec, int(mesh.devices.size))
    progress = _Progress.of(rows_all)
    finish = functools.partial(_finish, spec, groups, evaluate=evaluate, callbacks=callbacks)
    pending, cadence = None, _Cadence(clock, spec.checkpoint_seconds)
    while done < config.epochs:
        chunk = _dispatch(groups, data, done, chunk_plan(config, done))
        if pending is not None:  # read chunk k while the devices run chunk k+1
            finish(pending, progress, final=False)
        pending, done = chunk, chunk.epochs_done
        last = done >= config.epochs
        stop = not last and any_process_flag(stop_requested())
        if last or stop or cadence.due():  # the same branch in every process
            finish(pending, progress, final=last)
            pending = None
            _checkpoint(spec, groups, done)
            cadence.restart()
            if stop:
                raise RunStopped(done)
    return build_results(progress.rows, [p.id for p in spec.grid.policies()], spec.meta)
