"""`python -m mopo_jax.dynamics`: see mopo_jax.cli.dynamics."""

import sys

from mopo_jax.cli.dynamics import main

sys.exit(main())
