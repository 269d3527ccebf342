"""Online SAC on a real Gymnasium env: behaviour-policy snapshots plus the full transition history."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mopo_jax import checkpoint, rundir
from mopo_jax.behavior import run_files
from mopo_jax.behavior.artifacts import HISTORY_FIELDS, empty_history, load_history
from mopo_jax.behavior.config import (BehaviorConfig, config_to_dict, eval_seed, reset_seed,
                                     stop_step)
from mopo_jax.buffer import ModelBuffer, buffer_add, buffer_init, buffer_sample
from mopo_jax.envs.catalog import HALFCHEETAH_VEL3
from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.envs.extras import INFO_KEY, RecordStepExtras, position_dim
from mopo_jax.envs.make import make_env
from mopo_jax.envs.ood import CHEETAH_MAX_VEL
from mopo_jax.envs.ood_env import CappedVelocityRewardWrapper
from mopo_jax.run_layout import CONFIG_FILE, EVALS_FILE, SNAPSHOTS
from mopo_jax.sac.policy import sample_action
from mopo_jax.sac.update import SACState, init_sac, make_sac_update
from mopo_jax.types import Transitions


def make_behavior_env(config: BehaviorConfig, for_eval: bool = False):
    """The training env (for_eval: with the env's own time limit), made by
    `mopo_jax.envs.make.make_env` (27-dim Ant observations) and recording each step's extras
    (`RecordStepExtras`: info["step_extras"], stored in the history), its reward replaced when
    config.reward asks; ValueError for an unknown id or a non-[-1, 1] Box action space."""
    import gymnasium as gym

    try:
        gym.spec(config.env_id)
        env = make_env(config.env_id, max_episode_steps=None if for_eval else config.max_episode_steps)
    except gym.error.Error as err:
        raise ValueError(f"unknown or unusable env id {config.env_id!r}: {err}") from err
    env = RecordStepExtras(env)
    if config.reward == HALFCHEETAH_VEL3:
        env = CappedVelocityRewardWrapper(env, max_velocity=CHEETAH_MAX_VEL)
    space = env.action_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1
            and np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        raise ValueError(f"{config.env_id}: need a 1-D Box action space on [-1, 1], got {space}")
    if len(env.observation_space.shape) != 1:
        raise ValueError(f"{config.env_id}: need a flat observation space")
    return env


class BehaviorState(flax.struct.PyTreeNode):
    """Device state carried between chunks (the replay buffer travels separately)."""

    sac: SACState
    key: jax.Array  # typed PRNG key for SAC batches/updates


def _root_keys(config: BehaviorConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(SAC init key, update-stream key, action key) derived from config.seed."""
    return tuple(jax.random.split(jax.random.key(config.seed), 3))


def init_state(config: BehaviorConfig, obs_dim: int, act_dim: int) -> BehaviorState:
    """Fresh state from config.seed (init_sac jitted: run eagerly it compiles dozens of tiny ops)."""
    sac_key, key, _ = _root_keys(config)
    sac = jax.jit(init_sac, static_argnums=(1, 2, 3))(sac_key, obs_dim, act_dim, config.sac)
    return BehaviorState(sac=sac, key=key)


def make_act_fn(config: BehaviorConfig):
    """`act(actor_params, obs [o], key, t) -> action [a]`: uniform on [-1, 1] while t < start_steps,
    else a stochastic policy sample; the key used is fold_in(key, t), so env step t always gets the
    same randomness (also after a resume)."""

    def act(actor_params, obs, key, t):
        key = jax.random.fold_in(key, t)
        policy = sample_action(actor_params, obs[None].astype(jnp.float32), key, config.sac)[0]
        uniform = jax.random.uniform(key, policy.shape, policy.dtype, -1.0, 1.0)
        return jnp.where(t < config.start_steps, uniform, policy)

    return act


def make_chunk_fn(config: BehaviorConfig):
    """Pure `chunk(state, buffer, rows, valid, num_updates) -> (state, buffer, info)`.

    rows: Transitions [update_every] (the chunk's env steps, padded); valid: [update_every] bool;
    num_updates: [] int32 ≤ update_every. Appends the valid rows to the buffer, then runs
    `num_updates` SAC updates (lax.scan over update_every, the rest skipped by lax.cond) on
    batches drawn uniformly from the buffer. info: mean of each SAC diagnostic over the updates run.
    """
    update = make_sac_update(config.sac)
    n = config.update_every

    def chunk(state: BehaviorState, buffer: ModelBuffer, rows: Transitions, valid, num_updates):
        buffer = buffer_add(buffer, rows, valid)
        key, scan_key = jax.random.split(state.key)

        def do_update(sac, step_key):
            batch_key, update_key = jax.random.split(step_key)
            return update(sac, buffer_sample(buffer, batch_key, config.sac.batch_size), update_key)

        def step(sac, xs):
            i, step_key = xs
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 jax.eval_shape(do_update, sac, step_key)[1])
            return jax.lax.cond(i < num_updates, do_update, lambda s, _: (s, zeros), sac, step_key)

        sac, infos = jax.lax.scan(step, state.sac, (jnp.arange(n), jax.random.split(scan_key, n)))
        denom = jnp.maximum(num_updates, 1).astype(jnp.float32)
        info = jax.tree.map(lambda x: jnp.sum(x) / denom, infos)
        return BehaviorState(sac=sac, key=key), buffer, info

    return chunk


