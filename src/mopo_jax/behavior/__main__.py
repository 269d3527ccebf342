"""`python -m mopo_jax.behavior`: see mopo_jax.cli.behavior."""

import sys

from mopo_jax.cli.behavior import main

sys.exit(main())
