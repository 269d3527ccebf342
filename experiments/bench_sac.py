"""Benchmark: SAC updates/s with batches sampled from a model buffer, N updates inside one lax.scan.

    python experiments/bench_sac.py                     # hopper shapes, batch 256, twin Q 256x2
    python experiments/bench_sac.py --steps 200 --repeats 5 --buffer-size 250000

Compile time is reported separately; throughput is the median over --repeats timed calls of the
compiled scan (after one warm-up call), each call running --steps updates.
"""

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from mopo_jax.buffer import buffer_add, buffer_init, buffer_sample, sample_mixed_batch
from mopo_jax.sac import SACConfig, init_sac, make_sac_update
from mopo_jax.transitions import Transitions


def random_transitions(key: jax.Array, n: int, obs_dim: int, act_dim: int) -> Transitions:
    """n random transitions (standard-normal obs/reward, uniform actions, 5% terminals)."""
    ks = jax.random.split(key, 5)
    return Transitions(
        observations=jax.random.normal(ks[0], (n, obs_dim)),
        actions=jax.random.uniform(ks[1], (n, act_dim), minval=-1.0, maxval=1.0),
        rewards=jax.random.normal(ks[2], (n,)),
        next_observations=jax.random.normal(ks[3], (n, obs_dim)),
        terminals=(jax.random.uniform(ks[4], (n,)) < 0.05).astype(jnp.float32),
    )


def make_run(config: SACConfig, num_steps: int, real_ratio: float):
    """run(state, buffer, real, key) -> (state, mean info): num_steps sample+update steps in one scan."""
    update = make_sac_update(config)

    def run(state, buffer, real, key):
        def step(state, step_key):
            sample_key, update_key = jax.random.split(step_key)
            if real_ratio > 0:
                batch = sample_mixed_batch(real, buffer, sample_key, config.batch_size, real_ratio)
            else:
                batch = buffer_sample(buffer, sample_key, config.batch_size)
            return update(state, batch, update_key)

        state, infos = jax.lax.scan(step, state, jax.random.split(key, num_steps))
        return state, jax.tree.map(jnp.mean, infos)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="SAC updates per scan call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--buffer-size", type=int, default=250_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--obs-dim", type=int, default=11)
    parser.add_argument("--act-dim", type=int, default=3)
    parser.add_argument("--real-ratio", type=float, default=0.0, help="0.05 mixes real rows as in MOPO")
    args = parser.parse_args()

    print(f"jax {jax.__version__} | backend {jax.default_backend()} | devices {jax.devices()}")
    print(f"host {platform.node()} | {os.cpu_count()} CPUs | python {platform.python_version()}")
    config = SACConfig(hidden_sizes=(args.hidden, args.hidden), batch_size=args.batch)
    print(f"steps/call {args.steps} | batch {args.batch} | twin Q {args.hidden}x2 | obs {args.obs_dim} "
          f"act {args.act_dim} | buffer {args.buffer_size} rows | real_ratio {args.real_ratio}")

    key = jax.random.key(0)
    data_key, real_key, init_key, run_key = jax.random.split(key, 4)
    buffer = buffer_init(args.buffer_size, args.obs_dim, args.act_dim)
    rows = random_transitions(data_key, args.buffer_size, args.obs_dim, args.act_dim)
    buffer = jax.jit(buffer_add)(buffer, rows, jnp.ones(args.buffer_size, bool))
    real = random_transitions(real_key, args.buffer_size, args.obs_dim, args.act_dim)
    state = init_sac(init_key, args.obs_dim, args.act_dim, config)
    jax.block_until_ready((buffer, real, state))
    assert int(buffer.count) == args.buffer_size

    run = jax.jit(make_run(config, args.steps, args.real_ratio), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = run.lower(state, buffer, real, run_key).compile()
    compile_s = time.perf_counter() - t0
    print(f"compile: {compile_s:.2f} s")

    state, info = compiled(state, buffer, real, run_key)  # warm-up
    jax.block_until_ready(state)
    times, cpu_times = [], []
    for i in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        state, info = compiled(state, buffer, real, jax.random.fold_in(run_key, i))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    median = statistics.median(times)
    rates = sorted(args.steps / t for t in times)
    print(f"per call (s): {', '.join(f'{t:.3f}' for t in times)}")
    # On a shared host, CPU-seconds per step are steadier than wall time (others steal cores).
    cpu_ms = 1e3 * statistics.median(cpu_times) / args.steps
    busy = statistics.median(cpu_times) / median
    print(f"process CPU time: {cpu_ms:.2f} ms/step (median), {busy:.2f} cores busy")
    print(f"SAC steps/s: median {args.steps / median:.1f} (min {rates[0]:.1f}, max {rates[-1]:.1f}) "
          f"over {args.repeats} repeats of {args.steps} steps")
    print("last-call means: " + ", ".join(f"{k} {float(v):.3g}" for k, v in sorted(info.items())))


if __name__ == "__main__":
    main()
