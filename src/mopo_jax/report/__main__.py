"""`python -m mopo_jax.report`: see mopo_jax.cli.report."""

import sys

from mopo_jax.cli.report import main

sys.exit(main())
