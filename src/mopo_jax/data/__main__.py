"""`python -m mopo_jax.data`: see mopo_jax.cli.data."""

from mopo_jax.cli.common import exit_process
from mopo_jax.cli.data import main

exit_process(main())
