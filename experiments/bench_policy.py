"""Benchmark of the policy phase: one MOPO epoch (50k x h model rollout + N SAC updates).

Usage: python experiments/bench_policy.py [--repeats 5] [--steps-per-epoch 1000] [--num-seeds 1]

Uses hopper shapes, a freshly initialised default-size ensemble (7 x 4x200) and synthetic real data,
so it measures speed only. Prints compile time separately, then the median over repeats of one
epoch's wall time and SAC steps/s (rollout included), with device and jax version.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax.config import preset
from mopo_jax.ensemble import EnsembleModel, init_ensemble_params
from mopo_jax.loop import make_train
from mopo_jax.transitions import Transitions

OBS, ACT = 11, 3


def synthetic(num_rows: int, key) -> Transitions:
    """Real-looking hopper transitions (healthy heights) for speed measurement only."""
    k1, k2, k3 = jax.random.split(key, 3)
    obs = 0.1 * jax.random.normal(k1, (num_rows, OBS)) + jnp.zeros(OBS).at[0].set(1.25)
    act = jax.random.uniform(k2, (num_rows, ACT), minval=-1, maxval=1)
    return Transitions(obs, act, jax.random.normal(k3, (num_rows,)), obs, jnp.zeros(num_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=1000)
    parser.add_argument("--rollout-batch-size", type=int, default=50_000)
    parser.add_argument("--num-seeds", type=int, default=1)
    args = parser.parse_args()
    config = preset("hopper-random", steps_per_epoch=args.steps_per_epoch,
                    rollout_batch_size=args.rollout_batch_size)
    key = jax.random.key(0)
    dyn = config.dynamics
    model = EnsembleModel(
        params=init_ensemble_params(key, dyn.num_members, OBS + ACT, OBS + 1, dyn.hidden_sizes),
        max_logvar=jnp.full(OBS + 1, 0.5), min_logvar=jnp.full(OBS + 1, -10.0),
        input_mean=jnp.zeros(OBS + ACT), input_std=jnp.ones(OBS + ACT),
        elite_idx=jnp.arange(dyn.num_elites, dtype=jnp.int32))
    data = synthetic(100_000, key)
    fns = make_train(config, data, model)
    epoch = jax.jit(jax.vmap(lambda s: fns.run_epochs(s, data, model, 1)))
    state = jax.vmap(fns.init)(jax.random.split(key, args.num_seeds))
    start = time.perf_counter()
    compiled = epoch.lower(state).compile()
    compile_s = time.perf_counter() - start
    state, _ = compiled(state)  # warm-up
    jax.block_until_ready(state)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        state, metrics = compiled(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    med = statistics.median(times)
    steps = args.steps_per_epoch * args.num_seeds
    print(f"device {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"epoch = rollout {args.rollout_batch_size} x h={config.rollout_length} "
          f"(7 members) + {args.steps_per_epoch} SAC steps, {args.num_seeds} seed(s)")
    print(f"compile {compile_s:.1f} s; epoch median {med:.2f} s over {args.repeats} "
          f"(min {min(times):.2f}, max {max(times):.2f}); {steps / med:.1f} SAC steps/s aggregate, "
          f"{args.steps_per_epoch / med:.1f} per seed")
    print(f"model buffer rows after warm-up + repeats: {np.asarray(metrics['buffer_count'])[:, -1]}")


if __name__ == "__main__":
    main()