def _rows(history: dict, start: int, stop: int, pad_to: int) -> tuple[Transitions, np.ndarray]:
    """History rows [start, stop) as float32 Transitions padded to `pad_to` rows, and the valid mask."""
    def pad(x):
        out = np.zeros((pad_to,) + x.shape[1:], np.float32)
        out[: stop - start] = x[start:stop]
        return out

    rows = Transitions(pad(history["observations"]), pad(history["actions"]), pad(history["rewards"]),
                       pad(history["next_observations"]), pad(history["terminations"]))
    return rows, np.arange(pad_to) < stop - start


def _resume(logdir: Path, state, buffer, history):
    """Restore (state, buffer, history rows, step, episodes, wall seconds) from the newest good
    checkpoint generation in `logdir`, or from the old-format pair when there is no generation."""
    disk, saved = run_files.load_state(logdir, checkpoint.keys_to_data(state))
    state = checkpoint.keys_from_data(disk, state)
    step = int(saved["step"])
    for k, v in load_history(logdir, step).items():  # the in-progress episode is cut at `step`
        history[k][:step] = v
    rows, valid = _rows(history, 0, step, step)
    buffer = jax.jit(buffer_add, donate_argnums=0)(buffer, rows, valid)
    run_files.cut_back_to(logdir, step)
    return state, buffer, step, int(saved["episodes"]), float(saved["wall_seconds"])


def _start(config: BehaviorConfig, logdir: Path, resume: bool, obs_dim: int, act_dim: int,
           pos_dim: int, command: str | None):
    """(run metadata, state, buffer, history, step, episodes, wall seconds): fresh from config.seed,
    or restored from the run's checkpoint when `resume` (ValueError for a checkpoint without
    `resume`, or one saved with another config)."""
    saved = run_files.saved_metadata(logdir)
    if saved is not None and not resume:
        raise ValueError(f"{logdir} already holds a run; pass --resume to continue it or use a new --logdir.")
    if saved is not None:
        run_files.check_same_config(logdir, saved, config_to_dict(config))
        if saved.get("obs_dim", obs_dim) != obs_dim:  # e.g. a 105-dim Ant run of earlier versions
            raise ValueError(f"--resume: {logdir} has {saved['obs_dim']}-dim observations, this "
                             f"version's {config.env_id} has {obs_dim}; use a new --logdir.")
    meta = {"config": config_to_dict(config), "command": command,
            "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()}, "
                      f"{os.cpu_count()} host cores)",
            "jax_version": jax.__version__, "obs_dim": obs_dim, "act_dim": act_dim}
    state = init_state(config, obs_dim, act_dim)
    buffer = jax.jit(buffer_init, static_argnums=(0, 1, 2))(config.total_steps, obs_dim, act_dim)
    history = empty_history(config.total_steps, obs_dim, act_dim, pos_dim)
    if saved is not None:
        state, buffer, step, episodes, wall = _resume(logdir, state, buffer, history)
    else:
        step, episodes, wall = 0, 0, 0.0
        rundir.write_text_atomic(logdir / EVALS_FILE, "")
        for stale in (logdir / SNAPSHOTS).glob("step_*"):  # of a run killed before its checkpoint
            stale.unlink()
    rundir.write_json(logdir / CONFIG_FILE, meta)
    return meta, state, buffer, history, step, episodes, wall


def train_behavior(config: BehaviorConfig, logdir: str | Path, resume: bool = False, *,
                   on_steps: Callable[[int, int], None] | None = None,
                   on_eval: Callable[[dict], None] | None = None,
                   command: str | None = None, stop_at: int | None = None) -> dict:
    """Train SAC online on `config.env_id`, writing into `logdir`; returns a summary dict.

    command: the command line that started the run, as given (recorded in its metadata, snapshots
    and exported policies); None when a program calls this directly. stop_at: stop after the
    evaluation and checkpoint at this env step (`stop_step` checks it; None: total_steps).

    on_steps(step, total) is called after every collected chunk and on_eval(row) with every
    evaluation row (as written to evals.jsonl): progress display is the caller's.

    Loop: collect update_every env steps with the current stochastic policy (uniform random
    actions for the first start_steps), then one jitted call appends them to the device replay
    buffer and runs as many SAC updates (none before first_update_step). Bootstrapping uses
    `terminated` only. Every eval_every steps (and at the end): deterministic evaluation, a line
    in evals.jsonl, an actor snapshot snapshots/step_<N>, history.npz (rows [0, N)) and a
    checkpoint generation (`mopo_jax.rundir`: checkpoints/gen-<K>, the newest two kept), in that
    order. The i-th episode of the history (0-based) was reset with seed `reset_seed(config, i)`,
    also across resumes.

    The run holds `rundir.RunLock(logdir)` (a second process on the same logdir gets RunDirError)
    and first removes temp files of interrupted writes. resume=True continues from the newest good
    checkpoint generation (or, in a logdir written by earlier versions, from the old pair
    checkpoint.{msgpack,json}, replaced by generations from the next checkpoint on): the buffer
    is rebuilt from the history, evals and snapshots after the checkpoint are dropped, and the
    episode that was in progress is abandoned (its last saved row is marked truncated) and a fresh
    one started. Without a checkpoint it starts afresh; a fresh run refuses a logdir that already
    holds a checkpoint.
    """
    logdir = Path(logdir)
    stop = stop_step(config, stop_at)
    env = make_behavior_env(config)
    try:
        with rundir.RunLock(logdir):
            rundir.clean_stale_temp_files(logdir, extra_dirs=(SNAPSHOTS,))
            return _train(config, logdir, resume, env, on_steps or (lambda *_: None),
                          on_eval or (lambda _: None), command, stop)
    finally:
        env.close()


