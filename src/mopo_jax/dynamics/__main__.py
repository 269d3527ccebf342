"""`python -m mopo_jax.dynamics`: see mopo_jax.cli.dynamics."""

from mopo_jax.cli.common import exit_process
from mopo_jax.cli.dynamics import main

exit_process(main())
