"""`python -m mopo_jax.train`: dataset → dynamics ensemble → MOPO policy, with eval, logs, resume."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import checkpoint, dynamics
from mopo_jax.config import TrainConfig, preset, tiny
from mopo_jax.data import DatasetError, cache_dir, dataset_names, load_dataset, normalized_score
from mopo_jax.evaluate import evaluate_policy
from mopo_jax.loop import make_train
from mopo_jax.ood import make_eval_env
from mopo_jax.sharding import replicate, replicated, seed_mesh, seed_sharding, shard_seeds

log = logging.getLogger("mopo_jax.train")


def _config_dict(config: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, as JSON reads back


def _atomic_write_text(path: Path, text: str) -> None:
    checkpoint.atomic_write_bytes(path, text.encode("utf-8"))


def _model_prefix(config: TrainConfig, num_rows: int, seed: int, model_dir: Path) -> Path:
    tag = hashlib.sha256(json.dumps(_config_dict(config)["dynamics"], sort_keys=True).encode()).hexdigest()[:10]
    return model_dir / f"{config.dataset}-n{num_rows}-seed{seed}-{tag}"


def fit_or_load_dynamics(config: TrainConfig, data, seeds: list[int], model_dir: Path):
    """Ensembles for `seeds` (one per seed, fitted with key(seed)), stacked on a leading axis [S].

    Each is loaded from the cache for (dataset, size, seed, dynamics config) when present; the
    missing ones are fitted together in one vmapped call (`dynamics.fit_many`) and cached.
    """
    n, obs_dim, act_dim = (int(data.observations.shape[0]), data.observations.shape[1],
                           data.actions.shape[1])
    prefixes = [_model_prefix(config, n, s, model_dir) for s in seeds]
    models = {}
    for s, prefix in zip(seeds, prefixes):
        if Path(checkpoint.json_path(prefix)).exists():
            models[s], _ = dynamics.load(prefix, obs_dim=obs_dim, act_dim=act_dim, config=config.dynamics)
            log.info("dynamics: loaded cached ensemble %s", prefix)
    missing = [s for s in seeds if s not in models]
    if missing:
        log.info("dynamics: fitting %d x %d members on %d transitions (seeds %s) ...", len(missing),
                 config.dynamics.num_members, n, missing)
        start = time.perf_counter()
        keys = jax.vmap(jax.random.key)(jnp.asarray(missing))
        fitted, report = dynamics.fit_many(keys, data, config.dynamics)
        jax.block_until_ready(fitted)
        log.info("dynamics: %.1f s; epochs %s; holdout MSE per member %s; elites %s",
                 time.perf_counter() - start, np.asarray(report.epochs).tolist(),
                 np.round(np.asarray(report.holdout_mse), 5).tolist(),
                 np.asarray(report.elite_idx).tolist())
        model_dir.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(missing):
            models[s] = jax.tree.map(lambda x, i=i: x[i], fitted)
            dynamics.save(prefixes[seeds.index(s)], models[s], config.dynamics)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *(models[s] for s in seeds))


def policy_keys(seed: int, num_seeds: int) -> jax.Array:
    """PRNG keys [S] of the policy phase: seed i is fold_in(key(seed + i), 1), so a run with
    --seed s --num-seeds S trains the same policies as S runs with --seed s, s+1, ..."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(seed + jnp.arange(num_seeds))


