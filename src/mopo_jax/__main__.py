"""`python -m mopo_jax {train,data,dynamics,behavior,report} ...`: dispatch to the commands' CLIs."""

import importlib
import sys

from mopo_jax.cli.common import exit_process

COMMANDS = {"train": "mopo_jax.cli.train", "data": "mopo_jax.cli.data",
            "dynamics": "mopo_jax.cli.dynamics", "behavior": "mopo_jax.cli.behavior",
            "report": "mopo_jax.cli.report"}
SUMMARIES = {
    "train": "the main job: dataset -> dynamics ensembles -> MOPO policies, in a run directory",
    "data": "build or download a dataset into the local cache and print its summary",
    "dynamics": "fit a dynamics ensemble alone (into the model cache train reads, or --out)",
    "behavior": "train a behaviour policy with online SAC, or export one (the medium/expert data)",
    "report": "tables and learning curves from one or more run directories",
}


def usage() -> str:
    """The top-level help: every command with one line."""
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m mopo_jax COMMAND [--help | ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS]
    lines += ["", "python -m mopo_jax COMMAND --help lists a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `python -m mopo_jax COMMAND ARGS...`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        wants_help = argv[:1] in (["-h"], ["--help"])
        print(usage(), file=sys.stdout if wants_help else sys.stderr)
        return 0 if wants_help else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    exit_process(main())
