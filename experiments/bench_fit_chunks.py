"""Cost of splitting a dynamics fit epoch into short compiled calls (what makes Ctrl-C act in seconds).

    python experiments/bench_fit_chunks.py                  # 100k hopper rows, paper ensemble, 5 rounds
    python experiments/bench_fit_chunks.py --quick          # smoke run: 5k rows, 3 x 2x32 members

One epoch of the fit (the paper's 7 members of 4x200, batch 256; synthetic hopper-shaped rows),
from the same starting state every time, timed as
  one-call    fit's epoch: `fit._run_epochs` for one epoch (the call the on_epoch path makes)
  chunks-N    `chunks.run_epoch` with steps_per_call=N: a shuffle call, ceil(K/N) calls of N
              steps (each waited for, as the resumable fit does), a holdout call
Compile apart: each distinct program is compiled ahead of time and timed (one-call: the epoch
loop; chunks-N: shuffle + N-step call + remainder call + holdout), then every method runs once
(warm-up). Then --repeats rounds, each timing every method in turn (the order rotating from round
to round); medians over rounds. Every method's carry is checked bit-identical to one-call's.
Writes experiments/results/bench-fit-chunks-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import ENVS, machine_info, stats, synthetic_data
from mopo_jax.files import atomic_write_bytes
from mopo_jax.dynamics import chunks
from mopo_jax.dynamics import fit as dyn_fit
from mopo_jax.dynamics.config import DynamicsConfig

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def methods(data, carry, config, steps_per_call):
    """name -> a function running one epoch from `carry` and returning the new carry (waited for)."""
    out = {"one-call": lambda: jax.block_until_ready(
        dyn_fit._run_epochs(data, carry, carry.epoch + 1, config))}
    for n in steps_per_call:
        out[f"chunks-{n}"] = (lambda n=n: chunks.run_epoch(chunks.SINGLE, data, carry, config, n))
    return out


def _compile_seconds(lowered) -> float:
    start = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - start


def compile_times(data, carry, config, steps_per_call, steps: int) -> dict:
    """name -> seconds to compile the method's programs (ahead of time, each program timed once)."""
    calls = chunks.SINGLE
    batches, state = calls.begin(data, carry, config=config)
    programs = {"shuffle+holdout": _compile_seconds(calls.begin.lower(data, carry, config=config))
                + _compile_seconds(calls.end.lower(data, carry, state, config=config))}
    out = {"one-call": _compile_seconds(
        dyn_fit._run_epochs.lower(data, carry, carry.epoch + 1, config))}
    for n in steps_per_call:
        sizes = {min(n, steps)} | ({steps % n} if steps % n else set())
        for k in sizes - set(programs):
            programs[k] = _compile_seconds(calls.run.lower(
                data, batches, state, jnp.int32(0), num_steps=k, config=config))
        out[f"chunks-{n}"] = programs["shuffle+holdout"] + sum(programs[k] for k in sizes)
    return out


def same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--env", default="hopper", choices=sorted(ENVS))
    parser.add_argument("--steps-per-call", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(RESULTS, "bench-fit-chunks-cpu.json"))
    args = parser.parse_args()
    config = DynamicsConfig()
    if args.quick:
        args.rows, args.repeats = 5000, 1
        config = DynamicsConfig(num_members=3, num_elites=2, hidden_sizes=(32, 32),
                                hidden_weight_decays=(2.5e-5, 5e-5))
    obs_dim, act_dim, height = ENVS[args.env]
    transitions = synthetic_data(jax.random.key(0), args.rows, obs_dim, act_dim, height)
    data, carry, _ = dyn_fit._setup_jit(jax.random.key(1), transitions, config)
    steps = int(-(-data.train_x.shape[0] // config.batch_size))
    runs = methods(data, carry, config, args.steps_per_call)
    compile_s = compile_times(data, carry, config, args.steps_per_call, steps)
    print("compile (s): " + "  ".join(f"{n} {t:.2f}" for n, t in compile_s.items()), flush=True)
    results = {name: run() for name, run in runs.items()}  # warm-up
    names, times = list(runs), {name: [] for name in runs}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
        print(f"round {r + 1}: " + "  ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    base = statistics.median(times["one-call"])
    table = {}
    for name in runs:
        med = statistics.median(times[name])
        table[name] = {**stats(times[name]), "compile_s": compile_s[name],
                       "vs_one_call": med / base, "ms_per_step": 1e3 * med / steps,
                       "identical_to_one_call": same(results[name], results["one-call"])}
        print(f"{name:>10}: median {med:.2f} s ({table[name]['vs_one_call']:.3f}x one-call), "
              f"{table[name]['ms_per_step']:.1f} ms/step, compile {table[name]['compile_s']:.1f} s, "
              f"identical {table[name]['identical_to_one_call']}", flush=True)
    result = {"rows": args.rows, "env": args.env, "steps_per_epoch": steps, "repeats": args.repeats,
              "config": repr(config), "methods": table, "machine": machine_info()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
