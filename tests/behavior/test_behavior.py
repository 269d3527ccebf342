"""Online SAC behaviour training: SIGKILL + resume via the CLI, exact history, one trace, export, selection.

One small run serves most tests (compiling SAC dominates the cost on 2 cores): the CLI is started in
a subprocess, killed after its first checkpoint, and resumed to completion with `--resume`.
"""

import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import gymnasium as gym
import jax
import numpy as np
import pytest

from mopo_jax import checkpoint, rundir
from mopo_jax.behavior.artifacts import (HISTORY_FIELDS, export_policy, history_extras,
                                         list_snapshots, load_history, load_snapshot,
                                         select_expert_step, select_medium_step)
from mopo_jax.behavior.config import BehaviorConfig, config_to_dict, default_behavior_logdir, reset_seed
from mopo_jax.behavior.train import train_behavior
from mopo_jax.cli.behavior import main
from mopo_jax.envs.evaluate import evaluate_policy
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.policy import deterministic_action
from mopo_jax.sac.policy_io import load_policy

# eval_every is not a multiple of update_every (partial chunks); 80-step episodes give
# time-limit truncations as well as falls.
CFG = BehaviorConfig(env_id="Hopper-v5", total_steps=2500, start_steps=200, update_every=50,
                     eval_every=470, eval_episodes=1, seed=1, max_episode_steps=80,
                     sac=SACConfig(hidden_sizes=(32, 32), batch_size=32))
EVAL_STEPS = [470, 940, 1410, 1880, 2350, 2500]


