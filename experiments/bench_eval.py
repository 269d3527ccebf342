"""Speed of real-env evaluation on this machine's CPU: batched `evaluate_policies` vs serial `evaluate_policy`.

    python experiments/bench_eval.py             # 4 policies x 10 episodes of 1000 steps, 256x256 actors
    python experiments/bench_eval.py --quick     # smoke run: 2 x 2 episodes of 20 steps, 8x8 actors

Episodes: Hopper-v5 with terminate_when_unhealthy=False (default), or HalfCheetah-v5 (never
terminates), both capped at --max-steps (default 1000, the evaluation time limit): every episode
runs exactly max_steps steps whatever the untrained actor does, so all methods do the same
P·E·max_steps env steps. Actors: fresh `init_sac` actors (untrained) of --hidden widths.
Methods, all on the CPU device:
  serial   evaluate_policy once per policy (one env, one episode after the other)
  batched  evaluate_policies on all P·E episodes (one env per episode, one actor call per step)
  env      the same episodes stepped with a zero action and no actor: the floor of any method
  make     making and closing P·E envs, the part of `batched` that serial pays only P times
Compile apart: each method first runs twice on 1-step episodes; compile_s = first − second.
Then --repeats rounds, each timing the three methods in turn; medians over rounds, the ratio
serial/batched of the same run, and whether both gave bit-identical returns every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import gymnasium as gym
import jax
import numpy as np

from bench_common import machine_info, stats
from mopo_jax.files import atomic_write_bytes
from mopo_jax.envs.evaluate import evaluate_policies, evaluate_policy
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.update import init_sac

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ENVS = {"hopper": ("Hopper-v5", {"terminate_when_unhealthy": False}), "halfcheetah": ("HalfCheetah-v5", {})}


def make_factory(env: str, max_steps: int):
    """Zero-argument factory of the benchmark env, time limit `max_steps`."""
    env_id, kwargs = ENVS[env]
    return lambda: gym.make(env_id, max_episode_steps=max_steps, **kwargs)


def make_actors(num: int, hidden: tuple[int, ...], obs_dim: int, act_dim: int, seed: int):
    """Fresh SAC actor params of `num` policies, leaves stacked [num, ...]."""
    config = SACConfig(hidden_sizes=hidden)
    init = jax.jit(jax.vmap(lambda k: init_sac(k, obs_dim, act_dim, config).actor_params))
    return jax.block_until_ready(init(jax.random.split(jax.random.key(seed), num)))


def serial(params, factory, seeds: np.ndarray) -> np.ndarray:
    """evaluate_policy per policy, policy p's episodes seeded seeds[p, 0] + arange(E) -> [P, E]."""
    return np.stack([evaluate_policy(jax.tree.map(lambda x: x[p], params), factory, seeds.shape[1],
                                     seed=int(seeds[p, 0])) for p in range(seeds.shape[0])])


def env_floor(factory, seeds: np.ndarray) -> np.ndarray:
    """The same episodes stepped with a zero action, no actor -> returns [P, E]."""
    env = factory()
    zero = np.zeros(env.action_space.shape, env.action_space.dtype)
    returns = np.zeros(seeds.shape)
    for index, seed in np.ndenumerate(seeds):
        env.reset(seed=int(seed))
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(zero)
            returns[index] += reward
            done = terminated or truncated
    env.close()
    return returns


def make_envs(factory, count: int) -> None:
    """Make `count` envs, then close them."""
    for env in [factory() for _ in range(count)]:
        env.close()


def timed(fn, *args):
    """(fn(*args), wall seconds)."""
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def compile_seconds(method, params, env: str, seeds: np.ndarray) -> float:
    """First minus second run of `method` on 1-step episodes: trace + compile (≥ 0)."""
    factory = make_factory(env, 1)
    first = timed(method, params, factory, seeds)[1]
    second = timed(method, params, factory, seeds)[1]
    return max(first - second, 0.0)


