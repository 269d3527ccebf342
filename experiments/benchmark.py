"""mopo_jax speed benchmark (synthetic data: speed only). Runs unchanged on CPU, GPU or TPU.

    python experiments/benchmark.py [--env hopper] [--only a,b,c] [--repeats 5] [--num-seeds 1,2,4]
    python experiments/benchmark.py --quick          # tiny sizes, 2 repeats: a smoke test of the tool

Parts (each: warm-up call first, compile time separately, median/min/max of --repeats timed calls,
jax.block_until_ready around every timed call):
  a  dynamics fit: `dynamics.fit` with max_epochs=1 (compile; seconds per call incl. setup, shuffle
     and holdout; gradient steps/s) and a bare lax.scan of the real 7-member x batch-256 step
     (minibatch gather + loss/grad + Adam): steady-state gradient steps/s and GFLOP/s.
  b  one model rollout of rollout_batch_size x h (`make_rollout_fn`): compile, s/rollout, GFLOP/s.
  c  one jitted epoch `run_epochs(state, data, model, 1)` = one rollout + buffer add + steps_per_epoch
     SAC updates, single seed: SAC steps/s with rollouts; plus the SAC updates alone (lax.scan).
  d  the CLI's jit(vmap(epoch)) for each of --num-seeds: aggregate and per-seed SAC steps/s, TrainState
     bytes per seed, XLA's program memory estimate, peak device memory where memory_stats() exists
     (the process's peak so far: seed counts run in the order given, so list them ascending).
  e  a whole CLI epoch, each part timed: jitted epoch, metrics to host, checkpoint save
     (checkpoint.save_pytree), one evaluate_policy batch on the real env; per-epoch total with the
     driver's own schedule (mopo.schedule: a fetch and at most one checkpoint per compiled chunk,
     an evaluation at each epoch `evaluates_at` names).
  f  a straightforward baseline of the policy phase in the same run: SAC updates dispatched one
     jitted step at a time from Python, the rollout as h jitted one-step calls whose rows are
     concatenated onto the model buffer (a full copy each step); speedup = baseline time / ours.
     (f needs c's measurements and runs c when it is not selected.)
FLOPs: XLA's compiled.cost_analysis() of one unit (one gradient step, one model step, one SAC step)
where available, else an analytic matmul count; every GFLOP/s figure says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

from bench_common import (ENVS, Bench, compile_timed, device_memory, flops_of, json_config,
                          machine_info, program_bytes, record, time_calls, tree_bytes, write_outputs)
from mopo_jax import checkpoint
from mopo_jax.dynamics import batches, losses
from mopo_jax.dynamics import fit as dyn_fit
from mopo_jax.dynamics import model as model_mod
from mopo_jax.buffer import ModelBuffer, buffer_add
from mopo_jax.envs.catalog import ENVS as ENV_INFO
from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.mopo.rollout import PENALTIES, make_rollout_fn
from mopo_jax.mopo.schedule import chunk_sizes, evaluates_at
from mopo_jax.sac.update import init_sac

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def part_a(b: Bench) -> dict:
    dyn = dataclasses.replace(b.config.dynamics, max_epochs=1)
    fit = jax.jit(dyn_fit.fit, static_argnames=("config",))
    compiled, compile_s = compile_timed(fit, b.key, b.data, config=dyn)
    n_train = b.rows - batches.num_holdout_rows(b.rows, dyn)
    steps = math.ceil(n_train / dyn.batch_size)
    (_, report), times = time_calls(lambda _: compiled(b.key, b.data), None, b.repeats)
    assert int(report.epochs) == 1
    out = {"fit": record(f"dyn_fit.fit, 1 epoch of {b.rows} rows ({steps} steps)", times,
                         compile_s=compile_s, work=steps, unit="grad steps",
                         note="incl. setup, shuffle, holdout eval")}

    loss = functools.partial(losses.gaussian_nll_loss, activation=dyn.activation,
                             hidden_weight_decays=dyn.hidden_weight_decays,
                             head_weight_decay=dyn.head_weight_decay,
                             logvar_bound_coef=dyn.logvar_bound_coef)
    opt = optax.adam(dyn.learning_rate)
    x, y = batches.make_targets(b.data)

    def grad_step(carry, idx):  # the fit's inner step: gather minibatches, loss/grad, Adam
        trainable, opt_state = carry
        grads = jax.grad(loss)(trainable, x[idx], y[idx], None)
        updates, opt_state = opt.update(grads, opt_state, trainable)
        return (optax.apply_updates(trainable, updates), opt_state), None

    net = model_mod.init_ensemble_params(b.key, dyn.num_members, x.shape[1], y.shape[1],
                                        dyn.hidden_sizes)
    trainable = {"net": net, "max_logvar": jnp.full(y.shape[1], dyn.max_logvar_init),
                 "min_logvar": jnp.full(y.shape[1], dyn.min_logvar_init)}
    carry = (trainable, opt.init(trainable))
    n_scan = min(steps, 100)
    idx = jax.random.randint(b.key, (n_scan, dyn.num_members, dyn.batch_size), 0, b.rows)
    flops = flops_of(jax.jit(grad_step).lower(carry, idx[0]), b.flops["dynamics_step"], n_scan)
    scan = jax.jit(lambda c, i: jax.lax.scan(grad_step, c, i)[0])
    compiled, compile_s = compile_timed(scan, carry, idx)
    _, times = time_calls(lambda c: compiled(c, idx), carry, b.repeats)
    out["step"] = record(f"bare scan of {n_scan} steps, {dyn.num_members} members x batch "
                         f"{dyn.batch_size}", times, compile_s=compile_s, work=n_scan,
                         unit="grad steps", flops=flops)
    return out


def part_b(b: Bench) -> dict:
    cfg = b.config
    fn = make_rollout_fn(b.policy_apply, b.termination, cfg.rollout_length, cfg.penalty)
    args = (b.key, b.model, b.actor, b.starts(b.key), jnp.float32(cfg.penalty_coef))
    compiled, compile_s = compile_timed(fn, *args)
    _, times = time_calls(lambda _: compiled(*args), None, b.repeats)
    flops = b.unit_flops("rollout_step", cfg.rollout_length)
    return {"rollout": record(f"rollout {cfg.rollout_batch_size} x h={cfg.rollout_length}, "
                              f"{cfg.dynamics.num_members} members", times, compile_s=compile_s,
                              work=1, unit="rollouts", flops=flops)}


def part_c(b: Bench) -> dict:
    cfg, fns = b.config, b.fns
    state = jax.jit(fns.init)(b.key)
    compiled, compile_s = compile_timed(fns.run_epochs, state, b.data, b.model, 1)
    (_, metrics), times = time_calls(lambda c: compiled(c[0], b.data, b.model), (state, None),
                                     b.repeats)  # run_epochs donates the state: carry the new one
    roll = b.unit_flops("rollout_step", cfg.rollout_length)
    sac = b.unit_flops("sac_step", cfg.steps_per_epoch)
    epoch_flops = {"flops": roll["flops"] + sac["flops"], "analytic": roll["analytic"] + sac["analytic"],
                   "source": roll["source"] if roll["source"] == sac["source"] else "mixed"}
    valid = float(metrics["rollout_valid_fraction"][-1])
    out = {"epoch": record(f"epoch: rollout + {cfg.steps_per_epoch} SAC steps, 1 seed", times,
                           compile_s=compile_s, work=cfg.steps_per_epoch, unit="SAC steps",
                           flops=epoch_flops, rollout_valid_fraction=valid,
                           note=f"{valid:.0%} of rollout rows valid")}

    step = b.sac_step()

    def sac_scan(sac, buffer, data, key):
        sac, infos = jax.lax.scan(lambda s, k: step(s, buffer, data, k), sac,
                                  jax.random.split(key, cfg.steps_per_epoch))
        return sac, jax.tree.map(jnp.mean, infos)

    buffer, sac0 = b.full_buffer(), init_sac(b.key, b.obs_dim, b.act_dim, cfg.sac)  # `state` was donated
    compiled, compile_s = compile_timed(jax.jit(sac_scan), sac0, buffer, b.data, b.key)
    _, times = time_calls(lambda s: compiled(s, buffer, b.data, b.key)[0], sac0, b.repeats)
    out["sac_only"] = record(f"{cfg.steps_per_epoch} SAC steps in one lax.scan (no rollout)", times,
                             compile_s=compile_s, work=cfg.steps_per_epoch, unit="SAC steps", flops=sac)
    return out


def cli_epoch(b: Bench):
    """The CLI's compiled chunk of one epoch on one device: vmap over seeds of run_epochs(., 1) with
    data shared and one ensemble per seed (its default), state donated."""
    return b.cached("cli_epoch", lambda: jax.jit(jax.vmap(
        lambda s, d, m: b.fns.run_epochs(s, d, m, 1), in_axes=(0, None, 0)), donate_argnums=0))


def cli_inputs(b: Bench, n: int):
    """(fresh TrainState [n], n stacked copies of the model)."""
    state = jax.jit(jax.vmap(b.fns.init))(jax.random.split(b.key, n))
    return state, jax.tree.map(lambda x: jnp.stack([x] * n), b.model)


def part_d(b: Bench) -> dict:
    out, spe = {}, b.config.steps_per_epoch
    for n in b.args.num_seeds:
        state, models = cli_inputs(b, n)
        per_seed = tree_bytes(state) // n
        compiled, compile_s = compile_timed(cli_epoch(b), state, b.data, models)
        b.cache.setdefault(("cli_compiled", n), (compiled, compile_s))
        _, times = time_calls(lambda c: compiled(c[0], b.data, models), (state, None), b.repeats)
        med, prog = statistics.median(times), program_bytes(compiled)
        out[f"seeds_{n}"] = record(
            f"{n} seed(s) vmapped, 1 epoch each", times, compile_s=compile_s, work=n * spe,
            unit="SAC steps", num_seeds=n, per_seed_steps_per_s=spe / med,
            state_bytes_per_seed=per_seed,
            program_bytes_per_seed=prog // n if prog else None, device_memory=device_memory(),
            note=f"{spe / med:.4g} steps/s per seed; state {per_seed / 2**20:.1f} MiB/seed")
    return out


def part_e(b: Bench) -> dict:
    cfg = b.config
    state, models = cli_inputs(b, 1)
    compiled, compile_s = b.cache.get(("cli_compiled", 1)) or compile_timed(
        cli_epoch(b), state, b.data, models)
    env_id, parts = ENV_INFO[b.env].env_id, {"epoch": [], "fetch": [], "checkpoint": [], "eval": []}
    meta = {"config": json_config(cfg)}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "checkpoint")
        for i in range(1 + b.repeats):  # the first round is the warm-up
            t0 = time.perf_counter()
            state, metrics = jax.block_until_ready(compiled(state, b.data, models))
            t1 = time.perf_counter()
            metrics = jax.device_get(metrics)
            t2 = time.perf_counter()
            checkpoint.save_pytree(prefix, state.replace(key=jax.random.key_data(state.key)), meta)
            t3 = time.perf_counter()
            actor = jax.tree.map(lambda x: x[0], state.sac.actor_params)
            evaluate_policy(actor, env_id, cfg.eval_episodes, seed=10_000)
            t4 = time.perf_counter()
            if i:
                for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    parts[name].append(dt)
        ckpt_bytes = os.path.getsize(checkpoint.msgpack_path(prefix))
    every, chunks = cfg.eval_every, len(chunk_sizes(cfg))  # the driver's schedule, not a copy
    evals = sum(evaluates_at(cfg, epoch) for epoch in range(1, cfg.epochs + 1))
    totals = [e + ((f + c) * chunks + v * evals) / cfg.epochs for e, f, c, v in zip(*parts.values())]
    return {
        "epoch": record("jitted epoch (CLI chunk, 1 seed)", parts["epoch"], compile_s=compile_s,
                        work=cfg.steps_per_epoch, unit="SAC steps"),
        "fetch": record("metrics to host (device_get)", parts["fetch"]),
        "checkpoint": record("checkpoint save_pytree (fsync)", parts["checkpoint"],
                             checkpoint_bytes=ckpt_bytes, note=f"{ckpt_bytes / 2**20:.1f} MiB"),
        "eval": record(f"evaluate_policy {cfg.eval_episodes} episode(s) of {env_id}", parts["eval"],
                       note="episode length depends on the (untrained) policy"),
        "total": record(f"per epoch, CLI schedule (fetch+ckpt per chunk, eval every {every})", totals,
                        work=cfg.steps_per_epoch, unit="SAC steps", eval_every=every),
    }


def part_f(b: Bench) -> dict:
    cfg, ours = b.config, b.parts.get("c") or part_c(b)
    b.parts["c"] = ours
    roll1, step = b.unit("rollout_step").compile(), b.unit("sac_step").compile()
    h, coef, spe = cfg.rollout_length, jnp.float32(cfg.penalty_coef), cfg.steps_per_epoch
    sac = init_sac(b.key, b.obs_dim, b.act_dim, cfg.sac)
    buffer = b.full_buffer()
    phases = {"rollout": [], "sac": []}

    def naive_epoch(carry):  # eager glue around jitted units, as a direct port would be written
        sac, buf, key = carry
        key, start_key, roll_key, sac_key = jax.random.split(key, 4)
        t0 = time.perf_counter()
        obs = b.starts(start_key)
        alive = jnp.ones(obs.shape[0], bool)
        for _ in range(h):
            roll_key, k = jax.random.split(roll_key)
            out = roll1(k, b.model, sac.actor_params, obs, coef)
            rows, _ = out.transitions()  # every row is appended (static shapes), dead ones too
            buf = jax.tree.map(lambda old, new: jnp.concatenate([old, new])[new.shape[0]:], buf, rows)
            alive = alive & ~out.done[0]
            obs = jnp.where(alive[:, None], out.next_obs[0], obs)
        jax.block_until_ready(buf)
        t1 = time.perf_counter()
        model_buffer = ModelBuffer(data=buf, pointer=buffer.pointer, count=buffer.count)
        for _ in range(spe):
            sac_key, k = jax.random.split(sac_key)
            sac, _ = step(sac, model_buffer, b.data, k)
        jax.block_until_ready(sac)
        phases["rollout"].append(t1 - t0)
        phases["sac"].append(time.perf_counter() - t1)
        return sac, buf, key

    first = time.perf_counter()
    carry = jax.block_until_ready(naive_epoch((sac, buffer.data, b.key)))
    first = time.perf_counter() - first
    for runs in phases.values():
        runs.clear()  # drop the warm-up epoch
    _, times = time_calls(naive_epoch, carry, b.repeats, warmup=0)

    def ours_rollout_add(key, actor, starts, buf):
        rows, valid = make_rollout_fn(b.policy_apply, b.termination, h, cfg.penalty)(
            key, b.model, actor, starts, coef).transitions()
        return buffer_add(buf, rows, valid)
    starts = b.starts(b.key)
    compiled, compile_s = compile_timed(jax.jit(ours_rollout_add), b.key, sac.actor_params, starts, buffer)
    _, ours_roll = time_calls(lambda _: compiled(b.key, sac.actor_params, starts, buffer), None, b.repeats)
    out = {
        "epoch": record(f"baseline epoch: {h} dispatched model steps + concat, {spe} dispatched "
                        "SAC steps", times, work=spe, unit="SAC steps", first_call_s=first),
        "rollout": record(f"baseline rollout: {h} jitted steps + full-copy concat", phases["rollout"],
                          work=1, unit="rollouts"),
        "sac": record(f"baseline {spe} SAC steps, one dispatch each", phases["sac"], work=spe,
                      unit="SAC steps"),
        "ours_rollout": record("ours: jitted rollout + buffer_add (scatter)", ours_roll,
                               compile_s=compile_s, work=1, unit="rollouts"),
    }
    med = lambda r: r["seconds"]["median"]  # noqa: E731
    out["speedup"] = {"epoch": med(out["epoch"]) / med(ours["epoch"]),
                      "sac": med(out["sac"]) / med(ours["sac_only"]),
                      "rollout": med(out["rollout"]) / med(out["ours_rollout"])}
    out["epoch"]["note"] = "speedup ours/baseline: " + ", ".join(
        f"{k} {v:.2f}x" for k, v in out["speedup"].items())
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=sorted(ENVS), default="hopper",
                   help="dataset shapes: obs/act 11/3, 17/6, 17/6, 27/8 (Ant as mopo_jax makes it)")
    p.add_argument("--level", default="random", help="dataset level for the (h, λ) preset")
    p.add_argument("--only", default="a,b,c,d,e,f", help="comma-separated parts to run")
    p.add_argument("--repeats", type=int, help="timed repeats per measurement (default 5; quick 2)")
    p.add_argument("--num-seeds", default=None, help="seed counts for part d (default 1,2,4; quick 1,2)")
    p.add_argument("--rollout-batch-size", type=int, help="rollout start states (preset 50000)")
    p.add_argument("--steps-per-epoch", type=int, help="SAC updates per epoch (preset 1000)")
    p.add_argument("--horizon", type=int, help="rollout length h (default: the dataset preset)")
    p.add_argument("--penalty", choices=list(PENALTIES),
                   help="uncertainty penalty (default max_std; max_std and disagreement run all "
                        "members, the *_elites* ones only the elites)")
    p.add_argument("--dynamics-rows", type=int, help="synthetic transitions (default 100000; quick 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (smoke test)")
    p.add_argument("--out", help="JSON path (default experiments/results/benchmark-<platform>-<env>.json)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.num_seeds = [int(s) for s in (args.num_seeds or ("1,2" if args.quick else "1,2,4")).split(",")]
    parts = [s.strip() for s in args.only.split(",") if s.strip()]
    if bad := [s for s in parts if s not in "abcdef" or len(s) != 1]:
        p.error(f"unknown parts {bad}; choose from a,b,c,d,e,f")
    b = Bench(args)
    out = args.out or os.path.join(RESULTS, f"benchmark-{jax.default_backend()}-{args.env}"
                                   f"{'-quick' if args.quick else ''}.json")
    cfg = b.config
    bench = {"env": args.env, "dataset": cfg.dataset, "obs_dim": b.obs_dim, "act_dim": b.act_dim,
             "rollout_batch_size": cfg.rollout_batch_size, "horizon": cfg.rollout_length,
             "steps_per_epoch": cfg.steps_per_epoch, "penalty": cfg.penalty, "dynamics_rows": b.rows, "repeats": args.repeats,
             "num_seeds": args.num_seeds, "quick": args.quick, "parts": parts}
    print(f"{jax.default_backend()} / {jax.devices()[0].device_kind}, jax {jax.__version__}: {bench}",
          flush=True)
    for name in "abcdef":
        if name in parts:
            start = time.perf_counter()
            b.parts[name] = globals()[f"part_{name}"](b)
            print(f"part {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    result = {"machine": machine_info(), "bench": bench, "config": json_config(cfg),
              "parts": {k: b.parts[k] for k in "abcdef" if k in b.parts}}
    md_path, table = write_outputs(result, out)
    print(table)
    print(f"wrote {out} and {md_path}")


if __name__ == "__main__":
    main()
