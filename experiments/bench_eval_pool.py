"""Speed of one epoch's evaluation (10 episodes) in-process vs on an EpisodePool of worker processes.

    python experiments/bench_eval_pool.py --workers 2          # this project's 2-core CPU
    python experiments/bench_eval_pool.py --workers 4,10,15    # a many-core host (a GPU machine)

Policies: the published hopper-random seed 0 and seed 1 final actors. Seed 0's stands for all
1000 steps of every episode, seed 1's falls within ~200: the two modes a run's evaluations switch
between. For each policy and each method: one untimed call first (compilation; the pool's
workers started apart, their start timed), then --repeats timed calls of 10 episodes with the
same reset seeds, median/min/max, and whether every call returned exactly the in-process returns.
Writes bench-eval-pool-<platform>.json (and .md) to --out (default: this folder's results/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from bench_common import machine_info, stats
from mopo_jax import load_policy
from mopo_jax.envs.episode_pool import EpisodePool
from mopo_jax.envs.evaluate import evaluate_policies
from mopo_jax.files import atomic_write_bytes

HERE = Path(__file__).resolve().parent
PUBLISHED = sorted((HERE / "results").glob("*-hopper-random/campaign.json"))[-1].parent  # the newest
POLICIES = {"standing (seed 0 final)": 0, "falling (seed 1 final)": 1}


def _actor(seed: int):
    """The published final actor of hopper-random seed `seed`, leaves [1, ...]."""
    policy = load_policy(PUBLISHED / f"hopper-random-seed{seed}" / "policies" / f"h5-lam1-seed{seed}-final")
    return jax.tree.map(lambda x: np.asarray(x)[None], policy.params)


def _timed(evaluate, actor, seeds, repeats: int, expected) -> dict:
    evaluate(actor, seeds)  # compile (in-process) or warm the workers' imports and jit
    times, same = [], True
    for _ in range(repeats):
        start = time.perf_counter()
        got = evaluate(actor, seeds)
        times.append(time.perf_counter() - start)
        same &= expected is None or bool(np.array_equal(got, expected))
    return {"seconds": stats(times), "returns_mean": float(np.mean(got)), "equal_to_in_process": same}


def main() -> None:
    """Parse the flags, time every (policy, method), write JSON and markdown."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="2", help="comma-separated pool sizes")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    seeds = np.arange(1000, 1000 + args.episodes)[None]
    result = {"machine": machine_info(), "argv": sys.argv, "episodes": args.episodes,
              "repeats": args.repeats, "policies": {}}
    actors = {name: _actor(seed) for name, seed in POLICIES.items()}
    for name, actor in actors.items():
        expected = evaluate_policies(actor, "Hopper-v5", seeds)
        result["policies"][name] = {"in-process": _timed(
            lambda a, s: evaluate_policies(a, "Hopper-v5", s), actor, seeds, args.repeats, None)}
    for workers in (int(w) for w in args.workers.split(",")):
        start = time.perf_counter()
        with EpisodePool("Hopper-v5", workers) as pool:
            pool.evaluate(actors[next(iter(actors))], seeds[:, :workers])  # every worker imports
            started = time.perf_counter() - start
            for name, actor in actors.items():
                expected = evaluate_policies(actor, "Hopper-v5", seeds)
                entry = _timed(pool.evaluate, actor, seeds, args.repeats, expected)
                result["policies"][name][f"pool of {workers}"] = entry | {"pool_start_s": round(started, 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-eval-pool-{jax.default_backend()}"
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps(result, indent=2).encode())
    lines = [f"# {args.episodes}-episode evaluation: in-process vs EpisodePool", "",
             f"{result['machine']}", "", "| policy | method | median s | min–max s | equal |",
             "|---|---|---|---|---|"]
    for name, methods in result["policies"].items():
        for method, entry in methods.items():
            s = entry["seconds"]
            lines.append(f"| {name} | {method} | {s['median']:.3f} | {s['min']:.3f}–{s['max']:.3f} | "
                         f"{entry['equal_to_in_process']} |")
    atomic_write_bytes(stem.with_suffix(".md"), ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    standing = result["policies"][next(iter(POLICIES))]
    speedups = ", ".join(f"{method} {standing['in-process']['seconds']['median'] / e['seconds']['median']:.2f}x"
                         for method, e in standing.items() if method != "in-process")
    print(f"wrote {stem}.json and .md; standing policy, in-process time over: {speedups}")


if __name__ == "__main__":
    main()
