"""The train command before its first policy epoch: the run folder during the fit, the cache, progress."""

import json
import re

import pytest

from mopo_jax.cli import train_run
from mopo_jax.cli.train import main
from mopo_jax.mopo.config import tiny
from mopo_jax.mopo.grid import Grid
from mopo_jax.report.runs import load_run
from mopo_jax.rundir import RunDirError

TINY = ["--dataset", "hopper-random", "--tiny", "--offline", "--epochs", "1", "--eval-every", "1",
        "--no-progress"]


@pytest.mark.slow
def test_a_run_stopped_in_its_fit_reads_as_a_run_and_continues(data_dirs, tmp_path, monkeypatch,
                                                                capsys):
    """Reproducer: a run stopped during its dynamics fit left only `.lock`: `report` called the
    folder 'not a training run directory' and --resume had nothing to continue."""
    run_dir = tmp_path / "run"
    real_models = train_run._models

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("the dynamics fit is saved")

    monkeypatch.setattr(train_run, "_models", stopped)
    assert main([*TINY, "--logdir", str(run_dir)]) == 130
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["phase"] == train_run.PREPARING and saved["config"]["epochs"] == 1
    assert saved["num_transitions"] == 2000 and saved["dynamics_models"] is None
    with pytest.raises(RunDirError, match="is a training run that is preparing its dynamics"):
        load_run(run_dir)
    capsys.readouterr()
    assert main([*TINY, "--logdir", str(run_dir)]) == 2  # without --resume: refused, as any run
    assert "pass --resume to continue it" in capsys.readouterr().err
    monkeypatch.setattr(train_run, "_models", real_models)
    assert main([*TINY, "--logdir", str(run_dir), "--resume"]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert "phase" not in saved and saved["dynamics_models"][0].startswith("hopper-random-n2000-")
    assert [r["epoch"] for r in load_run(run_dir).rows] == [1]


def test_an_unwritable_model_cache_is_refused_before_the_fit(hopper_small, monkeypatch, tmp_path):
    """Reproducer: a read-only model cache was found only after the fit, which was then lost."""
    from mopo_jax.dynamics import io as dynamics_io
    from mopo_jax.dynamics import resumable

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").write_text("a file where the model folder should be")
    monkeypatch.setenv("MOPO_JAX_CACHE_DIR", str(cache))

    def never(*args, **kwargs):
        raise AssertionError("the fit started")

    monkeypatch.setattr(resumable, "fit_many_resumable", never)
    config = tiny().dynamics
    with pytest.raises(PermissionError, match=r"models is not a writable folder .*nothing was fitted"):
        dynamics_io.fit_or_load(config, hopper_small.transitions(), hopper_small.info, [0])


def _row(epoch, seconds, policy="p", eval_return=None):
    row = {"epoch": epoch, "policy": policy, "chunk_seconds": seconds, "rollout_penalty": 0.5}
    if eval_return is not None:
        row |= {"eval_return": eval_return, "normalized_score": None}
    return row


def test_the_progress_line_reports_each_chunks_speed_and_an_eta_at_the_mean_rate(capsys):
    """Reproducer: the line printed 29 SAC steps/s for a real 57.6 and an ETA one chunk behind."""
    config = tiny(epochs=10, steps_per_epoch=100)
    show = train_run._printer(config, Grid((0, 1), (1.0,), (5,)))  # 2 policies
    show([_row(e, 4.0, p) for e in (1, 2) for p in "ab"])  # 2 epochs in 4 s
    first = capsys.readouterr().out
    assert "epoch     2/10" in first and " 100 SAC steps/s" in first  # 2 * 100 * 2 / 4
    assert re.fullmatch(r"\d\d:\d\d:\d\d epoch .*\n", first)  # timestamped as the log lines
    assert "ETA 0.3 min" in first  # 2 s per epoch * 8 epochs left = 16 s
    show([_row(e, 16.0, p, 10.0) for e in (3, 4, 5, 6) for p in "ab"])  # 4 epochs in 16 s
    second = capsys.readouterr().out
    assert "epoch     6/10" in second and " 50 SAC steps/s" in second and "return 10.0 10.0" in second
    assert "ETA 0.2 min" in second  # (4 + 16) s / 6 epochs * 4 left = 13.3 s


def test_log_lines_follow_the_current_stderr_across_in_process_runs(monkeypatch):
    """Reproducer: the log handler kept the first run's stderr; a later in-process run (a test
    under capsys) logged into a closed stream and printed 'Logging error' tracebacks."""
    import io
    import logging

    from mopo_jax.cli.common import setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    setup_logging()
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    setup_logging()
    logging.getLogger("mopo_jax.train").info("second run")
    handlers = [h for h in logging.getLogger("mopo_jax").handlers if getattr(h, "_mopo_jax", False)]
    assert len(handlers) == 1 and second.getvalue().endswith(" second run\n")
    assert "Logging error" not in second.getvalue()