def run(args) -> dict:
    """All measurements -> the JSON result (see the module docstring)."""
    factory = make_factory(args.env, args.max_steps)
    probe = factory()
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    params = make_actors(args.policies, args.hidden, obs_dim, act_dim, args.seed)
    seeds = 1000 * np.arange(args.policies)[:, None] + np.arange(args.episodes)[None]
    methods = {"batched": evaluate_policies, "serial": serial}
    compile_s = {name: compile_seconds(m, params, args.env, seeds) for name, m in methods.items()}
    times = {"batched": [], "serial": [], "env": [], "make": []}
    identical = True
    for _ in range(args.repeats):
        batched_returns, t = timed(evaluate_policies, params, factory, seeds)
        times["batched"].append(t)
        serial_returns, t = timed(serial, params, factory, seeds)
        times["serial"].append(t)
        times["env"].append(timed(env_floor, factory, seeds)[1])
        times["make"].append(timed(make_envs, factory, seeds.size)[1])
        identical &= bool(np.array_equal(batched_returns, serial_returns))
    med = {k: statistics.median(v) for k, v in times.items()}
    steps = int(seeds.size * args.max_steps)
    return {
        "machine": machine_info() | {"eval_device": str(jax.devices("cpu")[0])},
        "bench": {"env_id": ENVS[args.env][0], "env_kwargs": ENVS[args.env][1],
                  "max_episode_steps": args.max_steps, "policies": args.policies,
                  "episodes": args.episodes, "env_steps": steps, "hidden_sizes": list(args.hidden),
                  "obs_dim": obs_dim, "act_dim": act_dim, "repeats": args.repeats,
                  "quick": args.quick, "episode_length": "fixed: every episode runs max_episode_steps"},
        "compile_s": compile_s,
        "seconds": {k: stats(v) for k, v in times.items()},
        "env_steps_per_s": {k: steps / med[k] for k in ("batched", "serial", "env")},
        "ratio_serial_over_batched": med["serial"] / med["batched"],
        "ratio_per_repeat": [s / b for s, b in zip(times["serial"], times["batched"])],
        "actor_overhead_s": {k: med[k] - med["env"] for k in methods},
        "identical_returns": identical,
        "return_mean": float(np.mean(batched_returns)),
    }


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=sorted(ENVS), default="hopper")
    p.add_argument("--policies", type=int, help="P (default 4; quick 2)")
    p.add_argument("--episodes", type=int, help="E per policy (default 10; quick 2)")
    p.add_argument("--max-steps", type=int, help="episode length (default 1000; quick 20)")
    p.add_argument("--hidden", help="actor widths, comma-separated (default 256,256; quick 8,8)")
    p.add_argument("--repeats", type=int, help="timed rounds (default 5; quick 1)")
    p.add_argument("--seed", type=int, default=0, help="actor init seed")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke run)")
    p.add_argument("--out", help="JSON path (default experiments/results/bench-eval-cpu[-quick].json)")
    args = p.parse_args(argv)
    q = args.quick
    args.policies = args.policies or (2 if q else 4)
    args.episodes = args.episodes or (2 if q else 10)
    args.max_steps = args.max_steps or (20 if q else 1000)
    args.hidden = tuple(int(h) for h in (args.hidden or ("8,8" if q else "256,256")).split(","))
    args.repeats = args.repeats or (1 if q else 5)
    args.out = args.out or os.path.join(RESULTS, f"bench-eval-cpu{'-quick' if q else ''}.json")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    print(f"eval device {jax.devices('cpu')[0]} (default backend {jax.default_backend()}), "
          f"jax {jax.__version__}; {args.policies} policies x {args.episodes} episodes x "
          f"{args.max_steps} steps of {args.env}, actor {args.hidden}, {args.repeats} repeats", flush=True)
    result = run(args)
    atomic_write_bytes(args.out, (json.dumps(result, indent=2, default=str) + "\n").encode())
    s = result["seconds"]
    print(f"compile s: {result['compile_s']}")
    for k in ("batched", "serial", "env", "make"):
        rate = f", {result['env_steps_per_s'][k]:.4g} env steps/s" if k != "make" else ""
        print(f"{k:8s} median {s[k]['median']:.4g} s [{s[k]['min']:.4g}–{s[k]['max']:.4g}]{rate}")
    print(f"serial/batched {result['ratio_serial_over_batched']:.3g}x; identical returns: "
          f"{result['identical_returns']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
