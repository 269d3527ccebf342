"""The run driver: trains a policy grid chunk by chunk, evaluates it, writes and resumes a run directory.

Run directory (written by `run`; `mopo_jax.rundir` owns the file mechanics):
  config.json     the TrainConfig, the grid, the data and model identity, versions, device
  metrics.jsonl   one row per epoch and policy (the source of truth; schema in the README)
  results.json    per-policy summaries rebuilt from metrics.jsonl after every chunk
  checkpoints/    generation folders of the whole grid's state (wall-clock cadence, and at the end)
  policies/       <policy>-best and <policy>-final actors (msgpack + JSON, `load_policy` reads them)

Several processes (`jax.distributed` initialised by the caller): the policy axis spans every
process's devices, each process evaluates the policies on its own devices, and process 0 alone
writes the run directory (which every process must see: resume reads it in each).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import checkpoint, rundir
from mopo_jax.dynamics.model import EnsembleModel
from mopo_jax.envs.catalog import normalize_return
from mopo_jax.mopo.config import TrainConfig, config_to_dict
from mopo_jax.mopo.grid import Grid, Policy, eval_seeds, group_keys_and_coefs
from mopo_jax.mopo.results import build_results
from mopo_jax.mopo.schedule import chunk_plan, evaluates_at
from mopo_jax.mopo.train import make_train
from mopo_jax.sac.policy_io import save_policy
from mopo_jax.sharding import (broadcast_flag, combine_rows, gather, owned_rows, replicate,
                               replicated, seed_mesh, seed_sharding, shard_seeds)
from mopo_jax.types import Transitions

log = logging.getLogger("mopo_jax.run")

# (actor params with a leading policy axis P, on the host; reset seeds [P, E]) -> returns [P, E]
EvaluateFn = Callable[[Any, np.ndarray], np.ndarray]
RowsCallback = Callable[[list[dict]], None]


class TrainingDiverged(RuntimeError):
    """A training metric became NaN/inf; the message names the policy, epoch and quantity."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What `run` needs besides data, models and callbacks.

    meta: identity fields recorded in config.json (dataset source, model cache keys, versions,
    command line, ...). ref_scores: (min, max) reference returns for normalised scores (NaN: none).
    checkpoint_seconds: wall-clock time between checkpoints (one is always written at the end).
    """

    config: TrainConfig
    grid: Grid
    run_dir: Path
    meta: dict
    ref_scores: tuple[float, float]
    checkpoint_seconds: float = 600.0
    num_devices: int | None = None
    resume: bool = False


def resume_mismatch(saved: dict, config: TrainConfig, grid: Grid) -> list[str]:
    """Fields (dotted paths) where a saved config.json differs from (config, grid); `epochs` may
    grow (extending a run) and is not a mismatch."""
    want = {"config": config_to_dict(config), "grid": grid.to_dict()}
    diffs = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b and path != "config.epochs":
            diffs.append(f"{path}: saved {a!r}, requested {b!r}")

    walk({k: saved.get(k) for k in want}, want, "")
    return diffs


class _Group:
    """The policies of one rollout length: their compiled functions, state and models (mutable)."""

    def __init__(self, spec: RunSpec, h: int, data: Transitions, models: EnsembleModel, mesh):
        self.policies: list[Policy] = spec.grid.group(h)
        self.config = dataclasses.replace(spec.config, rollout_length=h)
        one_model = jax.tree.map(lambda x: x[0], models)
        self.fns = make_train(self.config, data, one_model)
        keys, coefs = group_keys_and_coefs(self.policies)
        self.state = shard_seeds(jax.jit(jax.vmap(self.fns.init))(keys, coefs), mesh)
        shared = models.elite_idx.shape[0] == 1  # one ensemble serves every policy
        index = jnp.asarray([0 if shared else p.seed_index for p in self.policies])
        self.models = shard_seeds(jax.tree.map(lambda x: x[index], models), mesh)
        self.mesh, self.chunks = mesh, {}
        self.rows = owned_rows(jax.tree.leaves(self.state.sac.actor_params)[0])  # this process's

    def chunk(self, num: int, data: Transitions):
        """The compiled `num`-epoch step of all policies (compiled ahead of time, once per num)."""
        if num not in self.chunks:
            shard, rep = seed_sharding(self.mesh), replicated(self.mesh)
            fn = jax.jit(jax.vmap(lambda s, d, m: self.fns.run_epochs(s, d, m, num),
                                  in_axes=(0, None, 0)),
                         in_shardings=(shard, rep, shard), out_shardings=shard, donate_argnums=0)
            start = time.perf_counter()
            self.chunks[num] = fn.lower(self.state, data, self.models).compile()
            log.info("compiled the %d-epoch step of h=%d (%d policies) in %.1f s", num,
                     self.config.rollout_length, len(self.policies), time.perf_counter() - start)
        return self.chunks[num]


def _metric_rows(group: _Group, metrics: dict, first_epoch: int, steps: int, dataset: str) -> list[dict]:
    """One row per (epoch, policy) from metrics leaves [P, num]; raises TrainingDiverged on NaN/inf."""
    rows = []
    num = next(iter(metrics.values())).shape[1]
    for j in range(num):
        for i, p in enumerate(group.policies):
            row = {"epoch": first_epoch + j, "sac_steps": (first_epoch + j) * steps, "policy": p.id,
                   "seed": p.seed, "seed_index": p.seed_index, "penalty_coef": p.penalty_coef,
                   "rollout_length": p.rollout_length, "dataset": dataset}
            values = {k: float(v[i, j]) for k, v in metrics.items()}
            bad = [k for k, v in values.items() if not np.isfinite(v)]
            if bad:
                raise TrainingDiverged(
                    f"policy {p.id}: {', '.join(bad)} became {values[bad[0]]} at epoch "
                    f"{first_epoch + j} (critic blow-up or bad data); the last good checkpoint is "
                    "kept. --resume continues only with the same settings: to change them (lower "
                    "learning rates, a higher penalty coefficient) start a new run in another "
                    "--logdir")
            rows.append(row | {k: round(v, 6) for k, v in values.items()})
    return rows


def _evaluate(group: _Group, actors, evaluate: EvaluateFn, ref_scores: tuple[float, float],
              episodes: int, epoch: int | None) -> list[dict]:
    """Evaluation fields per policy of a group (actors: host params [P, ...]) at `epoch` (None:
    the final evaluation, on its own start states); this process steps only the policies on its
    own devices and the returns are then shared by every process."""
    rows = group.rows
    seeds = np.stack([eval_seeds(p, episodes, epoch) for p in group.policies])
    if len(rows):
        local = np.asarray(evaluate(jax.tree.map(lambda x: x[rows], actors), seeds[rows]), np.float64)
    else:  # a process whose devices hold none of this group's policies
        local = np.zeros((0, episodes))
    returns = combine_rows(local, rows, len(group.policies))  # [P, E]
    scores = normalize_return(returns.mean(1), *ref_scores)
    prefix = "eval" if epoch is not None else "final_eval"
    return [{f"{prefix}_return": round(float(r.mean()), 4),
             f"{prefix}_return_std": round(float(r.std()), 4),
             f"{prefix}_returns": np.round(r, 3).tolist(),
             ("normalized_score" if epoch is not None else "final_eval_normalized_score"):
                 None if np.isnan(s) else round(float(s), 4)}
            for r, s in zip(returns, scores)]


def _writer() -> bool:
    """Whether this process writes the run directory (process 0 of a multi-process run)."""
    return jax.process_index() == 0


def _state_tree(groups: dict[int, _Group]) -> dict:
    return {f"h{h}": checkpoint.keys_to_data(g.state) for h, g in groups.items()}


def _restore(spec: RunSpec, groups: dict[int, _Group]) -> tuple[int, list[dict]]:
    """Load the newest good checkpoint into `groups`; returns (epochs done, metric rows kept)."""
    loaded = rundir.load_checkpoint(spec.run_dir, _state_tree(groups))
    metrics_path = spec.run_dir / "metrics.jsonl"
    if loaded is None:
        rundir.write_text_atomic(metrics_path, "")
        return 0, []
    tree, meta = loaded
    for h, g in groups.items():
        g.state = shard_seeds(checkpoint.keys_from_data(tree[f"h{h}"], g.state), g.mesh)
    done = int(meta["epoch"])
    rows = [r for r in rundir.read_jsonl(metrics_path, repair=_writer()) if r["epoch"] <= done]
    if _writer():
        rundir.write_text_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
    log.info("resumed %s at epoch %d (%d metric rows kept)", spec.run_dir, done, len(rows))
    return done, rows


def _save_policies(spec: RunSpec, group: _Group, actors, evals: list[dict], epoch: int,
                   best: dict, final: bool) -> None:
    """Write <policy>-best when a policy's evaluation beats its best so far (and -final at the end).
    'best' is chosen on the evaluations it is scored on, so its score is optimistic."""
    folder = spec.run_dir / "policies"
    for i, (p, ev) in enumerate(zip(group.policies, evals)):
        params = jax.tree.map(lambda x, i=i: x[i], actors)
        meta = {"policy": p.id, "epoch": epoch, "dataset": spec.config.dataset, **ev,
                "seed": p.seed, "penalty_coef": p.penalty_coef, "rollout_length": p.rollout_length}
        if "eval_return" in ev and ev["eval_return"] > best.get(p.id, -np.inf):
            best[p.id] = ev["eval_return"]
            save_policy(folder / f"{p.id}-best", params, spec.config.sac,
                        meta | {"kind": "best", "optimistic": True})
        if final:
            save_policy(folder / f"{p.id}-final", params, spec.config.sac, meta | {"kind": "final"})


def _write_config(spec: RunSpec, devices_used: int) -> None:
    text = json.dumps({"config": config_to_dict(spec.config), "grid": spec.grid.to_dict(),
                       "policy_ids": [p.id for p in spec.grid.policies()],
                       "devices_used": devices_used, "checkpoint_seconds": spec.checkpoint_seconds,
                       **spec.meta}, indent=2)
    rundir.write_text_atomic(spec.run_dir / "config.json", text)


@dataclasses.dataclass
class _Progress:
    """What the run has produced so far: every metric row, and the best evaluation per policy."""

    rows: list[dict]
    best: dict[str, float]
    last_ready: float = -np.inf  # perf_counter time the previous chunk's results were ready


class _Pending(NamedTuple):
    """A dispatched chunk whose results are not read yet."""

    first_epoch: int
    metrics: dict  # per rollout length: metrics [P, num]
    actors: dict  # per rollout length: actor params [P, ...] after the chunk
    dispatched: float  # perf_counter time of dispatch


def _finish(spec: RunSpec, groups: dict[int, _Group], pending: _Pending, progress: _Progress, *,
            evaluate: EvaluateFn, callbacks: Sequence[RowsCallback], final: bool) -> None:
    """Read a dispatched chunk's metrics, evaluate its actors when due (and, with `final`, run the
    final evaluation), write its rows, results and policies."""
    config, rows = spec.config, []
    for h, g in groups.items():
        host_metrics, host_actors = gather((pending.metrics[h], pending.actors[h]))
        ready = time.perf_counter()  # the chunk's results are on the host: it has finished
        chunk_rows = _metric_rows(g, host_metrics, pending.first_epoch, config.steps_per_epoch,
                                  config.dataset)
        last_rows, epoch = chunk_rows[-len(g.policies):], chunk_rows[-1]["epoch"]
        evals = [{} for _ in g.policies]
        if evaluates_at(config, epoch):
            evals = _evaluate(g, host_actors, evaluate, spec.ref_scores, config.eval_episodes, epoch)
        if final and config.final_eval_episodes:
            finals = _evaluate(g, host_actors, evaluate, spec.ref_scores,
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
        rundir.append_lines(spec.run_dir / "metrics.jsonl", [json.dumps(r) + "\n" for r in rows])
        results = build_results(progress.rows, [p.id for p in spec.grid.policies()], spec.meta)
        rundir.write_text_atomic(spec.run_dir / "results.json", json.dumps(results, indent=2))
    for callback in callbacks:
        callback(rows)


def run(spec: RunSpec, data: Transitions, models: EnsembleModel, *, evaluate: EvaluateFn,
        callbacks: Sequence[RowsCallback] = (), clock: Callable[[], float] = time.monotonic) -> dict:
    """Train every policy of `spec.grid` chunk by chunk (see `chunk_plan`) in `spec.run_dir`,
    evaluating after the epochs `evaluates_at` names and, after the last one, on
    config.final_eval_episodes fresh start states.

    Args:
      data: the real transitions [N] (replicated over the devices).
      models: ensembles stacked on a leading axis [S], one per grid seed in order, or [1] shared.
      evaluate: `evaluate(actor params [P, ...], reset seeds [P, E]) -> returns [P, E]`.
      callbacks: each called with the metric rows of every finished chunk (progress, trackers).
      clock: the wall clock of the checkpoint cadence (injectable for tests).
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
    groups = {h: _Group(spec, h, data, models, mesh) for h in spec.grid.rollout_lengths}
    done, rows_all = _restore(spec, groups) if spec.resume else (0, [])
    if _writer():
        if not spec.resume:
            rundir.write_text_atomic(run_dir / "metrics.jsonl", "")
        _write_config(spec, int(mesh.devices.size))
    progress = _Progress(rows_all, {})
    for row in rows_all:
        if "eval_return" in row:
            progress.best[row["policy"]] = max(progress.best.get(row["policy"], -np.inf),
                                               row["eval_return"])
    finish = functools.partial(_finish, spec, groups, evaluate=evaluate, callbacks=callbacks)
    pending, last_checkpoint = None, clock()
    while done < config.epochs:
        num = chunk_plan(config, done)
        metrics, actors = {}, {}
        compiled = {h: g.chunk(num, data) for h, g in groups.items()}  # compile time apart
        dispatched = time.perf_counter()
        for h, g in groups.items():
            g.state, metrics[h] = compiled[h](g.state, data, g.models)
            actors[h] = jax.tree.map(jnp.copy, g.state.sac.actor_params)  # survives donation
        if pending is not None:
            finish(pending, progress, final=False)
        pending, done = _Pending(done + 1, metrics, actors, dispatched), done + num
        # every process takes the same branch: the cadence is process 0's clock, shared
        due = done >= config.epochs or broadcast_flag(clock() - last_checkpoint >= spec.checkpoint_seconds)
        if due:
            finish(pending, progress, final=done >= config.epochs)
            pending = None
            state = gather(_state_tree(groups))  # a collective: every process takes part
            if _writer():
                rundir.save_checkpoint(run_dir, state, {"epoch": done, "policy_ids": [
                    p.id for p in spec.grid.policies()]})
            last_checkpoint = clock()
            log.info("checkpoint at epoch %d", done)
    results = build_results(progress.rows, [p.id for p in spec.grid.policies()], spec.meta)
    return results
