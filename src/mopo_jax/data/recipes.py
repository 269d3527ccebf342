"""Local recipes for dataset levels: random data, a behaviour policy's data, a run's replay history,
the relabelled out-of-distribution tasks, and the medium+expert concatenation.

What each level is built from, where its inputs are looked up and how they are checked is written
once, in docs/datasets.md ("Local builds"); keep that table in step with this module.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from mopo_jax import paths
from mopo_jax.behavior.artifacts import (history_extras, history_length, load_history,
                                       snapshot_has_weights)
from mopo_jax.data.collect import (FIRST_RESET_SEED, collect_policy_steps, collect_random_steps,
                                   steps_from_flat)
from mopo_jax.data.minari_io import INPUTS_KEY, read_metadata, write_minari_dataset
from mopo_jax.envs.catalog import (D4RL_REF_SOURCE, ENVS, HALFCHEETAH_VEL3, OOD_DATASETS,
                                   POLICY_LEVELS, canonical_name, parse_dataset_name)
from mopo_jax.envs.ood import get_task, relabel
from mopo_jax.run_layout import HISTORY_FILE
from mopo_jax.sac.policy_io import load_policy
from mopo_jax.types import Transitions

log = logging.getLogger("mopo_jax.data")


class RecipeInputMissing(RuntimeError):
    """A build needs a policy or a behaviour run that is not on this machine (message says how)."""


def find_policy(env: str, level: str) -> Path | None:
    """Prefix of the behaviour policy `<env>-<level>` ($MOPO_JAX_POLICY_DIR first, then shipped)."""
    for d in paths.policy_dirs():
        if (d / f"{env}-{level}.json").exists():
            return d / f"{env}-{level}"
    return None


def shipped_policies() -> list[str]:
    """Names `<env>-<level>` of the policies shipped inside the package."""
    return sorted(p.stem for p in paths.shipped_policy_dir().glob("*.json"))


def input_stamps(env: str, level: str) -> dict[str, str] | None:
    """What a local build of `<env>-<level>` is made from, as {input: fingerprint}: the sha256 of
    each behaviour policy's weights (medium, expert, medium-replay, both for medium-expert) and the
    number of steps in an OOD dataset's source history (the dataset is the whole history). {} for
    random data; None when an input is not on this machine (a local copy can then not be checked)."""
    name = canonical_name(env, level)
    if name in OOD_DATASETS:
        run_dir = paths.behavior_run_dir(OOD_DATASETS[name].source_run)
        if not (run_dir / HISTORY_FILE).exists():
            return None
        return {f"history {OOD_DATASETS[name].source_run}": str(history_length(run_dir))}
    levels = {"medium-expert": ("medium", "expert"), "medium-replay": ("medium",)}.get(
        level, (level,) if level in POLICY_LEVELS else ())
    stamps = {}
    for policy_level in levels:
        prefix = find_policy(env, policy_level)
        if prefix is None:
            return None
        digest = hashlib.sha256(prefix.with_suffix(".msgpack").read_bytes()).hexdigest()
        stamps[f"policy {env}-{policy_level}"] = digest
    return stamps


def changed_inputs(minari_id: str, name: str) -> list[str]:
    """The inputs of our local build `minari_id` of dataset `name` that differ now from those it
    was built from (e.g. a policy re-exported since), as 'input (built from X, now Y)'. [] when
    none differ, or when either side is unknown (a build that predates the record, a missing
    policy)."""
    recorded = read_metadata(minari_id).get(INPUTS_KEY)
    current = input_stamps(*parse_dataset_name(name))
    if recorded is None or current is None:
        return []
    return [f"{key} (built from {str(recorded.get(key))[:12]}, now {value[:12]})"
            for key, value in current.items() if recorded.get(key) != value]


def _train_hint(env_id: str, run: str, extra: str = "") -> str:
    return (f"`python -m mopo_jax.behavior --env {env_id}{extra} --logdir "
            f"{paths.behavior_run_dir(run)}` (1M steps: hours on a CPU, use a GPU if you have one)")


def _policy(env: str, level: str, env_id: str):
    prefix = find_policy(env, level)
    if prefix is None:
        raise RecipeInputMissing(
            f"No behaviour policy {env}-{level}: not in ${paths.POLICY_DIR_ENV_VAR} "
            f"({os.environ.get(paths.POLICY_DIR_ENV_VAR) or 'unset'}) and not shipped (shipped: "
            f"{', '.join(shipped_policies()) or 'none yet'}). Train one with "
            f"{_train_hint(env_id, env)}, then `python -m mopo_jax.behavior export --logdir "
            f"{paths.behavior_run_dir(env)} --level {level} --out <dir>/{env}-{level}` and set "
            f"{paths.POLICY_DIR_ENV_VAR}=<dir>.")
    params, meta, _ = load_policy(prefix)
    if meta.get("env_id") != env_id:
        raise RecipeInputMissing(f"policy {prefix} was trained on {meta.get('env_id')}, not {env_id}")
    return params, meta, prefix


def _history(run: str, env_id: str, upto_step: int | None, hint_extra: str = "") -> dict:
    """Rows [0, upto_step) (default all) of the behaviour run's history, as `load_history` gives."""
    run_dir = paths.behavior_run_dir(run)
    if not (run_dir / HISTORY_FILE).exists():
        raise RecipeInputMissing(
            f"This dataset is cut from the training history of the behaviour run {run!r}, expected "
            f"at {run_dir} (set ${paths.BEHAVIOR_DIR_ENV_VAR} to the folder holding it). Train it "
            f"with {_train_hint(env_id, run, hint_extra)}.")
    if upto_step is not None and history_length(run_dir) < upto_step:
        raise RecipeInputMissing(f"{run_dir} holds {history_length(run_dir)} steps; {upto_step} "
                                 "are needed: resume that run (--resume) before building.")
    return load_history(run_dir, upto_step)


