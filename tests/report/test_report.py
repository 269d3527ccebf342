"""Reports: table values against numpy on hand-written run dirs, IQM/bootstrap, PNGs, CLI exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mopo_jax.cli.report import main
from mopo_jax.report import bootstrap_ci, iqm, report
from mopo_jax.report.plots import MAX_PNG_BYTES
from mopo_jax.rundir import RunDirError

EPOCHS, EVAL_EVERY = 30, 2  # 15 evaluations per policy; the last 10 epochs hold 5 of them
REF = "D4RL v2 reference constants (test)"


def _score(lam, seed, epoch):
    return 10.0 * lam + 3.0 * seed + 0.5 * epoch + np.sin(epoch + 7 * seed)


def _write_run(run_dir, dataset="hopper-medium", lams=(1.0, 5.0), seeds=(0, 1, 2), h=5,
               scored=True, torn=True):
    run_dir.mkdir(parents=True)
    config = {"config": {"dataset": dataset, "rollout_length": h, "penalty_coef": lams[0],
                         "epochs": EPOCHS, "steps_per_epoch": 100, "sac": {}, "dynamics": {}},
              "grid": {"seeds": list(seeds), "penalty_coefs": list(lams), "rollout_lengths": [h]},
              "ref_source": REF, "dataset_source": "built locally", "device": "cpu",
              "jax_version": "test"}
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = []
    for epoch in range(1, EPOCHS + 1):
        for lam in lams:
            for seed in seeds:
                row = {"epoch": epoch, "sac_steps": 100 * epoch, "policy": f"h{h}-lam{lam:g}-seed{seed}",
                       "seed": seed, "penalty_coef": lam, "rollout_length": h, "dataset": dataset,
                       "critic_loss": 1.0 / epoch + seed, "q_mean": epoch * lam, "alpha": 0.1,
                       "rollout_penalty": lam * 0.3, "rollout_mean_length": h - 0.5 - seed * 0.1}
                if epoch % EVAL_EVERY == 0:
                    score = _score(lam, seed, epoch)
                    row |= {"eval_return": 100.0 * score, "eval_return_std": 1.0,
                            "eval_returns": [100.0 * score] * 2,
                            "normalized_score": score if scored else None}
                lines.append(json.dumps(row) + "\n")
        if epoch == EPOCHS:  # the final evaluation on fresh start states, on the last rows
            for i, line in enumerate(lines[-len(lams) * len(seeds):], len(lines) - len(lams) * len(seeds)):
                row = json.loads(line)
                fresh = _score(row["penalty_coef"], row["seed"], EPOCHS) - 1.0
                row |= {"final_eval_return": 100.0 * fresh, "final_eval_return_std": 2.0,
                        "final_eval_returns": [100.0 * fresh], "final_eval_episodes": 100,
                        "final_eval_normalized_score": fresh if scored else None}
                lines[i] = json.dumps(row) + "\n"
    text = "".join(lines) + ('{"epoch": 31, "sac_steps": 31' if torn else "")
    (run_dir / "metrics.jsonl").write_text(text)
    return run_dir


def _expected(run_dir, lam, metric="normalized_score"):
    """(final scores [S], means over the last 10 epochs' evaluations [S], final evaluations [S])
    per seed, straight from metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.endswith("}")]
    final_field = "final_eval_normalized_score" if metric == "normalized_score" else "final_eval_return"
    finals, lasts, fresh = [], [], []
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in sorted(rows, key=lambda r: r["epoch"])
                if r["seed"] == seed and r["penalty_coef"] == lam]
        evals = [r for r in mine if "eval_return" in r]
        finals.append(evals[-1][metric])
        lasts.append(np.mean([r[metric] for r in evals if r["epoch"] > EPOCHS - 10]))
        fresh.append(mine[-1][final_field])
    return np.array(finals), np.array(lasts), np.array(fresh)


@pytest.fixture
def run_dir(tmp_path):
    return _write_run(tmp_path / "run")


