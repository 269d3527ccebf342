"""Placing many seeds on many devices: a 1-D device mesh over the seed axis and put helpers.

A batch of S seeds (every array with a leading axis S, e.g. `jax.vmap(fns.init)(keys)`) is split
over the devices of a mesh; the real data is replicated. `jax.jit` of a vmapped function then
runs each device's seeds where they live (computation follows the inputs' shardings), so no code
changes between one CPU, one GPU, 8 GPUs or a TPU slice.

Several processes (a TPU pod, several GPU nodes, or local CPU processes): after
`jax.distributed.initialize(...)` in every process, `jax.devices()` lists every process's devices
and the mesh spans them all. `shard_seeds`/`replicate` then build global arrays from values every
process holds in full, `owned_rows` says which seeds live on this process's devices, and `gather`
brings a sharded tree back whole to every process (a collective: every process must call it).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mopo_jax import checkpoint

SEED_AXIS = "seeds"


def seed_mesh(num_seeds: int, num_devices: int | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh (axis 'seeds') over the most devices that divide `num_seeds` evenly.

    Args:
      num_seeds: S, the size of the seed axis to split.
      num_devices: use at most this many devices (default: all of `devices`).
      devices: candidates (default: `jax.devices()`, every process's devices).
    Returns: Mesh with d devices, d the largest divisor of S with d ≤ min(num_devices, len(devices)).
    """
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}.")
    devices = list(jax.devices() if devices is None else devices)
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


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """`tree` on `sharding`; across processes every process must pass the same full values."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    # device_put cannot target other processes' devices; a jit whose output has the global
    # sharding can, from host values each process holds in full (keys travel as their raw data).
    data = jax.device_get(checkpoint.keys_to_data(tree))
    return jax.jit(lambda d: checkpoint.keys_from_data(d, tree), out_shardings=sharding)(data)


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf [S, ...] of `tree` on `mesh`, split along its leading (seed) axis."""
    return _put(tree, seed_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put a full copy of every leaf of `tree` on each device of `mesh`."""
    return _put(tree, replicated(mesh))


def owned_rows(array: jax.Array) -> np.ndarray:
    """Sorted indices along the leading (seed) axis of `array` held by this process's devices."""
    rows = set()
    for shard in array.addressable_shards:
        rows.update(range(*shard.index[0].indices(array.shape[0])) if shard.index else [0])
    return np.asarray(sorted(rows), np.int64)


def gather(tree: Any) -> Any:
    """Host (numpy) copies of every leaf of `tree`, whole, in every process (typed PRNG keys come
    back as their raw uint32 data). Several processes: a collective every process must call."""
    data = checkpoint.keys_to_data(tree)
    if all(x.is_fully_addressable for x in jax.tree.leaves(data) if isinstance(x, jax.Array)):
        return jax.device_get(data)
    from jax.experimental import multihost_utils  # only needed with several processes

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(data, tiled=True))


def combine_rows(local: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Every process's rows of a per-seed result, whole, in every process.

    Args:
      local: [len(rows), ...] this process's results, for seeds `rows` (from `owned_rows`).
      num_rows: S, the size of the full seed axis.
    Returns: [S, ...]. Several processes: a collective every process must call; the rows of the
    processes are disjoint, so adding zero-filled copies reproduces every value exactly.
    """
    full = np.zeros((num_rows, *local.shape[1:]), local.dtype)
    full[rows] = local
    if jax.process_count() == 1:
        return full
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(full)).sum(0).astype(local.dtype)


def broadcast_flag(flag: bool) -> bool:
    """Process 0's `flag`, in every process (so all take the same branch at a collective)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def any_process_flag(flag: bool) -> bool:
    """Whether `flag` is True in any process, in every process (a collective, so every process
    calls it)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.asarray(flag))).any())


def processes_differing(digest: bytes) -> list[int]:
    """Indices of the processes whose `digest` (same length everywhere) differs from process 0's,
    known to every process ([] in a single process): a collective, so every process calls it."""
    if jax.process_count() == 1:
        return []
    from jax.experimental import multihost_utils

    mine = np.frombuffer(digest, np.uint8)
    first = multihost_utils.broadcast_one_to_all(mine)
    same = multihost_utils.process_allgather(np.asarray(np.array_equal(mine, first)))
    return [int(i) for i in np.flatnonzero(~np.asarray(same, bool).ravel())]


def barrier(name: str) -> None:
    """Wait until every process reaches this point (nothing to wait for in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
