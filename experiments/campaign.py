"""The paper-scale MOPO campaign: its queue of runs, and the commands that run, watch and publish it.

    nohup nice -n 19 python experiments/campaign.py run > campaign.out 2>&1 &   # start or resume it
    python experiments/campaign.py run --only hopper-random --dry-run           # print the commands
    python experiments/campaign.py run -- --checkpoint-minutes 5                # extra train flags
    python experiments/campaign.py status                                       # one line per run
    python experiments/campaign.py stop                 # stop it; the running run checkpoints first
    python experiments/campaign.py publish [--only DATASET]                     # publish again
    python experiments/campaign.py prepare                                      # histories now
    python experiments/campaign.py restore      # published runs back into an empty root (lost cache)
    python experiments/campaign.py adopt packed.tar.gz   # finished runs from a device machine

On a machine whose home cache may be wiped between sessions (this project's was, once), keep
every cache inside the checkout's git-ignored runs/ folder, for every campaign command:

    export MOPO_JAX_CACHE_DIR=$PWD/runs/cache MINARI_DATASETS_PATH=$PWD/runs/minari

Runs go one at a time, in queue order, each in <root>/<name> (root: <mopo_jax cache>/campaign,
i.e. $MOPO_JAX_CACHE_DIR/campaign or ~/.cache/mopo_jax/campaign), as a child
`python -m mopo_jax.train ... --offline` (with --resume when the folder already holds a run)
whose output is appended to <run>/campaign.log. Finished runs are skipped. A failed run is logged
and the queue moves on; SIGINT/SIGTERM/SIGHUP go to the child and stop the queue. After each run
finishes, its group's finished runs are published to experiments/results/<date>-<group>/.
Before a medium-replay run, the behaviour history its dataset is cut from is trained when missing
(`campaign_history`; its output goes to <root>/behavior-<env>.log).
`status` reads JSON files only (no JAX) and returns in well under a second.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from campaign_lib import (LOG_FILE, Entry, holds_run, last_log_line, load_queue_json, now_iso,
                          progress, read_state, write_state)
from campaign_history import behavior_command, ensure_history, history_need, history_steps
from campaign_proc import Stop, raise_stop, run_logged, start_child
from campaign_publish import publish
from campaign_restore import adopt, restore
from campaign_watch import CAMPAIGN_LOCK, show_status, stop
from mopo_jax import paths

QUEUE = (
    *(Entry("hopper-random", s) for s in (0, 1, 2)),
    *(Entry("hopper-medium-replay", s) for s in (0, 1, 2)),
    *(Entry("walker2d-random", s) for s in (0, 1, 2)),
    *(Entry("halfcheetah-random", s) for s in (0, 1, 2)),
)
RESULTS = Path(__file__).resolve().parent / "results"
HEARTBEAT_S = 60.0  # seconds between updates of a running attempt's record


def default_root() -> Path:
    """The campaign root: <mopo_jax cache dir>/campaign (the cache honours $MOPO_JAX_CACHE_DIR)."""
    return paths.cache_dir() / "campaign"


def train_command(entry: Entry, run_dir: Path, extra: list[str]) -> list[str]:
    """The child's argv: the train CLI with the entry's settings, --resume when needed, `extra`."""
    cmd = [sys.executable, "-m", "mopo_jax.train", "--dataset", entry.dataset, "--seed",
           str(entry.seed), "--epochs", str(entry.epochs)]
    if entry.penalty_coef is not None:
        cmd += ["--penalty-coef", f"{entry.penalty_coef:g}"]
    if entry.rollout_length is not None:
        cmd += ["--rollout-length", str(entry.rollout_length)]
    cmd += ["--logdir", str(run_dir), "--offline"]
    return cmd + (["--resume"] if holds_run(run_dir) else []) + extra


def say(message: str, root: Path | None = None) -> None:
    """Print a timestamped campaign line (and append it to <root>/campaign.log)."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} campaign: {message}"
    print(line, flush=True)
    if root is not None and root.is_dir():
        with open(root / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def run_one(entry: Entry, run_dir: Path, cmd: list[str]) -> int | None:
    """Run the train child for `entry`, its output appended to the run's log; returns its exit
    code. The attempt is recorded in the run's state as it runs (its seconds every HEARTBEAT_S), so
    a campaign killed outright still leaves it. On KeyboardInterrupt/Stop the child gets the
    signal, the state says stopped, and the exception propagates."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(run_dir)
    prior, attempt = state.get("attempts", []), {"started": now_iso(), "command": shlex.join(cmd)}
    start, code, outcome, child = time.monotonic(), None, None, []

    def save(**run_fields) -> None:
        attempt["seconds"] = round(time.monotonic() - start, 1)
        write_state(run_dir, state | run_fields | {"attempts": prior + [attempt]})

    def running(proc) -> None:
        child.append(proc)
        save(state="running", pid=proc.pid, campaign_pid=os.getpid())

    with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"\n=== campaign: start {attempt['started']}: {attempt['command']}\n")
        log.flush()
        try:
            code = start_child(cmd, log, on_start=running, on_tick=lambda: save(
                state="running", pid=child[0].pid, campaign_pid=os.getpid()), tick_s=HEARTBEAT_S)
        except (KeyboardInterrupt, Stop):
            code, outcome = (child[0].returncode if child else None), "stopped"
            raise
        finally:
            attempt |= {"ended": now_iso(), "returncode": code}
            if outcome is None:
                outcome = "finished" if progress(run_dir, entry.epochs).complete else "failed"
            save(state=outcome, pid=None, returncode=code)
            log.write(f"=== campaign: {outcome} {attempt['ended']} (exit {code})\n")
    return code


def _publish(group: str, queue, root: Path, results: Path) -> None:
    """Publish `group`; a failure is reported and does not stop the queue."""
    try:
        publish(group, queue, root, results, "python " + shlex.join(sys.argv),
                say=lambda m: say(m, root))
    except Exception as err:  # noqa: BLE001 - a broken publication must not end the campaign
        say(f"publishing {group} failed: {type(err).__name__}: {err}", root)


def _lock_campaign(root: Path):
    """Hold <root>/.campaign.lock for this process; exits when another campaign runs."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / CAMPAIGN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"another campaign is running on {root} (pid {os.pread(fd, 32, 0).decode().strip()})")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run_queue(entries, queue, root: Path, results: Path, extra: list[str], dry_run: bool,
              publish_runs: bool = True) -> int:
    """Start or resume every entry in order, publishing each finished run's group unless
    `publish_runs` is False; returns 0, 1 (a run failed) or 128+signal (stopped)."""
    failed, lock, current = [], None if dry_run else _lock_campaign(root), ""
    try:
        for entry in entries:
            current = entry.name
            if not _queue_step(entry, queue, root, results, extra, dry_run, publish_runs):
                failed.append(entry.name)
    except (KeyboardInterrupt, Stop) as err:
        say(f"{current}: stopped ({str(err) or 'SIGINT'}); the queue stops here", root)
        return 128 + (err.signum if isinstance(err, Stop) else signal.SIGINT)
    finally:
        if lock is not None:
            os.close(lock)
    if failed:
        say(f"done; failed runs: {', '.join(failed)}", None if dry_run else root)
    return 1 if failed else 0


