"""`python -m mopo_jax.train`: the main job's entry point (the CLI lives in mopo_jax.cli.train)."""

from mopo_jax.cli.common import exit_process
from mopo_jax.cli.train import main

if __name__ == "__main__":
    exit_process(main())
