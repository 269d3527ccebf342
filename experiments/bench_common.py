"""Helpers of experiments/benchmark.py: synthetic data/model, timing, FLOP counts, machine info, output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import jaxlib

from mopo_jax.buffer import ModelBuffer, sample_mixed_batch, sample_rows
from mopo_jax.files import atomic_write_bytes
from mopo_jax.mopo.config import preset, tiny
from mopo_jax.dynamics.model import EnsembleModel, init_ensemble_params
from mopo_jax.mopo.train import make_train
from mopo_jax.mopo.rollout import make_rollout_fn
from mopo_jax.sac.update import init_sac, make_sac_update
from mopo_jax.sac.policy import make_policy_apply
from mopo_jax.envs.termination import termination_fn
from mopo_jax.types import Transitions

# env -> (obs_dim, act_dim, healthy value of obs[0]); Ant as mopo_jax.envs.make.make_env makes it
# (MOPO's layout: qpos[2:] + qvel, no contact forces) has 27 entries.
ENVS = {"hopper": (11, 3, 1.25), "halfcheetah": (17, 6, 0.0), "walker2d": (17, 6, 1.25),
        "ant": (27, 8, 0.55)}


def synthetic_data(key: jax.Array, rows: int, obs_dim: int, act_dim: int, height: float) -> Transitions:
    """Speed-only transitions: obs ~ 0.1·N(0, 1) with obs[0] near `height`, next_obs ≈ obs."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    obs = 0.1 * jax.random.normal(k1, (rows, obs_dim)) + jnp.zeros(obs_dim).at[0].set(height)
    act = jax.random.uniform(k2, (rows, act_dim), minval=-1, maxval=1)
    next_obs = obs + 0.01 * jax.random.normal(k4, (rows, obs_dim))
    return Transitions(obs, act, jax.random.normal(k3, (rows,)), next_obs, jnp.zeros(rows))


def synthetic_model(key: jax.Array, dyn, obs_dim: int, act_dim: int) -> EnsembleModel:
    """A freshly initialised ensemble of `dyn`'s size whose rollouts mostly stay alive.

    Mean head zeroed (predicted Δobs = 0) and log-variance capped at -8 (σ ≤ 0.02): the same FLOPs
    as a fitted model, but rows keep a healthy height so the termination rule rarely fires.
    """
    params = init_ensemble_params(key, dyn.num_members, obs_dim + act_dim, obs_dim + 1,
                                  dyn.hidden_sizes)
    params["mean_head"] = jax.tree.map(jnp.zeros_like, params["mean_head"])
    return EnsembleModel(params=params, max_logvar=jnp.full(obs_dim + 1, -8.0),
                         min_logvar=jnp.full(obs_dim + 1, -10.0),
                         input_mean=jnp.zeros(obs_dim + act_dim), input_std=jnp.ones(obs_dim + act_dim),
                         elite_idx=jnp.arange(dyn.num_elites, dtype=jnp.int32), activation=dyn.activation)


# --- shared inputs ----------------------------------------------------------------------------