def _queue_step(entry: Entry, queue, root: Path, results: Path, extra: list[str],
                dry_run: bool, publish_runs: bool = True) -> bool:
    """Skip (publishing if still unpublished), print, or run one entry; False when it failed."""
    run_dir = root / entry.name
    if progress(run_dir, entry.epochs).complete:
        say(f"{entry.name}: finished, skipped", None if dry_run else root)
        if not dry_run and publish_runs and not read_state(run_dir).get("published"):
            _publish(entry.group, queue, root, results)
        return True
    if not _history_ready(entry, root, dry_run):
        return False
    cmd = train_command(entry, run_dir, extra)
    if dry_run:
        print(shlex.join(["python", *cmd[1:]]))
        return True
    say(f"{entry.name}: starting {shlex.join(['python', *cmd[1:]])}", root)
    code = run_one(entry, run_dir, cmd)
    if progress(run_dir, entry.epochs).complete:
        say(f"{entry.name}: finished", root)
        if publish_runs:
            _publish(entry.group, queue, root, results)
        return True
    say(f"{entry.name}: FAILED (exit {code}): {last_log_line(run_dir, 300)}; see "
        f"{run_dir / LOG_FILE}; next run", root)
    return False


def _history_ready(entry: Entry, root: Path, dry_run: bool) -> bool:
    """Train the behaviour history the entry's dataset is cut from when it is missing
    (`campaign_history`); False when it cannot be had. A dry run prints that command instead."""
    need = history_need(entry.dataset)
    if need is None:
        return True
    if dry_run:
        if history_steps(need.run_dir) < need.step:
            print(shlex.join(["python", *behavior_command(need)[1:]]))
        return True
    if ensure_history(need, root, run_logged, lambda message: say(message, root)):
        return True
    say(f"{entry.name}: FAILED: the behaviour history its dataset is cut from is not available; "
        "next run", root)
    return False


