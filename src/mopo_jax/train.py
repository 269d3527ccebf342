"""`python -m mopo_jax.train`: the main job's entry point (the CLI lives in mopo_jax.cli.train)."""

import sys

from mopo_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
