"""`python -m mopo_jax.report`: see mopo_jax.cli.report."""

from mopo_jax.cli.common import exit_process
from mopo_jax.cli.report import main

exit_process(main())
