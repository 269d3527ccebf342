"""`python -m mopo_jax.behavior`: see mopo_jax.cli.behavior."""

from mopo_jax.cli.behavior import main
from mopo_jax.cli.common import exit_process

exit_process(main())
