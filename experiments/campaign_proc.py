"""The campaign's child processes: started in their own session with output appended to a log,
stopped with the signal the campaign got (killed after a grace period)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from campaign_lib import now_iso

STOP_GRACE_S = 120  # seconds a stopped child gets to exit before it is killed


class Stop(BaseException):
    """A SIGTERM/SIGHUP arrived: stop the child and the queue (a BaseException, like Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_stop(signum, frame):
    """A signal handler: raise Stop."""
    raise Stop(signum)


def _stop_child(proc: subprocess.Popen, signum: int) -> None:
    """Forward `signum` to the child; kill it after STOP_GRACE_S or on a second interruption."""
    try:
        proc.send_signal(signum)
        proc.wait(timeout=STOP_GRACE_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt, Stop):
        proc.kill()
        proc.wait()


def start_child(cmd: list[str], log, on_start=lambda proc: None, on_tick=lambda: None,
                tick_s: float = 60.0) -> int | None:
    """Run `cmd` in its own session, its output appended to the open file `log`, and wait; returns
    its exit code (None when it could not start); `on_start(proc)` runs once it has started and
    `on_tick()` every `tick_s` seconds while it runs. On KeyboardInterrupt/Stop the child gets the
    signal (`_stop_child`) and the exception propagates."""
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except OSError as err:
        log.write(f"campaign: could not start the child: {err}\n")
        return None
    on_start(proc)
    try:
        while True:
            try:
                return proc.wait(timeout=tick_s)
            except subprocess.TimeoutExpired:
                on_tick()
    except (KeyboardInterrupt, Stop) as err:
        _stop_child(proc, err.signum if isinstance(err, Stop) else signal.SIGINT)
        raise


def run_logged(cmd: list[str], log_path: Path) -> int | None:
    """`start_child` with its output appended to `log_path`, between start and exit lines."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n=== campaign: start {now_iso()}: {shlex.join(cmd)}\n")
        log.flush()
        code = start_child(cmd, log)
        log.write(f"=== campaign: exit {code} {now_iso()}\n")
    return code


def stop_process(pid: int, alive, timeout_s: float = STOP_GRACE_S + 30) -> bool:
    """SIGTERM `pid` and wait until `alive(pid)` is False; returns whether it ended in time (a
    campaign forwards the signal to its child, which checkpoints its chunk in flight and exits)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True
