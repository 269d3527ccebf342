"""experiments/campaign.py end to end on a one-entry tiny queue: a run is started, shown finished,
skipped when run again, resumed (--resume) after losing its last epoch, and published."""

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mopo_jax import rundir

pytestmark = pytest.mark.slow  # one test: the campaign script end to end in subprocesses

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "campaign.py"
TRAIN_FLAGS = ["--", "--tiny", "--checkpoint-minutes", "0.0001"]  # a checkpoint after every epoch


def _campaign(*args, timeout=300):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def _status_in_process(*args):
    """Run `status` in a fresh interpreter and report whether it imported JAX."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import campaign; "
            "campaign.main(sys.argv[2:]); print('jax imported:', 'jax' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(SCRIPT.parent), "status", *map(str, args)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _epochs(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


@pytest.mark.slow
def test_campaign_runs_skips_resumes_and_publishes(data_dirs, tmp_path):
    queue = tmp_path / "queue.json"
    queue.write_text(json.dumps([{"dataset": "hopper-random", "seed": 0, "epochs": 2}]))
    root, results = tmp_path / "root", tmp_path / "results"
    opts = ["--root", root, "--results", results, "--queue-json", queue]
    run_dir, log = root / "hopper-random-seed0", root / "hopper-random-seed0" / "campaign.log"

    out = _campaign("run", *opts, *TRAIN_FLAGS)
    assert "hopper-random-seed0: finished" in out and _epochs(run_dir) == [1, 2]
    assert log.read_text().count("=== campaign: start") == 1
    status = _status_in_process(*opts)
    assert "jax imported: False" in status
    (line,) = [ln for ln in status.splitlines() if ln.startswith("hopper-random-seed0")]
    assert " finished " in line and "2/2" in line and "s/epoch" in line and "last-10 score" in line

    out = _campaign("run", *opts, *TRAIN_FLAGS)  # finished: skipped, no second training
    assert "finished, skipped" in out and log.read_text().count("=== campaign: start") == 1

    # lose the last epoch (its rows and checkpoint), as a kill would: the next run resumes it
    (run_dir / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    (run_dir / "results.json").unlink()
    shutil.rmtree(sorted((run_dir / "checkpoints").glob("gen-*"))[-1])
    assert "stopped" in _status_in_process(*opts)
    dry = _campaign("run", "--dry-run", *opts, *TRAIN_FLAGS)
    assert "--resume" in dry and "--tiny" in dry
    out = _campaign("run", *opts, *TRAIN_FLAGS)
    starts = [ln for ln in log.read_text().splitlines() if ln.startswith("=== campaign: start")]
    assert len(starts) == 2 and "--resume" in starts[1] and "--resume" not in starts[0]
    assert "resumed" in log.read_text() and _epochs(run_dir) == [1, 2]
    state = json.loads((run_dir / "campaign.json").read_text())
    assert state["state"] == "finished" and [a["returncode"] for a in state["attempts"]] == [0, 0]

    (folder,) = [p for p in results.iterdir()]  # one publication, no temporary folders left
    assert folder.name.endswith("-hopper-random") and folder.name[:4].isdigit()
    copied = folder / "hopper-random-seed0"
    assert {p.name for p in copied.iterdir()} == {"config.json", "results.json", "metrics.jsonl.gz",
                                                   "policies", "campaign_state.json"}
    assert json.loads((copied / "campaign_state.json").read_text())["attempts"] == state["attempts"]
    with gzip.open(copied / "metrics.jsonl.gz", "rt") as f:
        assert f.read() == (run_dir / "metrics.jsonl").read_text()
    assert {p.name for p in (copied / "policies").iterdir()} == {
        f"h5-lam1-seed0-{kind}.{ext}" for kind in ("best", "final") for ext in ("msgpack", "json")}
    assert {"report.md", "README.md", "learning_curves.png"} <= {p.name for p in folder.iterdir()}
    readme = (folder / "README.md").read_text()
    assert "python -m mopo_jax.train --dataset hopper-random --seed 0" in readme
    assert "git commit at publication" in readme and os.uname().machine in readme
    assert "The report failed" not in readme and "1 of 1 queued runs" in readme
    assert "(2 starts) |" in readme  # both starts recorded, none unrecorded


@pytest.mark.slow
def test_campaign_stop_checkpoints_the_running_epochs(data_dirs, tmp_path):
    """Reproducer: stopping the campaign lost the running run's epochs since its last periodic
    checkpoint (up to 10 minutes). `stop` now ends it with a checkpoint at its last epoch."""
    import time

    queue = tmp_path / "queue.json"
    queue.write_text(json.dumps([{"dataset": "hopper-random", "seed": 0, "epochs": 5000}]))
    opts = ["--root", tmp_path / "root", "--results", tmp_path / "results", "--queue-json", queue]
    run_dir = tmp_path / "root" / "hopper-random-seed0"
    campaign = subprocess.Popen([sys.executable, str(SCRIPT), "run", *map(str, opts), "--",
                                 "--tiny"], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not ((run_dir / "metrics.jsonl").exists() and _epochs(run_dir)):
            assert time.monotonic() < deadline and campaign.poll() is None
            time.sleep(0.5)
        # the running attempt is on record already (a campaign killed outright leaves it)
        (running,) = json.loads((run_dir / "campaign.json").read_text())["attempts"]
        assert "ended" not in running and "--epochs 5000" in running["command"]
        out = _campaign("stop", *opts)
    finally:
        campaign.kill()
    assert campaign.wait() == 128 + 15 and "stopped;" in out
    state = json.loads((run_dir / "campaign.json").read_text())
    assert state["state"] == "stopped" and state["returncode"] == 130
    (attempt,) = state["attempts"]
    assert attempt["returncode"] == 130 and attempt["seconds"] > 0 and "ended" in attempt
    epochs = _epochs(run_dir)
    assert epochs == list(range(1, len(epochs) + 1)) and epochs[-1] < 5000
    assert rundir.checkpoint_metadata(run_dir)["epoch"] == epochs[-1]
    assert "no campaign running" in _campaign("stop", *opts)


def test_a_running_child_is_ticked_until_it_exits(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    from campaign_proc import start_child

    ticks = []
    with open(tmp_path / "log", "w") as log:
        code = start_child([sys.executable, "-c", "import time; time.sleep(1.2); print('done')"],
                           log, on_tick=lambda: ticks.append(1), tick_s=0.25)
    assert code == 0 and 3 <= len(ticks) <= 5 and (tmp_path / "log").read_text() == "done\n"


def test_a_publication_in_progress_is_not_a_code_change():
    """Reproducer: a publication's README said the working tree had uncommitted changes because
    its own temporary folder under experiments/results was untracked."""
    sys.path.insert(0, str(SCRIPT.parent))
    from campaign_publish import code_changes

    before = code_changes()
    tmp = ROOT / "experiments" / "results" / f".2026-01-01-x.tmp-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        (tmp / "README.md").write_text("x")
        assert code_changes() == before != "unknown"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