def _replay_description(env: str, step: int, prefix) -> str:
    """What a medium-replay build of behaviour run `env` cut at `step` is, saying (and logging)
    when the run's snapshot there is not the medium policy `prefix`."""
    what = f"the replay buffer of behaviour run {env!r} up to env step {step}"
    if snapshot_has_weights(paths.behavior_run_dir(env), step, prefix):
        return f"{what}, where the medium policy {prefix.name} was taken"
    log.warning("the snapshot of behaviour run %s at step %d is not the medium policy %s: this "
                "replay is not the one that policy was taken from", env, step, prefix)
    return (f"{what}; that run's snapshot there is not the medium policy {prefix.name} (a run "
            "retrained elsewhere can differ), so this is not the replay that policy came from")


def _history_steps(history: dict) -> dict:
    ends = history["terminations"] | history["truncations"]
    return steps_from_flat(history["observations"], history["actions"], history["rewards"],
                           history["next_observations"], history["terminations"], ends)


def flat_steps(dataset) -> dict:
    """A loaded Dataset -> the per-episode steps dict of `collect_steps` (for re-writing)."""
    return steps_from_flat(dataset.observations, dataset.actions, dataset.rewards,
                           dataset.next_observations, dataset.terminations, dataset.episode_ends)


def concat_steps(a: dict, b: dict) -> dict:
    """Two steps dicts one after the other (episodes of `a`, then those of `b`)."""
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def write_steps(minari_id: str, steps: dict, env: str, what: str, ood: bool = False,
                inputs: dict[str, str] | None = None) -> None:
    """Write `steps` as Minari dataset `minari_id` (atomically), described as built from `what`,
    recording `inputs` (input_stamps, taken before the build) in its metadata."""
    info = ENVS[env]
    refs = (dict(ref_min_score=float("nan"), ref_max_score=float("nan")) if ood else
            dict(ref_min_score=info.ref_min_score, ref_max_score=info.ref_max_score))
    write_minari_dataset(minari_id, steps, info.env_id, description=f"Built locally by mopo_jax: {what}.",
                         algorithm_name="mopo_jax behaviour SAC", inputs=inputs, **refs)


def _ood_steps(name: str, env_id: str) -> tuple[dict, str]:
    """(steps dict, description) of OOD dataset `name`: its behaviour run's whole history with the
    rewards relabelled by the target reward, from (s, a, s') and the per-step extras the history
    recorded (root positions, reset height, contact forces: see mopo_jax.envs.extras)."""
    task, run = get_task(name), OOD_DATASETS[name].source_run
    extra = f" --reward {HALFCHEETAH_VEL3}" if run == HALFCHEETAH_VEL3 else ""
    history = _history(run, env_id, None, extra)
    try:
        extras = history_extras(history)
    except ValueError as err:
        raise RecipeInputMissing(
            f"{name} is relabelled from the history of behaviour run {run!r} at "
            f"{paths.behavior_run_dir(run)}, but {err}. Move that folder away and train it "
            f"again with {_train_hint(env_id, run, extra)}.") from err
    history["rewards"] = relabel(Transitions(
        history["observations"], history["actions"], history["rewards"],
        history["next_observations"], history["terminations"]), name, extras).rewards
    what = (f"the whole replay buffer of behaviour run {run!r}, rewards relabelled with the "
            f"{name} target reward ({task.description})")
    return _history_steps(history), what


def build_level(env: str, level: str, minari_id: str, num_steps: int) -> str:
    """Build dataset `<env>-<level>` (any level but medium-expert and simple) locally as Minari
    `minari_id` (atomic); returns a description of its inputs. Raises RecipeInputMissing when a
    policy or behaviour run is not available."""
    info, name = ENVS[env], canonical_name(env, level)
    ood, inputs = name in OOD_DATASETS, input_stamps(env, level)
    if level == "random":
        log.info("building %s locally: %d uniform-random steps of %s", minari_id, num_steps, info.env_id)
        steps = collect_random_steps(info.env_id, num_steps)
        what = (f"{num_steps} steps of {info.env_id} with uniform action_space.sample() actions "
                f"(action space seeded {FIRST_RESET_SEED}), episode i reset with seed "
                f"{FIRST_RESET_SEED}+i, the Minari/Farama random-data recipe. Reference scores: "
                f"{D4RL_REF_SOURCE}")
    elif level in POLICY_LEVELS:
        params, meta, prefix = _policy(env, level, info.env_id)
        log.info("[c] %s: %d steps of the stochastic policy %s (return %.1f)", name, num_steps,
                 prefix, meta.get("return_mean", float("nan")))
        steps = collect_policy_steps(info.env_id, params, num_steps, policy_meta=meta)
        what = (f"{num_steps} steps of the {level} behaviour policy {prefix.name} (mopo_jax SAC, "
                f"env step {meta.get('step')}, deterministic return {meta.get('return_mean')}) "
                f"with stochastic actions; episode i reset with seed {FIRST_RESET_SEED}+i")
    elif level == "medium-replay":
        _, meta, prefix = _policy(env, "medium", info.env_id)
        steps = _history_steps(_history(env, info.env_id, int(meta["step"])))
        what = _replay_description(env, int(meta["step"]), prefix)
    elif ood:
        steps, what = _ood_steps(name, info.env_id)
    else:
        raise RecipeInputMissing(f"no local recipe for {name!r}")
    write_steps(minari_id, steps, env, what, ood=ood, inputs=inputs)
    return what
