"""Circular FIFO model buffer as a pytree (add valid rows, sample filled rows); real/model batch mixing.

Invariant: rows are written at consecutive circular positions starting at index 0, so while the
buffer is not yet full the filled rows are exactly [0, count), and once full every row is filled.
Sampling therefore draws indices uniformly from [0, count) and never sees an unfilled row.
"""

import flax.struct
import jax
import jax.numpy as jnp

from mopo_jax.types import Transitions


class ModelBuffer(flax.struct.PyTreeNode):
    """Fixed-capacity FIFO of transitions.

    data:    Transitions with leading axis `capacity` (rows [count, capacity) are zero until written)
    pointer: [] int32, next row to write (the oldest row once the buffer is full)
    count:   [] int32, number of filled rows, ≤ capacity
    """

    data: Transitions
    pointer: jax.Array
    count: jax.Array

    @property
    def capacity(self) -> int:
        """Number of rows the buffer holds (static)."""
        return self.data.observations.shape[-2]


def buffer_init(capacity: int, obs_dim: int, act_dim: int) -> ModelBuffer:
    """Empty buffer: zero storage of `capacity` rows, pointer 0, count 0."""
    data = Transitions(
        observations=jnp.zeros((capacity, obs_dim), jnp.float32),
        actions=jnp.zeros((capacity, act_dim), jnp.float32),
        rewards=jnp.zeros((capacity,), jnp.float32),
        next_observations=jnp.zeros((capacity, obs_dim), jnp.float32),
        terminations=jnp.zeros((capacity,), jnp.float32),
    )
    # Two distinct arrays (not one shared zero), so the buffer can be donated to a jitted call.
    return ModelBuffer(data=data, pointer=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))


def buffer_add(buffer: ModelBuffer, transitions: Transitions, valid_mask: jax.Array) -> ModelBuffer:
    """Append the rows of `transitions` [N] where `valid_mask` [N] (bool) is true, in order.

    The k-th valid row goes to row (pointer + k) mod capacity; pointer advances by n_valid and
    count = min(count + n_valid, capacity). Invalid rows touch nothing: each gets its own
    out-of-range index (capacity + row) and the scatter drops it. If n_valid > capacity only the
    last `capacity` valid rows are written (the earlier ones would be overwritten anyway), which
    keeps every scatter index unique, so the result is deterministic.
    """
    capacity = buffer.capacity
    n_rows = valid_mask.shape[0]
    valid = valid_mask.astype(jnp.int32)
    n_valid = jnp.sum(valid)
    order = jnp.cumsum(valid) - valid  # position of each valid row among the valid rows
    keep = valid_mask & (order >= n_valid - capacity)
    target = jnp.where(keep, (buffer.pointer + order) % capacity, capacity + jnp.arange(n_rows))

    def write(store: jax.Array, rows: jax.Array) -> jax.Array:
        return store.at[target].set(rows.astype(store.dtype), mode="drop", unique_indices=True)

    data = jax.tree.map(write, buffer.data, transitions)
    pointer = ((buffer.pointer + n_valid) % capacity).astype(jnp.int32)
    count = jnp.minimum(buffer.count + n_valid, capacity).astype(jnp.int32)
    return ModelBuffer(data=data, pointer=pointer, count=count)


def sample_rows(
    data: Transitions, key: jax.Array, batch_size: int, num_rows: jax.Array | int
) -> Transitions:
    """Uniform draw with replacement from rows [0, num_rows) of `data`. -> Transitions [batch_size].

    num_rows < 1 is treated as 1 (row 0 is returned).
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(num_rows, 1))
    return jax.tree.map(lambda x: x[idx], data)


def buffer_sample(buffer: ModelBuffer, key: jax.Array, batch_size: int) -> Transitions:
    """Uniform draw with replacement from the filled rows. -> Transitions [batch_size].

    Requires count ≥ 1. On an empty buffer it returns copies of row 0, i.e. the all-zero
    initial storage (no error can be raised inside jit); callers must add before sampling.
    """
    return sample_rows(buffer.data, key, batch_size, buffer.count)


def num_real_rows(batch_size: int, real_ratio: float) -> int:
    """Real rows in a mixed batch: int(batch_size * real_ratio) (e.g. 256·0.05 -> 12)."""
    return int(batch_size * real_ratio)


def mix_batches(real: Transitions, model: Transitions) -> Transitions:
    """Concatenate real [n_real] and model [n_model] rows -> Transitions [n_real + n_model] (real first)."""
    return jax.tree.map(lambda r, m: jnp.concatenate([r, m], axis=0), real, model)


def sample_mixed_batch(
    real_data: Transitions,
    buffer: ModelBuffer,
    key: jax.Array,
    batch_size: int = 256,
    real_ratio: float = 0.05,
) -> Transitions:
    """SAC batch: num_real_rows(batch_size, real_ratio) rows drawn uniformly from all of
    `real_data` [N_real] and the rest from the buffer's filled rows. -> Transitions [batch_size].
    """
    n_real = num_real_rows(batch_size, real_ratio)
    real_key, model_key = jax.random.split(key)
    real = sample_rows(real_data, real_key, n_real, real_data.observations.shape[0])
    model = buffer_sample(buffer, model_key, batch_size - n_real)
    return mix_batches(real, model)
