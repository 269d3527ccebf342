"""Placing many seeds on many devices: a 1-D device mesh over the seed axis and put helpers.

A batch of S seeds (every array with a leading axis S, e.g. `jax.vmap(fns.init)(keys)`) is split
over the devices of a mesh; the real data is replicated. `jax.jit` of a vmapped function then
runs each device's seeds where they live (computation follows the inputs' shardings), so no code
changes between one CPU, one GPU, 8 GPUs or a TPU slice.

Multi-host (several processes, e.g. a TPU pod or several GPU nodes): call
`jax.distributed.initialize()` first in every process, then build the mesh from `jax.devices()`
(all global devices) with `seed_mesh(num_seeds, devices=jax.devices())`. Each process must then
only read back the seeds on its own devices (`array.addressable_shards`); the `mopo_jax.train` CLI
reads every seed back for evaluation and so is single-host only.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seeds"


def seed_mesh(num_seeds: int, num_devices: int | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh (axis 'seeds') over the most devices that divide `num_seeds` evenly.

    Args:
      num_seeds: S, the size of the seed axis to split.
      num_devices: use at most this many devices (default: all of `devices`).
      devices: candidates (default: `jax.local_devices()`).
    Returns: Mesh with d devices, d the largest divisor of S with d ≤ min(num_devices, len(devices)).
    """
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}.")
    devices = list(jax.local_devices() if devices is None else devices)
    limit = len(devices) if num_devices is None else num_devices
    if limit < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
    limit = min(limit, len(devices))
    used = max(d for d in range(1, limit + 1) if num_seeds % d == 0)
    return Mesh(np.asarray(devices[:used]), (SEED_AXIS,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (seed) axis split over the mesh; use for state, stacked models, per-seed outputs."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on each device of the mesh; use for the real data or a shared model."""
    return NamedSharding(mesh, PartitionSpec())


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf [S, ...] of `tree` on `mesh`, split along its leading (seed) axis."""
    return jax.device_put(tree, seed_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put a full copy of every leaf of `tree` on each device of `mesh`."""
    return jax.device_put(tree, replicated(mesh))
