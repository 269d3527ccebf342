"""`python -m mopo_jax.data`: see mopo_jax.cli.data."""

import sys

from mopo_jax.cli.data import main

sys.exit(main())