class Bench:
    """Shared inputs of all parts plus a cache of compiled units reused across parts."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.repeats, self.env = args, args.repeats, args.env
        self.obs_dim, self.act_dim, height = ENVS[args.env]
        overrides = {k: v for k, v in (("rollout_batch_size", args.rollout_batch_size),
                                       ("steps_per_epoch", args.steps_per_epoch),
                                       ("rollout_length", args.horizon),
                                       ("penalty", args.penalty)) if v is not None}
        dataset = f"{args.env}-{args.level}"
        self.config = (tiny(dataset, **overrides) if args.quick else preset(dataset, **overrides))
        self.rows = args.dynamics_rows or (2_000 if args.quick else 100_000)
        keys = jax.random.split(jax.random.key(args.seed), 4)
        self.key = keys[3]
        self.data = jax.block_until_ready(
            synthetic_data(keys[0], self.rows, self.obs_dim, self.act_dim, height))
        self.model = synthetic_model(keys[1], self.config.dynamics, self.obs_dim, self.act_dim)
        self.actor = init_sac(keys[2], self.obs_dim, self.act_dim, self.config.sac).actor_params
        self.flops = analytic(self.config, self.obs_dim, self.act_dim)
        self.fns = make_train(self.config, self.data, self.model)
        self.policy_apply = make_policy_apply(self.config.sac)
        self.termination = termination_fn(self.config.dataset)
        self.cache: dict = {}
        self.parts: dict = {}

    def cached(self, name, build):
        if name not in self.cache:
            self.cache[name] = build()
        return self.cache[name]

    def starts(self, key):
        return sample_rows(self.data, key, self.config.rollout_batch_size, self.rows).observations

    def full_buffer(self) -> ModelBuffer:
        """A model buffer filled to capacity (steady state after model_retain_epochs epochs)."""
        cap = self.config.buffer_capacity
        return self.cached("full_buffer", lambda: ModelBuffer(
            data=jax.jit(sample_rows, static_argnums=(2, 3))(self.data, self.key, cap, self.rows),
            pointer=jnp.zeros((), jnp.int32), count=jnp.full((), cap, jnp.int32)))

    def sac_step(self):
        """step(sac, buffer, data, key): sample a mixed batch + one SAC update, as in the epoch."""
        update, cfg = make_sac_update(self.config.sac), self.config

        def step(sac, buffer, data, key):
            batch_key, update_key = jax.random.split(key)
            batch = sample_mixed_batch(data, buffer, batch_key, cfg.sac.batch_size, cfg.real_ratio)
            return update(sac, batch, update_key)
        return step

    def unit(self, name: str):
        """Lowered single unit: 'rollout_step' (a horizon-1 rollout) or 'sac_step'; the FLOP unit
        of parts b/c and, compiled, the jitted step the baseline (f) dispatches."""
        def build():
            if name == "rollout_step":
                fn = make_rollout_fn(self.policy_apply, self.termination, 1, self.config.penalty)
                return fn.lower(self.key, self.model, self.actor, self.starts(self.key), jnp.float32(1.0))
            sac = init_sac(self.key, self.obs_dim, self.act_dim, self.config.sac)
            return jax.jit(self.sac_step()).lower(sac, self.full_buffer(), self.data, self.key)
        return self.cached(name, build)

    def unit_flops(self, name: str, times: float) -> dict:
        return flops_of(self.unit(name), self.flops[name], times)


def json_config(config) -> dict:
    return dataclasses.asdict(config) | {"buffer_capacity": config.buffer_capacity}


# --- timing -----------------------------------------------------------------------------------

def compile_timed(jitted, *args, **static):
    """(compiled, seconds of trace + lower + compile)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    return compiled, time.perf_counter() - start


def time_calls(step, carry, repeats: int, warmup: int = 1):
    """carry = step(carry), `warmup` times untimed, then `repeats` times timed; each call blocked on."""
    for _ in range(warmup):
        carry = jax.block_until_ready(step(carry))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        carry = jax.block_until_ready(step(carry))
        times.append(time.perf_counter() - start)
    return carry, times


def stats(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": list(times)}


def record(label: str, times: list[float], *, compile_s: float | None = None, work: float = 0,
           unit: str = "", flops: dict | None = None, **extra) -> dict:
    """One measurement: seconds per call (median/min/max), optional throughput and GFLOP/s.

    work: units of `unit` done per call (e.g. 1000 SAC steps); flops: a `flops_of` dict for one
    call. Throughput min/max come from the slowest/fastest call.
    """
    med = statistics.median(times)
    out = {"label": label, "seconds": stats(times)}
    if compile_s is not None:
        out["compile_s"] = compile_s
    if work:
        out.update(work=work, unit=unit, rate={"median": work / med, "min": work / max(times),
                                               "max": work / min(times)})
    if flops:
        out.update(gflop_per_call=flops["flops"] / 1e9, gflop_per_s=flops["flops"] / med / 1e9,
                   flops_source=flops["source"], gflop_analytic_per_call=flops["analytic"] / 1e9)
    out.update(extra)
    return out


# --- FLOPs ------------------------------------------------------------------------------------

def flops_of(compiled, analytic: float, times: float = 1.0) -> dict:
    """FLOPs of `times` calls of one compiled *unit* (XLA cost_analysis, else the analytic count).

    Measure a single step, never a scan: XLA's cost analysis counts a while/scan body once,
    whatever its trip count.
    """
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla = float(cost.get("flops", 0.0))
    except Exception:  # some backends/versions do not implement it
        xla = 0.0
    ok = math.isfinite(xla) and xla > 0
    out = {"flops": times * (xla if ok else analytic), "source": "xla" if ok else "analytic",
           "analytic": times * analytic}
    if ok:
        out["xla"] = times * xla
    return out


def mlp_flops(sizes) -> int:
    """Multiply-add FLOPs (2·in·out per layer) of one row through an MLP with layer sizes `sizes`."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def analytic(config, obs_dim: int, act_dim: int) -> dict:
    """Matmul FLOPs per unit (activations, Adam, gathers not counted; backward = 2× forward)."""
    dyn, sac = config.dynamics, config.sac
    model_row = mlp_flops((obs_dim + act_dim, *dyn.hidden_sizes, 2 * (obs_dim + 1)))
    actor_row = mlp_flops((obs_dim, *sac.hidden_sizes, 2 * act_dim))
    q_row = sac.num_critics * mlp_flops((obs_dim + act_dim, *sac.hidden_sizes, 1))
    return {
        "dynamics_step": 3.0 * dyn.num_members * dyn.batch_size * model_row,
        "rollout_step": config.rollout_batch_size * (dyn.num_members * model_row + actor_row),
        # target (actor + Q fwd), critic fwd+bwd, actor fwd+bwd through the critics
        "sac_step": sac.batch_size * (4.0 * actor_row + 7.0 * q_row),
    }


# --- memory -----------------------------------------------------------------------------------

def tree_bytes(tree) -> int:
    """Bytes of all array leaves (PRNG keys counted as their raw key data)."""
    def nbytes(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return x.size * x.dtype.itemsize
    return int(sum(nbytes(x) for x in jax.tree.leaves(tree)))


def program_bytes(compiled) -> int | None:
    """XLA's memory estimate of a compiled program: arguments + outputs + temporaries − aliased."""
    try:
        m = compiled.memory_analysis()
        total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes)
        return int(total) if total > 0 else None
    except Exception:
        return None


