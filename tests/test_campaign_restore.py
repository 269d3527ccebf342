"""experiments/campaign_restore.py: published runs go back into an empty campaign root (a wiped
cache) so that the campaign skips them, and a republication shows the same rows as before; and
`status` into a closed pipe."""

import gzip
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import campaign_lib  # noqa: E402
import campaign_publish  # noqa: E402
import campaign_restore  # noqa: E402

# the newest hopper-random publication: a new one replaces the older ones
PUBLICATION = sorted((ROOT / "experiments" / "results").glob("*-hopper-random/campaign.json"))[-1].parent
PUBLISHED_RUNS = tuple(json.loads((PUBLICATION / "campaign.json").read_text())["runs"])
RUNS = ("hopper-random-seed0", "hopper-random-seed1")  # in every publication of the group


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(PUBLICATION, results / PUBLICATION.name)
    return results


def _published_row(run: str) -> str:
    return next(line for line in (PUBLICATION / "README.md").read_text().splitlines()
                if line.startswith(f"| {run} |"))


def test_restored_runs_are_finished_and_republish_with_the_same_rows(tmp_path):
    """Reproducer: the campaign's cache was lost between sessions, and `run` would have trained
    the published seeds 0 and 1 again from nothing."""
    results, root = _results(tmp_path), tmp_path / "root"
    assert campaign_restore.restore(results, root) == [(run, True) for run in PUBLISHED_RUNS]
    for run in PUBLISHED_RUNS:
        run_dir, src = root / run, PUBLICATION / run
        assert campaign_lib.progress(run_dir, 1000).complete
        with gzip.open(src / "metrics.jsonl.gz", "rt") as f:
            assert (run_dir / "metrics.jsonl").read_text() == f.read()
        assert (run_dir / "results.json").read_bytes() == (src / "results.json").read_bytes()
        assert sorted(p.name for p in (run_dir / "policies").iterdir()) == sorted(
            p.name for p in (src / "policies").iterdir())
        state = campaign_lib.read_state(run_dir)
        published = json.loads((PUBLICATION / "campaign.json").read_text())["published"]
        assert state["state"] == "finished" and state["published"] == published
        row = campaign_publish._run_row(campaign_lib.Entry("hopper-random", int(run[-1])), run_dir)
        # the wall-clock of the attempts is carried: verbatim (an older publication), or as the
        # attempts and the count of logged starts
        assert row == _published_row(run)
    assert not list(root.glob(".*restoring"))  # assembled aside, renamed into place
    assert campaign_restore.restore(results, root) == [(run, False) for run in PUBLISHED_RUNS]


def test_a_published_state_brings_back_the_attempts(tmp_path):
    results, root = _results(tmp_path), tmp_path / "root"
    attempts = [{"started": "2026-12-01T00:00:00+0000", "seconds": 7200.0, "returncode": 0}]
    saved = results / PUBLICATION.name / RUNS[0] / campaign_restore.RUN_STATE_COPY
    saved.write_text(json.dumps({"state": "finished", "attempts": attempts, "starts_logged": 3}))
    campaign_restore.restore(results, root)
    state = campaign_lib.read_state(root / RUNS[0])
    assert state["attempts"] == attempts and "wall_clock" not in state
    row = campaign_publish._run_row(campaign_lib.Entry("hopper-random", 0), root / RUNS[0])
    assert "| 2.0 h (1 starts, 2 more unrecorded) |" in row  # the log stayed behind, its count not


