"""experiments/gpu/detached.py: a job started in its own session outlives the command that started
it, is started once, is followed by `wait` (exit 3 while it runs, then its own exit code), and its
results come back packed without a run's checkpoints."""

import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu" / "detached.py"


def _detached(*args, timeout=60):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_a_detached_job_is_started_once_followed_and_packed(tmp_path):
    state, out, run = tmp_path / "job", tmp_path / "out", tmp_path / "run"
    (run / "checkpoints" / "gen-00000001").mkdir(parents=True)
    (run / "checkpoints" / "gen-00000001" / "state.msgpack").write_bytes(b"x" * 1000)
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / ".lock").write_text("123\n")
    job = (f"echo first; sleep 1.5; mkdir -p {state}/out; echo summary > {state}/out/s.json; "
           "echo second; exit 4")
    started = time.monotonic()
    assert _detached("start", "--state", state, "--", "sh", "-c", job).returncode == 0
    assert time.monotonic() - started < 10  # `start` returns at once
    again = _detached("start", "--state", state, "--", "sh", "-c", "echo must not run")
    assert again.returncode == 0 and "not starting it again" in again.stdout

    early = _detached("wait", "--state", state, "--seconds", "0", "--out", out, "--pack", run)
    assert early.returncode == 3 and "still runs" in early.stdout
    done = _detached("wait", "--state", state, "--seconds", "30", "--out", out, "--pack", run)
    assert done.returncode == 4 and "first" in done.stdout and "second" in done.stdout
    assert "must not run" not in (state / "job.log").read_text()
    assert (out / "s.json").read_text() == "summary\n"
    with tarfile.open(out / "packed.tar.gz") as tar:
        names = set(tar.getnames())
    assert names == {"job.log", "run", "run/metrics.jsonl"}  # no checkpoints, no lock


def test_wait_without_a_started_job_says_so(tmp_path):
    got = _detached("wait", "--state", tmp_path / "none", "--seconds", "1")
    assert got.returncode == 2 and "no job was started" in got.stdout
