"""Trackers: TensorBoard event files read back by TensorBoard's own reader; W&B offline; errors."""

import sys

import pytest

from mopo_jax.tracking import MissingExtra, NullTracker, make_tracker, row_scalars


def _rows():
    rows = []
    for epoch in (1, 2, 3):
        for seed in (0, 1):
            row = {"epoch": epoch, "sac_steps": 100 * epoch, "policy": f"h5-lam1-seed{seed}",
                   "seed": seed, "penalty_coef": 1.0, "rollout_length": 5, "dataset": "hopper-medium",
                   "critic_loss": 10.0 * epoch + seed, "alpha": 0.5 / epoch,
                   "buffer_count": 1000 * epoch}
            if epoch == 3:
                row |= {"eval_return": 123.25 + seed, "eval_returns": [1.0, 2.0],
                        "normalized_score": None}
            rows.append(row)
    return rows


def test_row_scalars_keeps_metrics_only():
    row = _rows()[-1]
    assert row_scalars(row) == {"h5-lam1-seed1/critic_loss": 31.0, "h5-lam1-seed1/alpha": 0.5 / 3,
                                "h5-lam1-seed1/buffer_count": 3000.0,
                                "h5-lam1-seed1/eval_return": 124.25}


def test_tensorboard_event_files_parse_with_the_right_values(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = make_tracker("tensorboard", tmp_path, {"dataset": "hopper-medium"})
    rows = _rows()
    tracker.log_rows(rows[:4])  # two calls, as the driver logs chunk by chunk
    tracker.log_rows(rows[4:])
    tracker.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert "h5-lam1-seed0/critic_loss" in tags and "h5-lam1-seed1/eval_return" in tags
    assert not any(t.split("/")[1] in ("epoch", "seed", "normalized_score", "eval_returns")
                   for t in tags)
    crit = acc.Scalars("h5-lam1-seed1/critic_loss")
    assert [(e.step, e.value) for e in crit] == [(100, 11.0), (200, 21.0), (300, 31.0)]
    alpha = acc.Scalars("h5-lam1-seed0/alpha")
    assert [e.step for e in alpha] == [100, 200, 300]
    assert [e.value for e in alpha] == pytest.approx([0.5, 0.25, 0.5 / 3], rel=1e-6)
    assert [(e.step, e.value) for e in acc.Scalars("h5-lam1-seed0/eval_return")] == [(300, 123.25)]


def test_wandb_offline_run_writes_under_the_run_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = make_tracker("wandb", tmp_path / "run", {"dataset": "hopper-medium", "epochs": 3})
    tracker.log_rows(_rows())
    tracker.close()
    files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"h5-lam1-seed0/critic_loss" in data and b"h5-lam1-seed1/eval_return" in data


def test_none_and_unknown_kinds(tmp_path):
    tracker = make_tracker("none", tmp_path, {})
    assert isinstance(tracker, NullTracker)
    tracker.log_rows(_rows())
    tracker.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="tensorboard, wandb"):
        make_tracker("mlflow", tmp_path, {})


@pytest.mark.parametrize("kind, module", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_missing_package_names_the_extra(tmp_path, monkeypatch, kind, module):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>...` raise ImportError
    with pytest.raises(MissingExtra, match=rf"pip install 'mopo_jax\[{kind}\]'"):
        make_tracker(kind, tmp_path, {})
