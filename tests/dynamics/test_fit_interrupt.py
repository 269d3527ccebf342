"""Ctrl-C (SIGINT) or SIGTERM during `python -m mopo_jax.dynamics` saves the fit and exits 130 with one
line, no traceback; running the same command again continues it to the model of an unstopped fit."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mopo_jax import checkpoint
from mopo_jax.cli.dynamics import main as dynamics_main
from mopo_jax.dynamics import io as dyn_io
from mopo_jax.dynamics.resumable import partial_prefix

pytestmark = pytest.mark.slow  # one test: a real CLI fit stopped by a signal and run again

ARGS = ["--dataset", "hopper-random", "--num-steps", "5000", "--offline", "--max-epochs", "12"]


@contextlib.contextmanager
def sigint_not_ignored():
    """A child started within gets SIGINT's default (KeyboardInterrupt in Python), even when this
    process ignores it (e.g. a shell's background job): an ignored signal stays ignored in a child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_and_stop(out, wait_for: str, sig: int):
    """Start the command, send `sig` once a stderr line contains `wait_for`; (status, stderr,
    seconds from the signal to the exit)."""
    with sigint_not_ignored():
        proc = subprocess.Popen(
            [sys.executable, "-m", "mopo_jax.dynamics", *ARGS, "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if wait_for in line:
                sent = time.monotonic()
                proc.send_signal(sig)
                break
        else:
            pytest.fail("the fit ended before the signal:\n" + "".join(lines))
        rest = proc.stderr.read()
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return status, "".join(lines) + rest, time.monotonic() - sent


def saved_epoch(stderr: str, out) -> int:
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: the dynamics fit is saved at epoch "), stderr
    assert last.endswith(f"({partial_prefix(out)}.msgpack); run the same command again to continue")
    return int(last.split("epoch ")[1].split()[0])


@pytest.mark.slow
def test_a_stopped_fit_continues_when_the_command_is_run_again(hopper_small, data_dirs, tmp_path,
                                                               capsys):
    out = tmp_path / "model"
    status, err, seconds = run_and_stop(out, "dynamics epoch 2 ", signal.SIGINT)
    assert status == 130 and "Traceback" not in err, err
    first = saved_epoch(err, out)
    assert 2 <= first < 12 and seconds < 30
    assert checkpoint.load_metadata(partial_prefix(out))["epoch"] == first

    status, err, _ = run_and_stop(out, f"dynamics epoch {first + 2} ", signal.SIGTERM)
    assert status == 130 and "Traceback" not in err, err
    assert f"dynamics: resuming the fit of seed 0 at epoch {first} from {partial_prefix(out)}" in err
    second = saved_epoch(err, out)
    assert second >= first + 2

    proc = subprocess.run([sys.executable, "-m", "mopo_jax.dynamics", *ARGS, "--out", str(out)],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming the fit of seed 0 at epoch {second} from" in proc.stderr
    assert f"dynamics epoch {second} " not in proc.stderr  # epochs before `second` are not rerun
    assert not checkpoint.pair_exists(partial_prefix(out))  # deleted once the model is saved

    assert dynamics_main([*ARGS, "--out", str(tmp_path / "straight")]) == 0
    capsys.readouterr()
    got, want = dyn_io.load(out)[0], dyn_io.load(tmp_path / "straight")[0]
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