def device_memory() -> dict:
    """Peak/current bytes from device.memory_stats() (None where the backend has none, e.g. CPU)."""
    try:
        ms = jax.devices()[0].memory_stats() or {}
    except Exception:
        ms = {}
    return {"peak_bytes_in_use": ms.get("peak_bytes_in_use") or None,
            "bytes_in_use": ms.get("bytes_in_use") or None}


# --- output -----------------------------------------------------------------------------------

def machine_info() -> dict:
    dev = jax.devices()[0]
    return {"platform": jax.default_backend(), "device_kind": dev.device_kind,
            "device_count": jax.device_count(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else None, "python": platform.python_version(),
            "host": platform.node(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "jax_disable_most_optimizations": bool(jax.config.read("jax_disable_most_optimizations")),
            "argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}



def _fmt(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def markdown(result: dict) -> str:
    """The results as a markdown report: machine, config summary, one table row per measurement."""
    m, c = result["machine"], result["bench"]
    lines = [f"# mopo_jax benchmark — {c['env']} ({c['dataset']}), {m['platform']} / {m['device_kind']}",
             "", f"jax {m['jax']}, jaxlib {m['jaxlib']}, {m['cpu_count']} CPUs, {m['time']}; "
             f"`{' '.join(m['argv'])}`", "",
             f"obs {c['obs_dim']}, act {c['act_dim']}; rollout {c['rollout_batch_size']} x h={c['horizon']}, "
             f"{c['steps_per_epoch']} SAC steps/epoch, dynamics rows {c['dynamics_rows']}, "
             f"{c['repeats']} repeats (median [min–max]); full config in the JSON.", "",
             "| part | measurement | compile s | s/call median [min–max] | throughput (median) "
             "| GFLOP/s | notes |", "|---|---|---|---|---|---|---|"]
    for part, entries in result["parts"].items():
        for entry in entries.values():
            if not isinstance(entry, dict) or "seconds" not in entry:
                continue
            s = entry["seconds"]
            rate = f"{entry['rate']['median']:.4g} {entry['unit']}/s" if "rate" in entry else ""
            gf = (f"{entry['gflop_per_s']:.3g} ({entry['flops_source']})"
                  if "gflop_per_s" in entry else "")
            lines.append(f"| {part} | {entry['label']} | {_fmt(entry.get('compile_s'))} | "
                         f"{s['median']:.4g} [{s['min']:.4g}–{s['max']:.4g}] | {rate} | {gf} | "
                         f"{entry.get('note', '')} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out: str) -> tuple[str, str]:
    md_path = os.path.splitext(out)[0] + ".md"
    atomic_write_bytes(out, (json.dumps(result, indent=2, default=str) + "\n").encode())
    table = markdown(result)
    atomic_write_bytes(md_path, table.encode())
    return md_path, table
