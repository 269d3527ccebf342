"""Cost of evaluating every epoch in the run driver: the per-epoch wall time of
`mopo_jax.mopo.run.run` with --eval-every 1 and the real Hopper-v5 batched evaluation (10
episodes), against the same driver with an evaluation that steps no env (the bare epoch: jitted
epoch + metrics fetch + rows written). Paper shapes (hopper, 50k × 5 rollouts, 1000 SAC steps per
epoch), synthetic data and ensemble. Per-epoch time = median gap between consecutive chunk
callbacks after the first two (compilation excluded).

    python experiments/bench_run_eval.py [--epochs 6] [--policies 1] [--quick]

Writes experiments/results/bench-run-eval-<platform>.json atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from bench_common import machine_info, synthetic_data, synthetic_model
from mopo_jax.files import atomic_write_bytes
from mopo_jax.envs.evaluate import evaluate_policies
from mopo_jax.mopo.config import preset
from mopo_jax.mopo.grid import Grid
from mopo_jax.mopo.run import RunSpec, run

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _per_epoch(config, grid, data, models, real_env: bool) -> tuple[float, list[float]]:
    """Median seconds between chunk callbacks (after the first two), and all the gaps."""
    def evaluate(actors, seeds):
        if real_env:
            return evaluate_policies(actors, "Hopper-v5", seeds)
        return np.zeros(seeds.shape)

    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = RunSpec(config, grid, Path(tmp) / "r", {"dataset": config.dataset},
                       (-20.272305, 3234.3), checkpoint_seconds=1e9)
        run(spec, data, models, evaluate=evaluate, callbacks=[lambda rows: stamps.append(time.perf_counter())])
    gaps = np.diff(stamps)[1:].tolist()
    return float(np.median(gaps)), gaps


def main(argv=None) -> None:
    """Measure and print the per-epoch overhead of evaluating every epoch."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--policies", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    args = p.parse_args(argv)
    small = dict(rollout_batch_size=500, steps_per_epoch=50) if args.quick else {}
    base = preset("hopper-random", epochs=args.epochs, eval_episodes=10, **small)
    key = jax.random.key(0)
    data = synthetic_data(key, 100_000 if not args.quick else 2000, 11, 3, 1.25)
    one = synthetic_model(key, base.dynamics, 11, 3)
    models = jax.tree.map(lambda x: np.stack([x] * args.policies), one)
    grid = Grid(tuple(range(args.policies)), (1.0,), (base.rollout_length,))
    result = {"machine": machine_info(), "epochs": args.epochs, "policies": args.policies,
              "quick": args.quick}
    config = dataclasses.replace(base, eval_every=1)
    for name, real_env in (("bare_epoch", False), ("eval_every_epoch", True)):
        median, gaps = _per_epoch(config, grid, data, models, real_env)
        result[name] = {"per_epoch_median_s": median, "gaps_s": gaps}
        print(f"{name}: median {median:.2f} s per epoch (gaps {np.round(gaps, 2).tolist()})", flush=True)
    ratio = result["eval_every_epoch"]["per_epoch_median_s"] / result["bare_epoch"]["per_epoch_median_s"]
    result["overhead_fraction"] = ratio - 1
    print(f"evaluating every epoch costs {100 * (ratio - 1):+.1f}% per epoch "
          f"({jax.devices()[0].device_kind}, jax {jax.__version__})")
    out = os.path.join(RESULTS, f"bench-run-eval-{jax.default_backend()}{'-quick' if args.quick else ''}.json")
    atomic_write_bytes(out, json.dumps(result, indent=2).encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
