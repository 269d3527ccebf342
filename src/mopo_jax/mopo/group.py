"""The policy groups of a run, one per rollout length: compiled chunk steps, sharded state, metric rows, evaluations."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import checkpoint
from mopo_jax.dynamics.model import EnsembleModel
from mopo_jax.envs.catalog import normalize_return
from mopo_jax.mopo.config import TrainConfig
from mopo_jax.mopo.grid import Grid, GridPoint, eval_seeds, group_keys_and_coefs
from mopo_jax.mopo.train import make_train
from mopo_jax.sharding import combine_rows, owned_rows, replicated, seed_sharding, shard_seeds
from mopo_jax.types import Transitions

log = logging.getLogger("mopo_jax.run")

# (actor params with a leading policy axis P, on the host; reset seeds [P, E]) -> returns [P, E]
EvaluateFn = Callable[[Any, np.ndarray], np.ndarray]


class TrainingDiverged(RuntimeError):
    """A training metric became NaN/inf; the message names the policy, epoch and quantity."""


class Group:
    """The policies of one rollout length: their compiled functions, state and models (mutable)."""

    def __init__(self, config: TrainConfig, grid: Grid, h: int, data: Transitions,
                 models: EnsembleModel, mesh, env_name: str | None = None):
        """Initialise the policies of `grid` with rollout length `h` (config with that h), sharded
        over `mesh`. data: the real transitions [N] (replicated); models: ensembles [S] (one per
        grid seed) or [1] (shared), each policy gets its seed's; env_name: the data's env family
        (see `make_train`)."""
        self.policies: list[GridPoint] = grid.group(h)
        self.config = dataclasses.replace(config, rollout_length=h)
        one_model = jax.tree.map(lambda x: x[0], models)
        self.fns = make_train(self.config, data, one_model, env_name=env_name)
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


def metric_rows(group: Group, metrics: dict, first_epoch: int, steps: int, dataset: str) -> list[dict]:
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


def evaluate_group(group: Group, actors, evaluate: EvaluateFn, ref_scores: tuple[float, float],
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


def state_tree(groups: dict[int, Group]) -> dict:
    """What a checkpoint holds: {"h<h>": the group's TrainState, PRNG keys as key data}."""
    return {f"h{h}": checkpoint.keys_to_data(g.state) for h, g in groups.items()}


def load_state_tree(groups: dict[int, Group], tree: dict) -> None:
    """Put a checkpoint's `tree` (as `state_tree` makes it, numpy leaves) into `groups`, sharded."""
    for h, g in groups.items():
        g.state = shard_seeds(checkpoint.keys_from_data(tree[f"h{h}"], g.state), g.mesh)
