"""A job that outlives the device command that started it: start it once, wait for it from each command.

    python3 experiments/gpu/detached.py start --state DIR -- CMD ...   # no-op if it runs already
    python3 experiments/gpu/detached.py wait --state DIR --seconds S --out $OUT [--pack PATH ...]

A device command's own processes are killed when it returns, but one in a new process session
runs on while the machine stays warm (the next command comes within its idle window). So one long
job (the GPU check with a campaign run) can span two commands without being stopped and resumed,
which would cost a reload and a recompilation. `start` launches CMD with setsid, its output in
DIR/job.log and its exit code written to DIR/rc when it ends. `wait` prints the log's new lines
as they come until the job ends or S seconds pass, then copies the files of DIR/out (the job's
summaries) into --out, with packed.tar.gz: the job's log and each --pack path (a run folder
without its checkpoints: config, metrics, results, policies, campaign records; a folder of logs).
Exit code: the job's own when it ended, 3 while it still runs, 2 when no job was started in DIR.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

POLL_S = 5.0
SKIP = ("checkpoints", ".lock")  # a run folder's parts that stay behind (the state is 100+ MiB)


def start(state: Path, cmd: list[str]) -> int:
    """Launch `cmd` in a new session unless a job of `state` is running or done; returns 0."""
    state.mkdir(parents=True, exist_ok=True)
    if (state / "pid").exists():
        print(f"detached: the job in {state} was started already; not starting it again", flush=True)
        return 0
    wrapper = ["sh", "-c", '"$@" >> "$JOB_STATE/job.log" 2>&1; echo $? > "$JOB_STATE/rc.tmp"; '
               'mv "$JOB_STATE/rc.tmp" "$JOB_STATE/rc"', "job", *cmd]
    proc = subprocess.Popen(wrapper, env={**os.environ, "JOB_STATE": str(state)},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    (state / "pid").write_text(f"{proc.pid}\n")
    print(f"detached: started pid {proc.pid}: {' '.join(cmd)}", flush=True)
    return 0


def _pack(paths: list[Path], dest: Path) -> None:
    """A gzipped tar of the existing `paths` (each under its own name) without SKIP, written
    atomically."""
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in paths:
            if path.exists():
                tar.add(path, arcname=path.name,
                        filter=lambda info: None if Path(info.name).name in SKIP else info)
    tmp.replace(dest)


def wait(state: Path, seconds: float, out: Path | None, pack: list[Path]) -> int:
    """Follow the job's log until it ends or `seconds` pass; copy its results; its exit code,
    3 while it runs, 2 when none was started."""
    if not (state / "pid").exists():
        print(f"detached: no job was started in {state}", flush=True)
        return 2
    log, offset, deadline = state / "job.log", 0, time.monotonic() + seconds
    while True:
        if log.exists():
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        done = (state / "rc").exists()
        if done or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted((state / "out").glob("*")) if (state / "out").is_dir() else []:
            if path.is_file():
                shutil.copyfile(path, out / path.name)
        _pack([log, *pack], out / "packed.tar.gz")
        print(f"detached: copied to {out}: {' '.join(sorted(p.name for p in out.iterdir()))}",
              flush=True)
    if not done:
        print(f"detached: the job still runs after {seconds:.0f} s (exit 3; `wait` again)", flush=True)
        return 3
    rc = int((state / "rc").read_text().strip() or 1)
    print(f"detached: the job ended with exit code {rc}", flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    """Entry point: start or wait; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("start", "wait"))
    p.add_argument("--state", type=Path, required=True, help="the job's folder")
    p.add_argument("--seconds", type=float, default=0.0, help="wait: how long to follow the job")
    p.add_argument("--out", type=Path, help="wait: where to copy the job's results")
    p.add_argument("--pack", type=Path, action="append", default=[],
                   help="wait: a file or folder to add to --out/packed.tar.gz (repeatable)")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.action == "start":
        if not cmd:
            p.error("start needs the job's command after --")
        return start(args.state, cmd)
    return wait(args.state, args.seconds, args.out, args.pack)


if __name__ == "__main__":
    sys.exit(main())
