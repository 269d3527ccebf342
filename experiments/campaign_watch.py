"""The campaign's watching and control commands, `status` and `stop` (no JAX; returns in well under a second)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from campaign_history import status_lines
from campaign_lib import last_log_line, pid_alive, status_line
from campaign_proc import stop_process

CAMPAIGN_LOCK = ".campaign.lock"  # in the root: holds the running campaign's pid
CHECKOUT_RUNS = Path(__file__).resolve().parents[1] / "runs"  # where campaign.py keeps the caches


def campaign_pid(root: Path) -> int | None:
    """The pid of the campaign process running on `root`, or None."""
    try:
        pid = int((root / CAMPAIGN_LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid, needle="campaign") else None


def stop(root: Path) -> int:
    """Stop the campaign running on `root` (SIGTERM) and wait for it: its running train child
    finishes and checkpoints the chunk in flight, so the next `run` loses no epoch."""
    pid = campaign_pid(root)
    if pid is None:
        print(f"no campaign running on {root}")
        return 0
    print(f"stopping campaign process {pid} (its run checkpoints first; up to ~2 minutes)")
    if not stop_process(pid, lambda p: pid_alive(p, needle="campaign")):
        print(f"campaign process {pid} is still running; `kill -KILL {pid}` ends it at once")
        return 1
    print(f"stopped; {last_log_line(root)}")
    return 0


def show_status(entries, root: Path) -> int:
    """Print one line per queued run (and whether a campaign process holds the root). Output
    into a pipe that closes early (`status | head`) ends quietly."""
    try:
        _print_status(entries, root)
        sys.stdout.flush()  # here, so that a closed pipe raises inside this try
    except BrokenPipeError:  # the reader has gone: nothing is wrong, and Python must not
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # complain at exit
    return 0


def _print_status(entries, root: Path) -> None:
    pid = campaign_pid(root)
    alive = pid is not None
    running = f"campaign process {pid} running" if alive else "no campaign running"
    print(f"campaign root {root}: {running}")
    checkout = CHECKOUT_RUNS / "cache" / "campaign"
    if checkout != root and not any(root.glob("*/campaign.json")) and any(checkout.glob("*/campaign.json")):
        print(f"  (empty; {checkout} holds runs: `export MOPO_JAX_CACHE_DIR={checkout.parent} "
              f"MINARI_DATASETS_PATH={CHECKOUT_RUNS / 'minari'}` first)")
    for entry in entries:
        print(status_line(entry, root / entry.name))
    for line in status_lines(root):
        print(line)
