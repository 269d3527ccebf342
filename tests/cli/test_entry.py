"""`python -m mopo_jax`: the top-level help lists every command with one line; unknown commands fail."""

from mopo_jax.__main__ import COMMANDS, main


def test_help_lists_every_command_with_a_line(capsys):
    """Reproducer: `python -m mopo_jax --help` printed one usage line."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 20, line  # a real description
    assert main(["bogus"]) == 2 and "commands:" in capsys.readouterr().err
    assert main([]) == 2