def _argv(logdir):
    return ["--env", "Hopper-v5", "--steps", "2500", "--start-steps", "200", "--eval-every", "470",
            "--eval-episodes", "1", "--hidden", "32,32", "--batch-size", "32",
            "--max-episode-steps", "80", "--seed", "1", "--logdir", str(logdir), "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """CLI run SIGKILLed after its first checkpoint, then resumed with --resume to completion."""
    logdir = tmp_path_factory.mktemp("behavior") / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "mopo_jax.behavior", *_argv(logdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while not rundir.has_checkpoint(logdir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = rundir.checkpoint_metadata(logdir)["step"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the same entry point as `python -m`, in-process
        code = main(_argv(logdir) + ["--resume"])
    assert code == 0
    return logdir, json.loads(out.getvalue().splitlines()[-1]), killed_at


def _assert_continuous(history):
    """Within an episode next_observations[t] == observations[t + 1]; every episode is closed."""
    end = history["terminations"] | history["truncations"]
    assert end[-1], "the last row must close its episode"
    inside = ~end[:-1]
    np.testing.assert_array_equal(history["next_observations"][:-1][inside],
                                  history["observations"][1:][inside])


def test_cli_resume_after_sigkill_completes_cleanly(run):
    logdir, summary, killed_at = run
    assert killed_at < CFG.total_steps
    assert summary["steps"] == CFG.total_steps
    assert summary["sac_updates"] == CFG.total_steps - CFG.start_steps  # no update lost or doubled
    evals = [json.loads(line) for line in (logdir / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == EVAL_STEPS  # strictly increasing, no duplicates
    assert all(np.isfinite(e["return_mean"]) and e["steps_per_second"] > 0 for e in evals)
    assert [s for s, _ in list_snapshots(logdir)] == EVAL_STEPS
    assert [r for _, r in list_snapshots(logdir)] == [e["return_mean"] for e in evals]
    meta = rundir.checkpoint_metadata(logdir)
    assert meta["step"] == CFG.total_steps and meta["config"] == config_to_dict(CFG)
    assert len(list((logdir / "checkpoints").iterdir())) == 2  # the newest two generations
    assert not [p for p in logdir.rglob("*") if p.name.endswith(".tmp")]
    history = load_history(logdir)
    assert {k: v.shape[0] for k, v in history.items()} == dict.fromkeys(history, CFG.total_steps)
    _assert_continuous(history)
    # The episode in progress at the kill was abandoned: its last saved row closes it.
    assert history["terminations"][killed_at - 1] or history["truncations"][killed_at - 1]


def test_history_replays_exactly_in_the_env(run):
    history = load_history(run[0])
    assert history["terminations"].any() and history["truncations"].any()
    ends = np.flatnonzero(history["terminations"] | history["truncations"])
    env = gym.make(CFG.env_id, max_episode_steps=CFG.max_episode_steps)
    cut = {CFG.total_steps - 1, run[2] - 1}  # rows where the run (not the env) cut the episode
    for i, (a, b) in enumerate(zip(np.r_[0, ends[:-1] + 1], ends + 1)):
        obs, _ = env.reset(seed=reset_seed(CFG, i))
        np.testing.assert_array_equal(obs, history["observations"][a])
        for t in range(a, b):
            obs, reward, terminated, truncated, _ = env.step(history["actions"][t])
            np.testing.assert_array_equal(obs, history["next_observations"][t])
            assert reward == history["rewards"][t]
            assert terminated == history["terminations"][t]  # only where the env said so
            assert truncated == history["truncations"][t] or t in cut
    assert np.all(np.abs(history["actions"]) <= 1.0)
    np.testing.assert_allclose(history["actions"][: CFG.start_steps].mean(), 0.0, atol=0.1)
    part = load_history(run[0], upto_step=100)
    assert part["observations"].shape[0] == 100 and (part["terminations"][-1] or part["truncations"][-1])
    with pytest.raises(ValueError, match="outside"):
        load_history(run[0], upto_step=CFG.total_steps + 1)


def test_chunk_function_traced_once(run):
    # The resumed process ran ~45 chunks, full and partial: compiled once.
    assert run[1]["chunk_traces"] == 1


def test_resume_refuses_other_config_and_fresh_run_refuses_used_logdir(run):
    logdir = run[0]
    before = (logdir / "evals.jsonl").read_text()
    with pytest.raises(ValueError, match=r"different configuration.*eval_every.*new --logdir"):
        train_behavior(dataclasses.replace(CFG, eval_every=300), logdir, resume=True)
    with pytest.raises(ValueError, match="--resume"):
        train_behavior(CFG, logdir)
    assert (logdir / "evals.jsonl").read_text() == before


def test_old_format_checkpoint_pair_still_resumes(run, tmp_path):
    """A logdir written before checkpoint generations (checkpoint.msgpack + checkpoint.json) resumes;
    generations are written from then on and the old pair removed. An inconsistent old pair (a
    save killed between its two writes) is refused with the way out."""
    logdir = tmp_path / "old"
    shutil.copytree(run[0], logdir)
    older, newest = sorted((logdir / "checkpoints").iterdir())
    shutil.copy(older / "state.msgpack", logdir / "checkpoint.msgpack")  # the same bytes as the pair
    shutil.copy(older / "meta.json", logdir / "checkpoint.json")        # earlier versions wrote
    good, newer = (older / "state.msgpack").read_bytes(), (newest / "state.msgpack").read_bytes()
    shutil.rmtree(logdir / "checkpoints")
    assert checkpoint.load_metadata(logdir / "checkpoint")["step"] == EVAL_STEPS[-2]
    with pytest.raises(ValueError, match="--resume"):
        train_behavior(CFG, logdir)
    (logdir / "checkpoint.msgpack").write_bytes(newer)  # the msgpack of a later save: a torn pair
    with pytest.raises(ValueError, match=r"cannot be resumed.*checksum.*delete .*checkpoint\.msgpack"):
        train_behavior(CFG, logdir, resume=True)
    (logdir / "checkpoint.msgpack").write_bytes(good)
    steps, rows = [], []
    summary = train_behavior(CFG, logdir, resume=True, on_steps=lambda s, t: steps.append((s, t)),
                             on_eval=rows.append)
    assert steps[0] == (EVAL_STEPS[-2], CFG.total_steps) and steps[-1][0] == CFG.total_steps
    assert all(a[0] < b[0] for a, b in zip(steps, steps[1:]))  # progress only moves forward
    assert rows == [json.loads((logdir / "evals.jsonl").read_text().splitlines()[-1])]
    assert summary["steps"] == CFG.total_steps and summary["evaluations"] == 1
    assert summary["sac_updates"] == CFG.total_steps - CFG.start_steps
    assert [json.loads(ln)["step"] for ln in (logdir / "evals.jsonl").read_text().splitlines()] == EVAL_STEPS
    assert rundir.checkpoint_metadata(logdir)["step"] == CFG.total_steps
    assert not list(logdir.glob("checkpoint.*"))
    history = load_history(logdir)
    _assert_continuous(history)
    assert history["truncations"][EVAL_STEPS[-2] - 1] or history["terminations"][EVAL_STEPS[-2] - 1]


def test_export_and_load_policy_round_trip(run, tmp_path, capsys):
    logdir = run[0]
    step = list_snapshots(logdir)[-1][0]
    meta = export_policy(logdir, step, tmp_path / "pol", "expert", {"note": "x"}, episodes=2, seed=5)
    params, loaded, _ = load_policy(tmp_path / "pol")
    snap_params = load_snapshot(logdir, step).params
    jax.tree.map(np.testing.assert_array_equal, params, snap_params)
    assert loaded == meta and loaded["note"] == "x" and loaded["level"] == "expert"
    assert loaded["env_id"] == "Hopper-v5" and loaded["step"] == step
    assert loaded["hidden_sizes"] == [32, 32] and loaded["jax_version"] == jax.__version__
    assert "--hidden 32,32" in loaded["training_command"] and loaded["wall_seconds_to_step"] > 0
    assert loaded["device"]
    np.testing.assert_array_equal(loaded["returns"], evaluate_policy(params, "Hopper-v5", 2, seed=5))
    assert loaded["return_mean"] == pytest.approx(np.mean(loaded["returns"]))
    assert deterministic_action(params, np.zeros((4, 11), np.float32)).shape == (4, 3)
    # CLI export of the medium level picks select_medium_step.
    assert main(["export", "--logdir", str(logdir), "--level", "medium", "--out",
                          str(tmp_path / "med"), "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == select_medium_step(logdir)
    medium = load_policy(tmp_path / "med").metadata
    assert medium["level"] == "medium" and medium["selection"]["fraction"] == pytest.approx(1 / 3)
    best = max(list_snapshots(logdir), key=lambda s: s[1])
    assert (medium["selection"]["best_step"], medium["selection"]["best_training_return"]) == best


def test_select_medium_step_on_hand_written_snapshots(tmp_path):
    returns = {20: 150.0, 50: -5.0, 200: 110.0, 1000: 105.0, 1500: 300.0, 2000: 280.0}
    for step, ret in returns.items():  # "1000" sorts before "200" as a string
        checkpoint.save_pytree(tmp_path / "snapshots" / f"step_{step}", {"w": np.zeros(1)},
                               {"eval_return_mean": ret, "sac_updates": 0 if step == 20 else 9})
    assert list_snapshots(tmp_path) == sorted(returns.items())
    assert select_medium_step(tmp_path) == 200  # first trained snapshot ≥ 300 / 3
    assert select_medium_step(tmp_path, fraction=0.5) == 1500
    assert select_expert_step(tmp_path) == 1500


def test_cli_errors_exit_2(tmp_path, capsys):
    for argv in (["--env", "NoSuchEnv-v0", "--steps", "10", "--logdir", str(tmp_path / "a")],
                 ["--env", "Hopper-v5", "--steps", "0", "--logdir", str(tmp_path / "b")],
                 ["--env", "Hopper-v5", "--steps", "1000", "--eval-every", "100", "--stop-at", "150",
                  "--logdir", str(tmp_path / "c")],
                 ["export", "--logdir", str(tmp_path / "missing"), "--level", "medium",
                  "--out", str(tmp_path / "p")],
                 ["export", "--logdir", str(tmp_path), "--level", "medium", "--fraction", "1.5",
                  "--out", str(tmp_path / "p")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        if "--stop-at" in argv:
            assert "--stop-at 150 must be a positive multiple of --eval-every (100)" in err
    assert "--fraction must be in (0, 1], got 1.5" in err
    assert not any((tmp_path / name).exists() for name in "abc")


def test_stop_at_gives_the_uninterrupted_runs_first_steps(run, tmp_path, capsys):
    """A fresh run stopped at the first evaluation holds exactly the rows and the actor snapshot
    that the fixture's run (killed after that evaluation) has up to there."""
    logdir, _, killed_at = run
    first = EVAL_STEPS[0]
    assert main(_argv(tmp_path / "stopped") + ["--stop-at", str(first)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["steps"] == first and summary["evaluations"] == 1
    assert [s for s, _ in list_snapshots(tmp_path / "stopped")] == [first]
    stopped, full = load_history(tmp_path / "stopped"), load_history(logdir, upto_step=first)
    assert killed_at >= first and stopped.keys() == full.keys()
    for key in stopped:
        np.testing.assert_array_equal(stopped[key], full[key], err_msg=key)
    snapshot = f"snapshots/step_{first}.msgpack"
    assert (tmp_path / "stopped" / snapshot).read_bytes() == (logdir / snapshot).read_bytes()


def test_default_logdir_is_where_dataset_builds_look(monkeypatch, tmp_path):
    from mopo_jax.envs.catalog import OOD_DATASETS
    from mopo_jax.paths import BEHAVIOR_DIR_ENV_VAR

    monkeypatch.setenv(BEHAVIOR_DIR_ENV_VAR, str(tmp_path))
    assert default_behavior_logdir(BehaviorConfig(env_id="Hopper-v5")) == tmp_path / "hopper"
    cheetah = BehaviorConfig(env_id="HalfCheetah-v5", reward="halfcheetah-vel3")
    assert default_behavior_logdir(cheetah) == tmp_path / OOD_DATASETS["halfcheetah-jump"].source_run
    assert default_behavior_logdir(BehaviorConfig(env_id="Ant-v5")) == tmp_path / OOD_DATASETS["ant-angle"].source_run
    assert default_behavior_logdir(BehaviorConfig(env_id="Walker2d-v5", seed=2)) == tmp_path / "walker2d-seed2"


def test_history_records_step_extras(run):
    """Per row: root x before/after the step (Hopper-v5's own x_velocity·dt), the episode's reset
    height (obs[0] of its first observation) and the contact-force sum."""
    history = load_history(run[0])
    n = CFG.total_steps
    assert history["positions"].shape == history["next_positions"].shape == (n, 1)
    assert history["reset_heights"].shape == history["contact_forces_sq"].shape == (n,)
    extras = history_extras(history)  # every row was recorded, across the kill and the resume
    end = history["terminations"] | history["truncations"]
    inside = ~end[:-1]
    np.testing.assert_array_equal(history["next_positions"][:-1][inside],
                                  history["positions"][1:][inside])
    starts = np.r_[0, np.flatnonzero(end[:-1]) + 1]
    episode = np.cumsum(np.r_[0, end[:-1]])  # episode index of every row
    np.testing.assert_array_equal(history["reset_heights"],
                                  history["observations"][starts][episode, 0])
    env = gym.make(CFG.env_id, max_episode_steps=CFG.max_episode_steps)
    env.reset(seed=reset_seed(CFG, 0))
    for t in range(starts[1]):  # replay the first episode
        info = env.step(history["actions"][t])[4]
        np.testing.assert_allclose(extras.displacements[t, 0] / env.unwrapped.dt,
                                   info["x_velocity"], rtol=1e-9, atol=1e-12)
    assert (history["contact_forces_sq"] > 0).mean() > 0.5


def test_history_without_extras_loads_and_resumes(run, tmp_path):
    """A history.npz of the previous format (no extras) loads, and its run resumes: the rows
    recorded from then on carry extras, the older ones are NaN and `history_extras` says so."""
    logdir = tmp_path / "old-history"
    shutil.copytree(run[0], logdir)
    shutil.rmtree(max((logdir / "checkpoints").iterdir()))  # resume from EVAL_STEPS[-2]
    with np.load(logdir / "history.npz") as f:
        old = {k: f[k] for k in ("num_steps",) + HISTORY_FIELDS}
    np.savez(logdir / "history.npz", **old)
    loaded = load_history(logdir)
    assert set(loaded) == set(HISTORY_FIELDS)
    with pytest.raises(ValueError, match=r"lacks per-step extras.*not recorded.*train the run afresh"):
        history_extras(loaded)
    summary = train_behavior(CFG, logdir, resume=True)
    assert summary["steps"] == CFG.total_steps
    history = load_history(logdir)
    cut = EVAL_STEPS[-2]
    assert np.isnan(history["positions"][:cut]).all() and np.isnan(history["reset_heights"][:cut]).all()
    assert np.isfinite(history["positions"][cut:]).all() and np.isfinite(history["contact_forces_sq"][cut:]).all()
    np.testing.assert_array_equal(history["observations"][:cut], loaded["observations"][:cut])
    with pytest.raises(ValueError, match=f"{cut} of {CFG.total_steps} rows have no recorded extras"):
        history_extras(history)
