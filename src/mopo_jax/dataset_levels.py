"""Local recipes for every dataset level: random, policy rollouts, training histories, concatenations,
and the relabelled out-of-distribution tasks.

Where the inputs come from:
  medium / expert    a behaviour policy `<env>-<level>` (msgpack + JSON written by
                     `python -m mopo_jax.behavior export`), looked up first in $MOPO_JAX_POLICY_DIR,
                     then among the policies shipped inside this package (mopo_jax/policies/).
                     1M steps (default) of the policy's stochastic actions, tanh(μ + σ·ε), as
                     D4RL/Minari did; episode i is reset with seed 123 + i.
  medium-expert      the medium dataset followed by the expert one (both built if needed), as D4RL.
  medium-replay      the replay buffer of the behaviour run up to the step at which its medium policy
                     was taken (the policy JSON names that step): the run directory
                     $MOPO_JAX_BEHAVIOR_DIR/<env> (default <cache>/behavior/<env>) must exist.
  halfcheetah-jump   the whole replay buffer of the behaviour run `halfcheetah-vel3` (SAC on
  ant-angle          HalfCheetah with velocity capped at 3) / `ant` (SAC on Ant), relabelled with
                     the target reward (mopo_jax.ood), as in MOPO §5.2.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np

from mopo_jax.dataset_build import (FIRST_RESET_SEED, build_random_dataset, collect_steps,
                                    steps_from_flat, write_minari_dataset)

log = logging.getLogger("mopo_jax.data")

POLICY_DIR_ENV_VAR = "MOPO_JAX_POLICY_DIR"
BEHAVIOR_DIR_ENV_VAR = "MOPO_JAX_BEHAVIOR_DIR"
POLICY_LEVELS = ("medium", "expert")
# OOD dataset name -> behaviour run whose whole history is relabelled.
OOD_SOURCE_RUNS = {"halfcheetah-jump": "halfcheetah-vel3", "ant-angle": "ant"}


class RecipeInputMissing(RuntimeError):
    """A build needs a policy or a behaviour run that is not on this machine (message says how)."""


def _shipped_policy_dir() -> Path:
    return Path(str(resources.files("mopo_jax") / "policies"))


def find_policy(env: str, level: str) -> Path | None:
    """Prefix of the behaviour policy `<env>-<level>` ($MOPO_JAX_POLICY_DIR first, then shipped)."""
    dirs = [Path(p) for p in [os.environ.get(POLICY_DIR_ENV_VAR)] if p] + [_shipped_policy_dir()]
    for d in dirs:
        if (d / f"{env}-{level}.json").exists():
            return d / f"{env}-{level}"
    return None


def shipped_policies() -> list[str]:
    """Names `<env>-<level>` of the policies shipped inside the package."""
    return sorted(p.stem for p in _shipped_policy_dir().glob("*.json"))


def behavior_run_dir(run: str) -> Path:
    """Directory of the behaviour-training run `run` ($MOPO_JAX_BEHAVIOR_DIR or <cache>/behavior)."""
    from mopo_jax.data import cache_dir

    return Path(os.environ.get(BEHAVIOR_DIR_ENV_VAR) or cache_dir() / "behavior") / run


def _train_hint(env_id: str, run: str, extra: str = "") -> str:
    return (f"`python -m mopo_jax.behavior --env {env_id}{extra} --logdir {behavior_run_dir(run)}` "
            f"(1M steps: hours on a CPU, use a GPU if you have one)")


def _policy(env: str, level: str, env_id: str):
    from mopo_jax.behavior_export import load_policy

    prefix = find_policy(env, level)
    if prefix is None:
        raise RecipeInputMissing(
            f"No behaviour policy {env}-{level}: not in ${POLICY_DIR_ENV_VAR} "
            f"({os.environ.get(POLICY_DIR_ENV_VAR) or 'unset'}) and not shipped (shipped: "
            f"{', '.join(shipped_policies()) or 'none yet'}). Train one with "
            f"{_train_hint(env_id, env)}, then `python -m mopo_jax.behavior export --logdir "
            f"{behavior_run_dir(env)} --level {level} --out <dir>/{env}-{level}` and set "
            f"{POLICY_DIR_ENV_VAR}=<dir>.")
    params, meta = load_policy(prefix)
    if meta.get("env_id") != env_id:
        raise RecipeInputMissing(f"policy {prefix} was trained on {meta.get('env_id')}, not {env_id}")
    return params, meta, prefix


def collect_policy_steps(env_id: str, actor_params, num_steps: int, seed: int = 0,
                         first_reset_seed: int = FIRST_RESET_SEED) -> dict:
    """`num_steps` steps of `env_id` with the stochastic policy tanh(μ(s) + σ(s)·ε), ε ~ N(0, I)
    drawn from numpy's PCG64(seed); episode i reset with seed first_reset_seed + i.

    Returns the dict of `dataset_build.collect_steps`.
    """
    import gymnasium as gym
    import jax

    from mopo_jax.sac import _actor_from_params

    actor = _actor_from_params(actor_params, None)
    mean_log_std = jax.jit(lambda p, o: actor.apply({"params": p}, o[None].astype(np.float32)))
    rng = np.random.default_rng(seed)

    def choose(obs: np.ndarray) -> np.ndarray:
        mean, log_std = (np.asarray(x[0], np.float64) for x in mean_log_std(actor_params, obs))
        return np.tanh(mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)

    return collect_steps(gym.make(env_id), num_steps, choose, first_reset_seed)


def _history(run: str, env_id: str, upto_step: int | None, hint_extra: str = "") -> dict:
    """Rows [0, upto_step) (default all) of the behaviour run's history, as `load_history` gives."""
    from mopo_jax.behavior_export import history_length, load_history

    run_dir = behavior_run_dir(run)
    if not (run_dir / "history.npz").exists():
        raise RecipeInputMissing(
            f"This dataset is cut from the training history of the behaviour run {run!r}, expected "
            f"at {run_dir} (set ${BEHAVIOR_DIR_ENV_VAR} to the folder holding it). Train it with "
            f"{_train_hint(env_id, run, hint_extra)}.")
    if upto_step is not None and history_length(run_dir) < upto_step:
        raise RecipeInputMissing(f"{run_dir} holds {history_length(run_dir)} steps; {upto_step} "
                                 "are needed: resume that run (--resume) before building.")
    return load_history(run_dir, upto_step)