def test_a_run_already_in_the_root_is_left_alone(tmp_path):
    results, root = _results(tmp_path), tmp_path / "root"
    (root / RUNS[1]).mkdir(parents=True)
    (root / RUNS[1] / "metrics.jsonl").write_text('{"epoch": 1}\n')
    got = dict(campaign_restore.restore(results, root))
    assert got[RUNS[0]] is True and got[RUNS[1]] is False
    assert (root / RUNS[1] / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_the_campaign_skips_restored_runs_and_no_publish_publishes_nothing(tmp_path):
    results, root = _results(tmp_path), tmp_path / "root"
    queue = tmp_path / "queue.json"
    queue.write_text(json.dumps([{"dataset": "hopper-random", "seed": 0}]))
    script, opts = ROOT / "experiments" / "campaign.py", ["--root", root, "--queue-json", queue]
    out = subprocess.run([sys.executable, script, "restore", "--results", results, *opts],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "hopper-random-seed0: restored" in out and "hopper-random-seed1: restored" in out
    state = campaign_lib.read_state(root / RUNS[0])
    campaign_lib.write_state(root / RUNS[0], {k: v for k, v in state.items() if k != "published"})
    fresh = tmp_path / "fresh-results"
    proc = subprocess.run([sys.executable, script, "run", "--no-publish", "--results", fresh,
                           *opts], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "hopper-random-seed0: finished, skipped" in proc.stdout
    assert not fresh.exists() and "starting" not in proc.stdout


def test_status_points_from_an_empty_root_to_the_checkouts_caches(tmp_path, monkeypatch, capsys):
    """A new session that forgot the cache exports must not read 'pending' as the campaign's state."""
    import campaign  # noqa: E402
    import campaign_watch  # noqa: E402

    results, runs = _results(tmp_path), tmp_path / "checkout-runs"
    campaign_restore.restore(results, runs / "cache" / "campaign")
    monkeypatch.setattr(campaign_watch, "CHECKOUT_RUNS", runs)
    assert campaign.main(["status", "--root", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert f"export MOPO_JAX_CACHE_DIR={runs / 'cache'} MINARI_DATASETS_PATH={runs / 'minari'}" in out
    assert campaign.main(["status", "--root", str(runs / "cache" / "campaign")]) == 0
    assert "export" not in capsys.readouterr().out


def test_adopt_takes_finished_device_runs_and_refuses_unfinished_ones(tmp_path):
    """A device command's packed.tar.gz (detached.py's format): its finished run goes into the
    root, the one its budget stopped (checkpoint left on the device) does not."""
    sys.path.insert(0, str(ROOT / "experiments" / "gpu"))
    import detached  # noqa: E402

    device = tmp_path / "device"
    campaign_restore.restore(_results(tmp_path), device)
    shutil.rmtree(device / RUNS[0])
    stopped = device / "hopper-random-seed9"  # the H200 run of seed 2, stopped at epoch 320
    shutil.copytree(ROOT / "experiments" / "results" / "2026-12-04-gpu-check-h200" /
                    "hopper-random-seed2-epoch320", stopped)
    with gzip.open(stopped / "metrics.jsonl.gz", "rt") as f:
        (stopped / "metrics.jsonl").write_text(f.read())
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "policy.log").write_text("log\n")
    (tmp_path / "job.log").write_text("job\n")
    archive = tmp_path / "packed.tar.gz"
    detached._pack([tmp_path / "job.log", device / RUNS[1], stopped, tmp_path / "logs"], archive)

    root = tmp_path / "root"
    got = campaign_restore.adopt(archive, root, {"hopper-random-seed9": 1000})
    assert got[0] == (RUNS[1], "adopted") and got[1][0] == "hopper-random-seed9"
    assert got[1][1].startswith("refused: unfinished (320/1000 epochs")
    assert sorted(p.name for p in root.iterdir()) == [RUNS[1]]  # no logs, no temporary folders
    assert campaign_lib.progress(root / RUNS[1], 1000).complete
    assert (root / RUNS[1] / "metrics.jsonl").read_bytes() == (device / RUNS[1] / "metrics.jsonl").read_bytes()
    assert campaign_restore.adopt(archive, root, {})[0] == (RUNS[1], "kept: the root already has it")
    out = subprocess.run([sys.executable, ROOT / "experiments" / "campaign.py", "adopt", archive,
                          "--root", tmp_path / "root2"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert f"{RUNS[1]}: adopted" in out and "hopper-random-seed9: refused" in out


def test_status_into_a_closed_pipe_ends_quietly(tmp_path):
    """Reproducer: `campaign.py status | head -1` printed a BrokenPipeError traceback."""
    script = ROOT / "experiments" / "campaign.py"
    command = (f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} status --root "
               f"{shlex.quote(str(tmp_path))} | head -c 0; exit ${{PIPESTATUS[0]}}")
    proc = subprocess.run(command, shell=True, executable="/bin/bash", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