def prepare(entries, root: Path) -> int:
    """Train now what the entries' datasets need before their runs (`campaign_history`), e.g.
    beside a running queue; 0 when all of it is there."""
    needs = {d: history_need(d) for d in dict.fromkeys(e.dataset for e in entries)}
    if not any(needs.values()):
        say("nothing to prepare: the queued datasets are built or need no behaviour history", root)
    ready = True
    for dataset, need in needs.items():
        if need is None:
            continue
        if ensure_history(need, root, run_logged, lambda m: say(m, root)):
            say(f"{dataset}: its behaviour history is ready ({need.step} steps in {need.run_dir}, "
                "the snapshot there has the shipped medium weights)", root)
        else:
            ready = False
    return 0 if ready else 1


def build_parser() -> argparse.ArgumentParser:
    """The subcommands run, status and publish, with their shared options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=None, help="campaign root (default: "
                        "<mopo_jax cache>/campaign, i.e. $MOPO_JAX_CACHE_DIR or ~/.cache/mopo_jax)")
    common.add_argument("--only", metavar="DATASET", help="only this dataset's (group's) runs")
    common.add_argument("--queue-json", type=Path, help="a JSON list of entries instead of QUEUE")
    common.add_argument("--results", type=Path, default=RESULTS, help="where to publish")
    parser = argparse.ArgumentParser(prog="python experiments/campaign.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common],
                         help="start or resume the queue (train flags after --)")
    run.add_argument("--dry-run", action="store_true", help="print the commands only")
    run.add_argument("--no-publish", action="store_true", help="leave finished runs unpublished "
                     "(a device machine's runs, copied back and published here)")
    sub.add_parser("status", parents=[common], help="one line per queued run")
    sub.add_parser("publish", parents=[common], help="publish every group with finished runs")
    sub.add_parser("stop", parents=[common], help="stop the running campaign; its run "
                   "checkpoints the epochs in flight first")
    sub.add_parser("prepare", parents=[common], help="train the behaviour histories that queued "
                   "medium-replay runs need, now (the queue's run does it before them otherwise)")
    sub.add_parser("adopt", parents=[common], help="put the finished runs of a device's "
                   "packed.tar.gz (experiments/gpu/README.md) into the root").add_argument(
                       "archive", type=Path, help="the packed.tar.gz a device command brought back")
    sub.add_parser("restore", parents=[common], help="put the runs published under --results back "
                   "into the root where their folders are missing (e.g. the cache was wiped), so "
                   "that `run` skips them and publishes them with the rest of their group")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: `run [--only D] [--dry-run] [-- TRAIN FLAGS]`, `status`, `publish`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    queue = load_queue_json(args.queue_json) if args.queue_json else QUEUE
    entries = [e for e in queue if args.only in (None, e.dataset, e.group)]
    if not entries:
        sys.exit(f"--only {args.only}: not in the queue ({sorted({e.group for e in queue})})")
    root = (args.root or default_root()).expanduser().resolve()
    if args.command == "status":
        return show_status(entries, root)
    if args.command == "stop":
        return stop(root)
    if args.command == "prepare":
        root.mkdir(parents=True, exist_ok=True)
        return prepare(entries, root)
    if args.command == "adopt":
        epochs = {e.name: e.epochs for e in queue}
        for run, what in adopt(args.archive, root, epochs):
            print(f"{run}: {what}")
        return 0
    if args.command == "restore":
        groups = None if args.only is None else {e.group for e in entries}
        for run, restored in restore(args.results, root, groups):
            print(f"{run}: {'restored' if restored else 'kept (the root already has it)'}")
        return 0
    if args.command == "publish":
        for group in dict.fromkeys(e.group for e in entries):
            if publish(group, queue, root, args.results, "python " + shlex.join(sys.argv)) is None:
                print(f"{group}: no finished run to publish")
        return 0
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:  # under nohup, SIGHUP stays ignored
            signal.signal(signum, raise_stop)
    return run_queue(entries, queue, root, args.results, extra, args.dry_run,
                     publish_runs=not args.no_publish)


if __name__ == "__main__":
    sys.exit(main())