def _history_steps(history: dict) -> dict:
    ends = history["terminations"] | history["truncations"]
    return steps_from_flat(history["observations"], history["actions"], history["rewards"],
                           history["next_observations"], history["terminations"], ends)


def _flat_steps(dataset) -> dict:
    return steps_from_flat(dataset.observations, dataset.actions, dataset.rewards,
                           dataset.next_observations, dataset.terminals, dataset.episode_ends)


def _concat_steps(a: dict, b: dict) -> dict:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def build_level(env: str, level: str, minari_id: str, num_steps: int) -> str:
    """Build dataset `<env>-<level>` locally as Minari `minari_id` (atomic); returns a description
    of its inputs. Raises RecipeInputMissing when a policy or behaviour run is not available."""
    from mopo_jax.data import D4RL_REF_SOURCE, ENVS, load_dataset

    info = ENVS[env]
    refs = dict(ref_min_score=info.ref_min_score, ref_max_score=info.ref_max_score)
    name = f"{env}-{level}"
    if level == "random":
        build_random_dataset(minari_id, info.env_id, num_steps, ref_source=D4RL_REF_SOURCE, **refs)
        return "uniform random actions"
    if level in POLICY_LEVELS:
        params, meta, prefix = _policy(env, level, info.env_id)
        log.info("[c] %s: %d steps of the stochastic policy %s (return %.1f)", name, num_steps,
                 prefix, meta.get("return_mean", float("nan")))
        steps = collect_policy_steps(info.env_id, params, num_steps)
        what = (f"{num_steps} steps of the {level} behaviour policy {prefix.name} (mopo_jax SAC, "
                f"env step {meta.get('step')}, deterministic return {meta.get('return_mean')}) "
                f"with stochastic actions; episode i reset with seed {FIRST_RESET_SEED}+i")
    elif level == "medium-expert":
        half = num_steps // 2
        steps = _concat_steps(_flat_steps(load_dataset(f"{env}-medium", num_steps=half)),
                              _flat_steps(load_dataset(f"{env}-expert", num_steps=num_steps - half)))
        what = f"{env}-medium ({half} steps) followed by {env}-expert ({num_steps - half} steps)"
    elif level == "medium-replay":
        _, meta, prefix = _policy(env, "medium", info.env_id)
        steps = _history_steps(_history(env, info.env_id, int(meta["step"])))
        what = (f"the replay buffer of behaviour run {env!r} up to env step {meta['step']}, where "
                f"the medium policy {prefix.name} was taken")
    elif name in OOD_SOURCE_RUNS:
        from mopo_jax.ood import get_task, relabel
        from mopo_jax.transitions import Transitions

        task, run = get_task(name), OOD_SOURCE_RUNS[name]
        extra = " --reward halfcheetah-vel3" if run == "halfcheetah-vel3" else ""
        history = _history(run, info.env_id, None, extra)
        history["rewards"] = relabel(Transitions(
            history["observations"], history["actions"], history["rewards"],
            history["next_observations"], history["terminations"]), name).rewards
        steps = _history_steps(history)
        what = (f"the whole replay buffer of behaviour run {run!r}, rewards relabelled with the "
                f"{name} target reward ({task.description})")
        refs = dict(ref_min_score=float("nan"), ref_max_score=float("nan"))
    else:
        raise RecipeInputMissing(f"no local recipe for {name!r}")
    write_minari_dataset(minari_id, steps, info.env_id, description=f"Built locally by mopo_jax: {what}.",
                         algorithm_name="mopo_jax behaviour SAC", **refs)
    return what
