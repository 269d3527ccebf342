"""`python -m mopo_jax {train,data,dynamics,behavior,report} ...`: dispatch to the commands' CLIs."""

import importlib
import sys

COMMANDS = {"train": "mopo_jax.cli.train", "data": "mopo_jax.cli.data",
            "dynamics": "mopo_jax.cli.dynamics", "behavior": "mopo_jax.cli.behavior",
            "report": "mopo_jax.cli.report"}


def main(argv: list[str] | None = None) -> int:
    """Run `python -m mopo_jax COMMAND ARGS...`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m mopo_jax {" + ",".join(COMMANDS) + "} [--help | ARGS...]",
              file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