def _collect(config: BehaviorConfig, env, act: Callable, actor_params, act_key: jax.Array,
             history: dict, step: int, end: int, obs: np.ndarray | None,
             episodes: int) -> tuple[np.ndarray | None, int]:
    """Env steps [step, end) with `act` (make_act_fn, jitted) and the actor `actor_params`, written
    into the history rows [step, end) (with each step's extras); `obs` [o] is the current
    observation, None to reset first (with seed reset_seed(config, episodes), counting the episode).
    Returns (obs, episodes) after the last step (obs None when its episode ended)."""
    for t in range(step, end):
        if obs is None:
            obs, _ = env.reset(seed=reset_seed(config, episodes))
            episodes += 1
        action = np.asarray(act(actor_params, obs.astype(np.float32), act_key, np.int32(t)))
        next_obs, reward, terminated, truncated, info = env.step(action)
        for k, v in zip(HISTORY_FIELDS, (obs, action, reward, next_obs, terminated, truncated)):
            history[k][t] = v
        for k, v in info[INFO_KEY].items():
            history[k][t] = v
        obs = next_obs
        if terminated or truncated:
            obs = None
    return obs, episodes


def _train(config: BehaviorConfig, logdir: Path, resume: bool, env, on_steps, on_eval,
           command: str | None, stop: int) -> dict:
    """The body of `train_behavior`, run holding the lock; it stops at env step `stop`."""
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    meta, state, buffer, history, step, episodes, wall = _start(config, logdir, resume, obs_dim,
                                                                act_dim, position_dim(env), command)
    act = jax.jit(make_act_fn(config))
    act_key = _root_keys(config)[2]
    chunk_impl, traces = make_chunk_fn(config), [0]

    def counted_chunk(*args):
        traces[0] += 1  # runs only while tracing
        return chunk_impl(*args)

    chunk = jax.jit(counted_chunk, donate_argnums=(0, 1))
    on_steps(step, stop)
    obs = None  # reset lazily, so `episodes` counts exactly the episodes that have rows
    start_step, call_start = step, time.perf_counter()
    segment_start = interval_start = call_start
    interval_step, evals = step, []
    U, E = config.update_every, config.eval_every
    while step < stop:
        end = min(step + U, (step // E + 1) * E, config.total_steps)
        obs, episodes = _collect(config, env, act, state.sac.actor_params, act_key, history,
                                 step, end, obs, episodes)
        rows, valid = _rows(history, step, end, U)
        num_updates = np.int32(max(0, end - max(step, config.first_update_step)))  # one per new row
        state, buffer, info = chunk(state, buffer, rows, valid, num_updates)
        step = end
        on_steps(step, stop)
        if step % E and step < config.total_steps:
            continue
        info = {k: float(v) for k, v in jax.device_get(info).items()}
        steps_per_s = (step - interval_step) / (time.perf_counter() - interval_start)
        returns = evaluate_policy(state.sac.actor_params,
                                  lambda: make_behavior_env(config, for_eval=True),
                                  config.eval_episodes, seed=eval_seed(config))
        now = time.perf_counter()
        wall += now - segment_start
        segment_start = now
        row = {"step": step, "return_mean": float(returns.mean()), "return_std": float(returns.std()),
               "wall_seconds": round(wall, 3), "steps_per_second": round(steps_per_s, 2),
               "episodes": episodes, "sac_updates": int(state.sac.step), **info}
        evals.append(row)
        run_files.write_eval_outputs(logdir, meta, state, history, row, returns, wall)
        on_eval(row)
        interval_start, interval_step = time.perf_counter(), step
    seconds = time.perf_counter() - call_start
    best = max(evals, key=lambda r: r["return_mean"]) if evals else None
    return {"env_id": config.env_id, "logdir": str(logdir), "steps": step, "episodes": episodes,
            "sac_updates": int(state.sac.step), "evaluations": len(evals),
            "final_return_mean": evals[-1]["return_mean"] if evals else None,
            "best_return_mean": best and best["return_mean"], "best_step": best and best["step"],
            "wall_seconds": wall, "steps_per_second": (step - start_step) / seconds,
            "chunk_traces": traces[0]}