def test_table_values_match_numpy(run_dir):
    result = report([run_dir])
    by_lam = {s["penalty_coef"]: s for s in result["summaries"]}
    assert sorted(by_lam) == [1.0, 5.0]
    for lam, s in by_lam.items():
        final, last, fresh = _expected(run_dir, lam)
        assert (s["dataset"], s["rollout_length"], s["seeds"]) == ("hopper-medium", 5, (0, 1, 2))
        assert s["metric"] == "normalized_score" and s["min_window_evals"] == 10 // EVAL_EVERY
        np.testing.assert_allclose([s["final_mean"], s["final_std"]], [final.mean(), final.std(ddof=1)])
        np.testing.assert_allclose([s["last_k_mean"], s["last_k_std"]], [last.mean(), last.std(ddof=1)])
        np.testing.assert_allclose([s["final_eval_mean"], s["final_eval_std"]],
                                   [fresh.mean(), fresh.std(ddof=1)])
        assert s["preset"] == (lam == 5.0) and s["num_lambdas"] == 2  # hopper-medium: h=5, λ=5
        assert s["iqm"] is None and s["iqm_ci"] is None  # 3 seeds < 5
        line = next(row for row in result["table"].splitlines()[2:]
                    if row.split("|")[3].replace("(preset)", "").strip(" *") == f"{lam:g}")
        assert f"{final.mean():.1f} ± {final.std(ddof=1):.1f}" in line
        assert f"{last.mean():.1f} ± {last.std(ddof=1):.1f} (5 evals)" in line
        assert f"{fresh.mean():.1f} ± {fresh.std(ddof=1):.1f}" in line
    assert by_lam[5.0]["best"] and not by_lam[1.0]["best"]  # λ=5 has the higher last-10 mean
    rows = result["table"].splitlines()[2:]
    assert "| **5** (preset) |" in rows[0] and "best of 2 (optimistic)" in rows[0]  # headline row
    assert "| 1 |" in rows[1] and "optimistic" not in rows[1]
    assert "last 10 epochs" in result["table"] and REF in result["notes"]
    assert "optimistic" in result["notes"] and "fresh" in result["table"]
    assert result["reference_sources"] == [REF]
    text = (run_dir / "report.md").read_text()
    assert result["table"] in text and REF in text and "![learning curves](learning_curves.png)" in text


def test_pngs_exist_and_are_small(run_dir):
    result = report([run_dir])
    names = sorted(p.name for p in result["plots"])
    assert names == ["diagnostics_hopper-medium_h5.png", "learning_curves.png"]
    for path in result["plots"]:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < MAX_PNG_BYTES == 200_000
    assert not list(run_dir.glob("*.tmp"))


def test_raw_returns_and_iqm_with_five_seeds(tmp_path):
    """An OOD task (no normalised score) is reported in raw returns; 5 seeds get an IQM + CI."""
    run = _write_run(tmp_path / "ood", dataset="halfcheetah-jump", lams=(1.0,), seeds=range(5),
                     scored=False, torn=False)
    out = tmp_path / "elsewhere"
    result = report([run], out, plots=False)
    (s,) = result["summaries"]
    final, last, _ = _expected(run, 1.0, metric="eval_return")
    assert s["metric"] == "eval_return" and s["best"]
    np.testing.assert_allclose(s["final_mean"], final.mean())
    assert s["iqm"] == pytest.approx(np.sort(last)[1:4].mean())
    assert s["iqm_ci"] == pytest.approx(bootstrap_ci(last))
    assert s["iqm_ci"][0] <= s["iqm"] <= s["iqm_ci"][1]
    assert "raw return" in result["table"] and (out / "report.md").exists()
    assert not (run / "report.md").exists()


def test_runs_are_pooled_and_a_seed_counted_once(tmp_path):
    a = _write_run(tmp_path / "a", seeds=(0, 1))
    b = _write_run(tmp_path / "b", seeds=(2,))
    pooled = report([a, b], tmp_path / "out", plots=False)
    assert [s["seeds"] for s in pooled["summaries"]] == [(0, 1, 2), (0, 1, 2)]
    with pytest.raises(RunDirError, match="report each run once"):
        report([a, a], tmp_path / "out", plots=False)


def test_iqm_and_bootstrap_by_hand():
    assert iqm(np.array([100.0, 1.0, 2.0, 3.0, -50.0])) == pytest.approx(2.0)  # drops 1 each end
    assert iqm(np.arange(8.0)) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert iqm(np.array([1.0, 5.0])) == 3.0
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    lo, hi = bootstrap_ci(x, num_resamples=4000)
    assert 1.0 <= lo < iqm(x) < hi <= 6.0
    assert bootstrap_ci(x) == bootstrap_ci(x)  # seeded: reproducible
    assert bootstrap_ci(np.full(5, 7.0)) == (7.0, 7.0)


def test_table_works_without_matplotlib(run_dir, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = report([run_dir])
    assert result["plots"] == [] and "mopo_jax[plot]" in result["plots_skipped"]
    text = (run_dir / "report.md").read_text()
    assert "Plots skipped" in text and result["table"] in text
    assert not list(run_dir.glob("*.png"))


def test_cli_prints_the_table_and_exit_codes(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "| dataset | h | λ |" in out and "| **5** (preset) |" in out
    assert (tmp_path / "o" / "report.md").exists()
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no config.json" in capsys.readouterr().err
    no_metrics = tmp_path / "no_metrics"
    no_metrics.mkdir()
    (no_metrics / "config.json").write_text("{}")
    assert main([str(no_metrics)]) == 2
    assert "no metrics yet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_module_entry_point_fails_cleanly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mopo_jax.report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_short_curves_have_integer_epoch_ticks_no_offset_and_markers():
    """Reproducer: a 2-epoch run's curve had fractional epoch ticks and an offset-notation axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mopo_jax.report.plots import _draw, _epoch_axis

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    series = [(np.array([1, 2]), np.array([1000001.0, 1000002.5]))]
    assert _draw(ax, series, "λ=1")
    _epoch_axis(ax)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.xaxis.get_offset_text().get_text() == "" == ax.yaxis.get_offset_text().get_text()
    assert ax.get_lines()[0].get_marker() == "o"