def run(config: TrainConfig, *, seed: int = 0, num_seeds: int = 1, logdir: str | Path = "runs/mopo",
        resume: bool = False, dataset_steps: int | None = None, progress: bool = True,
        shared_model: bool = False, num_devices: int | None = None) -> dict:
    """Train `num_seeds` policies (vmapped, split over devices) chunk by chunk, evaluating and
    checkpointing between chunks.

    Seed i (= seed + i) gets its own dynamics ensemble fitted with key(seed + i), unless
    `shared_model`, where all policies share the ensemble of `seed`. The seed axis is sharded over
    the most local devices (at most `num_devices`) that divide num_seeds; data is replicated.
    Writes into `logdir`: config.json, metrics.jsonl (one line per epoch and seed), checkpoint
    (.msgpack + .json, atomic) and results.json. `resume=True` continues from the checkpoint.
    Returns the results dict.
    """
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.dataset, num_steps=dataset_steps)
    mesh = seed_mesh(num_seeds, num_devices)
    data = replicate(jax.tree.map(jnp.asarray, dataset.transitions()), mesh)
    models = fit_or_load_dynamics(config, data, [seed] if shared_model else
                                  [seed + i for i in range(num_seeds)], cache_dir() / "models")
    models = replicate(jax.tree.map(lambda x: x[0], models), mesh) if shared_model else \
        shard_seeds(models, mesh)
    fns = make_train(config, data, models if shared_model else jax.tree.map(lambda x: x[0], models))
    state = shard_seeds(jax.jit(jax.vmap(fns.init))(policy_keys(seed, num_seeds)), mesh)
    seeds_sharding, data_sharding = seed_sharding(mesh), replicated(mesh)
    model_axis, model_sharding = (None, data_sharding) if shared_model else (0, seeds_sharding)
    chunk_fns = {}
    eval_env = (functools.partial(make_eval_env, dataset.info.task) if dataset.info.task
                else dataset.info.env_id)  # OOD tasks: the env with the target reward
    ckpt = logdir / "checkpoint"
    meta = {"config": _config_dict(config), "seed": seed, "num_seeds": num_seeds,
            "shared_model": shared_model, "dataset_steps": dataset_steps,
            "jax_version": jax.__version__, "device": str(jax.devices()[0].device_kind),
            "devices_used": int(mesh.devices.size), "dataset_source": dataset.info.source,
            "minari_id": dataset.info.minari_id}
    metrics_path = logdir / "metrics.jsonl"
    if resume and Path(checkpoint.json_path(ckpt)).exists():
        saved_meta = checkpoint.load_metadata(ckpt)
        for field in ("config", "seed", "num_seeds", "shared_model", "dataset_steps"):
            if saved_meta[field] != meta[field]:
                raise ValueError(f"--resume: {logdir} was started with a different {field} "
                                 f"({saved_meta[field]!r} vs {meta[field]!r}); use a new --logdir.")
        disk, _ = checkpoint.load_pytree(ckpt, checkpoint.keys_to_data(state))
        state = shard_seeds(checkpoint.keys_from_data(disk, state), mesh)
        done = int(state.epoch[0])
        kept = [ln for ln in metrics_path.read_text().splitlines()
                if json.loads(ln)["epoch"] <= done] if metrics_path.exists() else []
        _atomic_write_text(metrics_path, "".join(ln + "\n" for ln in kept))
        log.info("resumed from %s at epoch %d", ckpt, done)
    else:
        done = 0
        metrics_path.write_text("")
    _atomic_write_text(logdir / "config.json", json.dumps(meta, indent=2))
    from tqdm import tqdm

    bar = tqdm(total=config.epochs, initial=done, unit="epoch", disable=not progress)
    evals = []
    while done < config.epochs:
        num = min(config.eval_every - done % config.eval_every, config.epochs - done)
        if num not in chunk_fns:
            chunk_fns[num] = jax.jit(
                jax.vmap(lambda s, d, m, n=num: fns.run_epochs(s, d, m, n), in_axes=(0, None, model_axis)),
                in_shardings=(seeds_sharding, data_sharding, model_sharding),
                out_shardings=seeds_sharding, donate_argnums=0)
        start = time.perf_counter()
        state, metrics = chunk_fns[num](state, data, models)
        metrics = jax.device_get(metrics)  # each leaf [num_seeds, num]
        seconds = time.perf_counter() - start
        done += num
        returns = np.array([evaluate_policy(jax.tree.map(lambda x, i=i: x[i], state.sac.actor_params),
                                            eval_env, config.eval_episodes, seed=10_000 + i)
                            for i in range(num_seeds)])  # [num_seeds, episodes]
        scores = normalized_score(returns.mean(1), dataset.info)  # NaN without a reference (OOD)
        evals.append({"epoch": done, "return_mean": returns.mean(1).tolist(),
                      "normalized_score": [None if np.isnan(x) else x for x in scores.tolist()]})
        lines = []
        for j in range(num):
            for i in range(num_seeds):
                row = {"epoch": done - num + j + 1, "seed_index": i, "sac_steps":
                       (done - num + j + 1) * config.steps_per_epoch}
                row.update({k: float(v[i, j]) for k, v in metrics.items()})
                if j == num - 1:
                    row.update(eval_return=float(returns[i].mean()), eval_return_std=float(
                        returns[i].std()), chunk_seconds=seconds,
                        normalized_score=None if np.isnan(scores[i]) else float(scores[i]))
                lines.append(json.dumps(row) + "\n")
        with open(metrics_path, "a") as f:
            f.writelines(lines)
        checkpoint.save_pytree(ckpt, checkpoint.keys_to_data(state), meta)
        bar.update(num)
        bar.write(f"epoch {done:5d}  return {np.round(returns.mean(1), 1).tolist()}  normalised "
                  f"{np.round(scores, 1).tolist()} ({dataset.info.ref_source.split(' (')[0]})  "
                  f"penalty {np.round(metrics['rollout_penalty'][:, -1], 3).tolist()}  "
                  f"{num * config.steps_per_epoch * num_seeds / seconds:.0f} SAC steps/s")
    bar.close()
    results = {"dataset": config.dataset, "epochs": done, "evaluations": evals,
               "final_return_mean": evals[-1]["return_mean"] if evals else None,
               "final_normalized_score": evals[-1]["normalized_score"] if evals else None,
               "ref_source": dataset.info.ref_source}
    _atomic_write_text(logdir / "results.json", json.dumps(results, indent=2))
    return results


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags; every TrainConfig field that users tune has one."""
    p = argparse.ArgumentParser(prog="python -m mopo_jax.train", description=__doc__)
    p.add_argument("--dataset", default="hopper-random", help=f"one of: {', '.join(dataset_names())}")
    p.add_argument("--seed", type=int, default=0, help="base PRNG seed (dynamics fit and policies)")
    p.add_argument("--num-seeds", type=int, default=1,
                   help="seeds trained at once (vmapped; seed i uses --seed + i for its ensemble and policy)")
    p.add_argument("--shared-model", action="store_true",
                   help="all seeds share the ensemble of --seed instead of fitting one each")
    p.add_argument("--num-devices", type=int, default=None,
                   help="split the seeds over at most this many local devices (default: all)")
    p.add_argument("--epochs", type=int, help="epochs (default 1000)")
    p.add_argument("--steps-per-epoch", type=int, help="SAC updates per epoch (default 1000)")
    p.add_argument("--rollout-length", type=int, help="model rollout horizon h (default: preset)")
    p.add_argument("--penalty-coef", type=float, help="uncertainty penalty λ (default: preset)")
    p.add_argument("--penalty", choices=["max_std", "max_std_elites", "disagreement"],
                   help="uncertainty estimate u(s,a) (default max_std over all members)")
    p.add_argument("--rollout-batch-size", type=int, help="rollout start states per epoch (50000)")
    p.add_argument("--real-ratio", type=float, help="fraction of real rows per SAC batch (0.05)")
    p.add_argument("--eval-every", type=int, help="epochs between evaluations/checkpoints (10)")
    p.add_argument("--eval-episodes", type=int, help="evaluation episodes (10)")
    p.add_argument("--dataset-steps", type=int, help="use only the first N transitions")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke configuration")
    p.add_argument("--logdir", default=None, help="run directory (default runs/<dataset>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --logdir")
    p.add_argument("--offline", action="store_true", help="never try a dataset download")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.offline:
        os.environ["MOPO_JAX_OFFLINE"] = "1"
    fields = ("epochs", "steps_per_epoch", "rollout_length", "penalty_coef", "penalty",
              "rollout_batch_size", "real_ratio", "eval_every", "eval_episodes")
    overrides = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    try:
        config = (tiny if args.tiny else preset)(args.dataset.lower(), **overrides)
        logdir = args.logdir or f"runs/{config.dataset}-seed{args.seed}"
        results = run(config, seed=args.seed, num_seeds=args.num_seeds, logdir=logdir,
                      resume=args.resume, dataset_steps=args.dataset_steps,
                      shared_model=args.shared_model, num_devices=args.num_devices)
    except (ValueError, DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: results[k] for k in ("dataset", "epochs", "final_return_mean",
                                              "final_normalized_score", "ref_source")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
