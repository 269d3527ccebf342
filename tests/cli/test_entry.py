"""`python -m mopo_jax`: the top-level help lists every command with one line; unknown commands
fail; an interrupted command's process ends with 130, also when XLA was compiling."""

import subprocess
import sys

from mopo_jax.__main__ import COMMANDS, main

# An interrupt that lands while XLA compiles (as SIGTERM can, in `train`'s policy phase), then
# the command's exit. Reproducer: with sys.exit this process died of SIGSEGV at shutdown (139).
INTERRUPTED_COMPILE = """
import signal, sys
import jax, jax.numpy as jnp
from mopo_jax.cli.common import exit_process

def slow_to_compile(x):
    return jax.lax.fori_loop(0, 2000, lambda i, x: jnp.sin(x) @ x, x, unroll=True)

def interrupt(signum, frame):
    raise KeyboardInterrupt

lowered = jax.jit(slow_to_compile).lower(jnp.ones((8, 8)))
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    lowered.compile()
    print("compiled")
except KeyboardInterrupt:
    print("interrupted", end="")  # unflushed: exit_process must flush it
exit_process(130)
"""


def test_help_lists_every_command_with_a_line(capsys):
    """Reproducer: `python -m mopo_jax --help` printed one usage line."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 20, line  # a real description
    assert main(["bogus"]) == 2 and "commands:" in capsys.readouterr().err
    assert main([]) == 2


def test_an_interrupt_during_compilation_exits_130_not_sigsegv():
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_COMPILE], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.stdout == "interrupted", proc.stdout + proc.stderr[-2000:]
    assert proc.returncode == 130, proc.stderr[-2000:]
