"""The train command end to end: safe run dirs, validation before writes, exact repeats, grids, clean logs."""

import json
import os
import stat
import subprocess
import sys

import pytest

from mopo_jax import rundir
from mopo_jax.cli.train import main

TINY = ["--dataset", "hopper-random", "--tiny", "--offline", "--epochs", "2", "--eval-every", "1",
        "--no-progress"]


def _snapshot(run_dir):
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}


def _rows(run_dir):
    return [{k: v for k, v in r.items() if k != "chunk_seconds"}
            for r in rundir.read_jsonl(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def finished(data_dirs, tmp_path_factory):
    """One finished tiny run (the others compare against it)."""
    run_dir = tmp_path_factory.mktemp("runs") / "base"
    assert main([*TINY, "--logdir", str(run_dir)]) == 0
    return run_dir


def test_tiny_run_writes_a_complete_readable_run_dir(finished, data_dirs, capsys):
    config = json.loads((finished / "config.json").read_text())
    assert config["num_transitions"] == 2000  # --tiny uses a small dataset, never 1M steps
    assert config["versions"]["mujoco"] and config["versions"]["gymnasium"]
    assert config["command"].startswith("python -m mopo_jax.train") and "git_commit" in config
    assert config["config"]["sac"]["target_entropy"] == -3.0
    rows = _rows(finished)
    assert [r["epoch"] for r in rows] == [1, 2] and all("eval_return" in r for r in rows)
    assert (finished / "policies" / "h5-lam1-seed0-final.msgpack").exists()
    results = json.loads((finished / "results.json").read_text())
    assert results["dataset_source"] and len(results["policies"]["h5-lam1-seed0"]["evaluations"]) == 2
    assert rundir.checkpoint_metadata(finished)["epoch"] == 2
    mode = stat.S_IMODE(os.stat(finished / "metrics.jsonl").st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH  # lab-mates can read it (umask 022)
    # the model cache key names the dataset identity, recorded in config.json
    (key,) = config["dynamics_models"]
    assert key.startswith("hopper-random-n2000-seed0-")


def test_reused_run_dir_is_refused_and_left_untouched(finished, capsys):
    before = _snapshot(finished)
    assert main([*TINY, "--penalty-coef", "2.0", "--logdir", str(finished)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*TINY, "--real-ratio", "1.5", "--logdir", str(finished)]) == 2
    err = capsys.readouterr().err
    assert "real_ratio=1.5" in err and "Traceback" not in err
    assert main([*TINY, "--penalty-coef", "2.0", "--resume", "--logdir", str(finished)]) == 2
    err = capsys.readouterr().err
    assert "grid.penalty_coefs: saved [1.0], requested [2.0]" in err and "steps_per_epoch" not in err
    assert _snapshot(finished) == before


def test_default_run_dirs_differ_by_config(data_dirs, tmp_path, monkeypatch):
    from mopo_jax.cli.train_flags import RunOptions
    from mopo_jax.cli.train_checks import default_logdir
    from mopo_jax.mopo.config import tiny
    from mopo_jax.mopo.grid import Grid

    opts = RunOptions()
    a = default_logdir(tiny(), Grid((0,), (1.0,), (5,)), opts)
    b = default_logdir(tiny(), Grid((0,), (2.0,), (5,)), opts)
    c = default_logdir(tiny(epochs=3), Grid((0,), (1.0,), (5,)), opts)
    d = default_logdir(tiny(), Grid((0,), (1.0,), (5,)), RunOptions(dataset_steps=4000))
    assert len({a, b, c, d}) == 4 and a.name.startswith("hopper-random-h5-lam1-seed0-")


@pytest.mark.slow
def test_running_the_same_command_again_continues_its_run(data_dirs, tmp_path, monkeypatch, capsys):
    """Reproducer: re-running the --tiny smoke test failed with 'already holds a run'."""
    monkeypatch.chdir(tmp_path)
    args = [a if a != "2" else "1" for a in TINY]  # --epochs 1
    assert main(args) == 0
    first = capsys.readouterr()
    assert main(args) == 0
    again = capsys.readouterr()
    assert "holds the run of this exact command: continuing it" in again.err
    run_dir = json.loads(first.out.splitlines()[-1])["run_dir"]
    assert json.loads(again.out.splitlines()[-1])["run_dir"] == run_dir
    assert [r["epoch"] for r in _rows(tmp_path / run_dir)] == [1]  # nothing trained twice


def test_resume_refuses_other_data_or_models(finished, tmp_path, capsys):
    """Reproducers: --resume accepted another --dataset-steps, --shared-model on a per-seed grid
    and another --dynamics-path, training the new epochs on other data or ensembles."""
    import shutil

    before = _snapshot(finished)
    for extra, field in ((["--dataset-steps", "1500"], "dataset_steps: saved 2000, requested 1500"),
                         (["--shared-model"], "shared_model: saved False, requested True"),
                         (["--dynamics-path", str(tmp_path / "other")], "dynamics_path: saved None")):
        assert main([*TINY, "--epochs", "3", "--resume", "--logdir", str(finished), *extra]) == 2
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err, err
    assert _snapshot(finished) == before
    copy = tmp_path / "copy"  # the same flags, but the dataset files changed since
    shutil.copytree(finished, copy)
    (copy / ".lock").unlink(missing_ok=True)
    saved = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(saved | {"data_stamp": "an older build"}))
    snapshot = _snapshot(copy)
    assert main([*TINY, "--epochs", "3", "--resume", "--logdir", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "was trained on other data: data_stamp: saved 'an older build'" in err
    assert _snapshot(copy) == snapshot


def test_resume_of_a_finished_run_keeps_and_extends_results(finished, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir)
    (run_dir / ".lock").unlink(missing_ok=True)
    assert main([*TINY, "--resume", "--logdir", str(run_dir)]) == 0
    assert _rows(run_dir) == _rows(finished)
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["policies"]["h5-lam1-seed0"]["evaluations"]) == 2
    args = [a if a != "2" else "3" for a in TINY]  # --epochs 3
    assert main([*args, "--resume", "--logdir", str(run_dir)]) == 0
    assert [r["epoch"] for r in _rows(run_dir)] == [1, 2, 3]
    assert _rows(run_dir)[:2] == _rows(finished)


@pytest.mark.slow
def test_sigterm_in_the_policy_phase_checkpoints_the_chunk_and_resume_continues(
        finished, tmp_path, monkeypatch, capfd):
    """Reproducer: SIGTERM (or Ctrl-C) in the policy phase lost every epoch since the last
    periodic checkpoint (up to 10 minutes). Now the chunk in flight is finished and saved."""
    import signal

    from mopo_jax.cli import train_run

    real_evaluate = train_run.evaluate_policies

    def evaluate_then_signal(*args):  # the signal lands while epoch 1 is evaluated
        os.kill(os.getpid(), signal.SIGTERM)
        monkeypatch.setattr(train_run, "evaluate_policies", real_evaluate)
        return real_evaluate(*args)

    monkeypatch.setattr(train_run, "evaluate_policies", evaluate_then_signal)
    run_dir, args = tmp_path / "stopped", [a if a != "2" else "3" for a in TINY]  # --epochs 3
    assert main([*args, "--logdir", str(run_dir)]) == 130
    err = capfd.readouterr().err  # the notice is written to fd 2 directly
    assert "stopping once the current chunk" in err and "stopped after epoch 2" in err
    stopped = _rows(run_dir)  # epochs 1-2 as the uninterrupted run has them, less its final eval
    assert stopped == [{k: r[k] for k in s} for r, s in zip(_rows(finished), stopped)]
    assert [r["epoch"] for r in stopped] == [1, 2]
    assert rundir.checkpoint_metadata(run_dir)["epoch"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert main([*args, "--resume", "--logdir", str(run_dir)]) == 0
    assert [r["epoch"] for r in _rows(run_dir)] == [1, 2, 3]
    assert _rows(run_dir)[:2] == stopped


@pytest.mark.slow
def test_config_json_repeats_a_run_and_overwrite_replaces(finished, tmp_path):
    repeat = tmp_path / "repeat"
    assert main(["--config", str(finished / "config.json"), "--offline", "--no-progress",
                 "--logdir", str(repeat)]) == 0
    assert _rows(repeat) == _rows(finished)
    assert main([*TINY, "--epochs", "1", "--overwrite", "--logdir", str(repeat)]) == 0
    assert [r["epoch"] for r in _rows(repeat)] == [1]


@pytest.mark.slow
def test_grid_flags_train_every_policy(data_dirs, tmp_path):
    run_dir = tmp_path / "grid"
    assert main([*TINY, "--epochs", "1", "--num-seeds", "2", "--penalty-coef", "0.5", "1",
                 "--logdir", str(run_dir)]) == 0
    rows = _rows(run_dir)
    assert sorted(r["policy"] for r in rows) == sorted(
        ["h5-lam0.5-seed0", "h5-lam1-seed0", "h5-lam0.5-seed1", "h5-lam1-seed1"])
    assert {(r["seed"], r["penalty_coef"], r["rollout_length"]) for r in rows} == {
        (0, 0.5, 5), (0, 1.0, 5), (1, 0.5, 5), (1, 1.0, 5)}


@pytest.mark.slow
def test_cli_log_lines_are_ours_with_timestamps(data_dirs, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="")
    proc = subprocess.run([sys.executable, "-m", "mopo_jax.train", *TINY, "--epochs", "1",
                           "--logdir", str(tmp_path / "sub")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Unable to initialize backend" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "dynamics" in ln or "[a]" in ln]
    assert lines and all(ln[2] == ":" and ln[5] == ":" for ln in lines), lines[:3]
    assert "compiled the 1-epoch step" in proc.stderr


def test_a_full_disk_exits_with_one_line_naming_the_path(data_dirs, tmp_path, monkeypatch, capsys):
    """Reproducer: a full disk or a file-size cap during train printed a traceback."""
    import errno

    from mopo_jax import rundir as rundir_module

    def full(path, lines):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(rundir_module, "append_lines", full)
    assert main([*TINY, "--epochs", "1", "--logdir", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err[-1]) > 0 and err[-1].startswith("error: the disk is full while writing ")
    assert "metrics.jsonl" in err[-1] and "Traceback" not in "\n".join(err)


def test_sizes_that_cannot_fit_are_refused_before_any_fit_or_write(data_dirs, tmp_path, capsys):
    """Reproducer: huge sizes in flags crashed with out-of-memory or an XLA abort after the fit."""
    run_dir = tmp_path / "huge"
    assert main([*TINY, "--rollout-batch-size", "4000000000", "--logdir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "GiB is available: lower --rollout-batch-size" in err and "Traceback" not in err
    assert not run_dir.exists() or {p.name for p in run_dir.iterdir()} <= {".lock"}


def test_eval_workers_give_the_same_run(finished, tmp_path, capsys):
    """--eval-workers steps the evaluation episodes in worker processes: every row (returns,
    scores) and the final evaluation equal the in-process run's."""
    run_dir = tmp_path / "pool"
    assert main([*TINY, "--eval-workers", "2", "--logdir", str(run_dir)]) == 0
    assert _rows(run_dir) == _rows(finished)
    assert main([*TINY, "--eval-workers", "-1", "--logdir", str(tmp_path / "bad")]) == 2
    assert "eval_workers=-1" in capsys.readouterr().err and not (tmp_path / "bad").exists()
