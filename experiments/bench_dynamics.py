"""Benchmark of dynamics-ensemble training throughput (gradient steps/s, GFLOP/s); not a test.

    python experiments/bench_dynamics.py [--steps 50] [--repeats 5] [--members 7] [--batch 256]

Measures (a) the real fit epoch (bootstrap reshuffle + gathers + scan of Adam steps + holdout
evaluation, exactly the body of `dynamics.fit`'s while loop) and (b) a bare lax.scan of gradient
steps on one fixed minibatch. FLOPs are counted analytically: 2·in·out per matmul per row,
×3 for forward + backward, × members × batch (elementwise ops, Adam and gathers not counted).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mopo_jax import dynamics
from mopo_jax.transitions import Transitions


def step_flops(config: dynamics.DynamicsConfig, obs_dim: int, act_dim: int) -> float:
    """Analytic FLOPs of one training step (all members)."""
    sizes = (obs_dim + act_dim, *config.hidden_sizes)
    per_row = sum(2 * sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
    per_row += 2 * 2 * sizes[-1] * (obs_dim + 1)  # mean and log-variance heads
    return 3.0 * per_row * config.num_members * config.batch_size


def timed(fn, *args, repeats: int):
    """(compile seconds, list of run seconds) of a jitted fn."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - start)
    return compile_s, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="gradient steps per timed call")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--members", type=int, default=7, help="ensemble members")
    parser.add_argument("--batch", type=int, default=256, help="minibatch size per member")
    parser.add_argument("--obs-dim", type=int, default=11, help="observation size (hopper: 11)")
    parser.add_argument("--act-dim", type=int, default=3, help="action size (hopper: 3)")
    args = parser.parse_args()
    config = dynamics.DynamicsConfig(num_members=args.members, num_elites=min(5, args.members),
                                     batch_size=args.batch)
    o, a = args.obs_dim, args.act_dim
    flops = step_flops(config, o, a)
    print(f"jax {jax.__version__}  device {jax.devices()[0].device_kind} ({jax.default_backend()})  "
          f"{config.num_members} members x batch {config.batch_size}, obs {o} act {a}, "
          f"MLP {config.hidden_sizes}; {flops / 1e9:.3f} GFLOP/step")

    # (a) the fit's epoch: train split of exactly steps*batch rows plus a 1000-row holdout
    n = args.steps * config.batch_size + config.max_holdout
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, o)).astype(np.float32)
    tr = Transitions(obs, rng.uniform(-1, 1, (n, a)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                     obs + 0.1 * rng.normal(size=(n, o)).astype(np.float32), np.zeros(n, np.float32))
    tr = jax.tree.map(jnp.asarray, tr)
    data, carry, _ = jax.jit(dynamics._setup, static_argnames="config")(jax.random.key(0), tr, config)
    compile_s, runs = timed(lambda d, c: dynamics._train_epoch(d, c, config), data, carry,
                            repeats=args.repeats)
    report("fit epoch (real inner loop)", compile_s, runs, args.steps, flops)

    # (b) bare scan of Adam steps on one fixed minibatch
    loss_fn, optimizer = dynamics._loss_fn(config), optax.adam(config.learning_rate)
    x = data.train_x[data.boot_idx[:, : config.batch_size]]
    y = data.train_y[data.boot_idx[:, : config.batch_size]]

    def scan_steps(trainable, opt_state):
        def step(state, _):
            grads = jax.grad(loss_fn)(state[0], x, y, None)
            updates, opt_state = optimizer.update(grads, state[1], state[0])
            return (optax.apply_updates(state[0], updates), opt_state), None
        return jax.lax.scan(step, (trainable, opt_state), None, length=args.steps)[0]

    compile_s, runs = timed(scan_steps, carry.trainable, carry.opt_state, repeats=args.repeats)
    report("bare gradient-step scan", compile_s, runs, args.steps, flops)


def report(name: str, compile_s: float, runs: list[float], steps: int, flops: float) -> None:
    med = statistics.median(runs)
    print(f"{name:28s} compile {compile_s:6.2f} s | median {med * 1e3 / steps:7.2f} ms/step "
          f"= {steps / med:7.1f} steps/s = {flops * steps / med / 1e9:6.1f} GFLOP/s "
          f"(min {steps / max(runs):.1f}, max {steps / min(runs):.1f} steps/s over {len(runs)} runs)")


if __name__ == "__main__":
    main()
