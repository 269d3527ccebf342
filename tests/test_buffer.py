"""Tests for mopo_jax.buffer: FIFO writes of valid rows only, sampling of filled rows only, mixing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.buffer import (
    ModelBuffer,
    buffer_add,
    buffer_init,
    buffer_sample,
    mix_batches,
    num_real_rows,
    sample_mixed_batch,
)
from mopo_jax.types import Transitions

OBS_DIM, ACT_DIM = 3, 2
add = jax.jit(buffer_add)
sample = jax.jit(buffer_sample, static_argnums=2)


def tagged(ids) -> Transitions:
    """Transitions whose every field encodes the row id; id 0 is exactly the all-zero unfilled row.

    Built in numpy and moved to the device as is, so no per-shape XLA compiles are needed.
    """
    ids = np.asarray(ids, np.float32)
    fields = Transitions(
        observations=ids[:, None] * np.ones((1, OBS_DIM), np.float32),
        actions=-ids[:, None] * np.ones((1, ACT_DIM), np.float32),
        rewards=ids,
        next_observations=ids[:, None] * np.arange(2, OBS_DIM + 2, dtype=np.float32),
        terminations=(np.abs(ids) % 2 == 1).astype(np.float32),
    )
    return jax.tree.map(jnp.asarray, fields)


def ids_of(data: Transitions) -> np.ndarray:
    """Row ids stored in `data`, after checking every field agrees with `tagged`."""
    ids = np.asarray(data.rewards)
    for got, want in zip(data, tagged(ids), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    return ids


def row(tree, i):
    """Slice i of every leaf, as numpy."""
    return jax.tree.map(lambda x: np.asarray(x)[i], tree)


class ReferenceFIFO:
    """Row-by-row Python model of the buffer."""

    def __init__(self, capacity):
        self.rows, self.pointer, self.count = [0.0] * capacity, 0, 0

    def add(self, ids, mask):
        for row_id, valid in zip(ids, mask, strict=True):
            if valid:
                self.rows[self.pointer] = float(row_id)
                self.pointer = (self.pointer + 1) % len(self.rows)
                self.count = min(self.count + 1, len(self.rows))


def test_init_is_empty():
    buf = buffer_init(7, OBS_DIM, ACT_DIM)
    assert isinstance(buf, ModelBuffer) and buf.capacity == 7
    assert int(buf.pointer) == 0 and int(buf.count) == 0
    assert buf.data.observations.shape == (7, OBS_DIM) and buf.data.actions.shape == (7, ACT_DIM)
    assert buf.data.rewards.shape == (7,) and all(x.dtype == jnp.float32 for x in buf.data)


def test_fifo_contents_after_wraparound_exact():
    buf = buffer_init(10, OBS_DIM, ACT_DIM)
    buf = add(buf, tagged(np.arange(1, 8)), jnp.ones(7, bool))  # ids 1..7 -> rows 0..6
    assert (int(buf.pointer), int(buf.count)) == (7, 7)
    np.testing.assert_array_equal(ids_of(buf.data), [1, 2, 3, 4, 5, 6, 7, 0, 0, 0])
    buf = add(buf, tagged(np.arange(8, 14)), jnp.ones(6, bool))  # ids 8..13 -> rows 7,8,9,0,1,2
    assert (int(buf.pointer), int(buf.count)) == (3, 10)
    np.testing.assert_array_equal(ids_of(buf.data), [11, 12, 13, 4, 5, 6, 7, 8, 9, 10])


def test_batch_larger_than_capacity_keeps_last_rows_in_order():
    buf = add(buffer_init(10, OBS_DIM, ACT_DIM), tagged([1, 2, 3]), jnp.ones(3, bool))
    mask = np.ones(25, bool)
    mask[[20, 23]] = False  # ids 121 and 124 are invalid
    buf = add(buf, tagged(np.arange(101, 126)), jnp.asarray(mask))
    # 23 valid rows written from row 3: the last 10 valid ids land at rows (3 + k) % 10, k = 13..22.
    assert (int(buf.pointer), int(buf.count)) == ((3 + 23) % 10, 10)
    np.testing.assert_array_equal(ids_of(buf.data), [118, 119, 120, 122, 123, 125, 114, 115, 116, 117])


def test_invalid_rows_never_stored_nor_overwrite():
    buf = add(buffer_init(6, OBS_DIM, ACT_DIM), tagged(np.arange(1, 7)), jnp.ones(6, bool))
    before = jax.tree.map(np.asarray, buf)
    same = add(buf, tagged(np.full(6, 999.0)), jnp.zeros(6, bool))  # nothing valid
    for x, y in zip(jax.tree.leaves(same), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(x), y)
    mixed = add(buf, tagged([999, 7, 999, 999, 8, 999]), jnp.array([0, 1, 0, 0, 1, 0], bool))
    np.testing.assert_array_equal(ids_of(mixed.data), [7, 8, 3, 4, 5, 6])
    assert (int(mixed.pointer), int(mixed.count)) == (2, 6)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_row_by_row_reference(seed):
    rng = np.random.default_rng(seed)
    capacity, batch = 13, 8
    buf, ref, next_id = buffer_init(capacity, OBS_DIM, ACT_DIM), ReferenceFIFO(capacity), 1
    for _ in range(12):
        ids = np.arange(next_id, next_id + batch)
        next_id += batch
        mask = rng.random(batch) < rng.choice([0.0, 0.3, 1.0])
        buf = add(buf, tagged(ids), jnp.asarray(mask))
        ref.add(ids, mask)
        np.testing.assert_array_equal(ids_of(buf.data), ref.rows)
        assert (int(buf.pointer), int(buf.count)) == (ref.pointer, ref.count)


def test_samples_only_filled_rows_and_all_of_them():
    buf = buffer_init(100, OBS_DIM, ACT_DIM)
    buf = add(buf, tagged(np.arange(1, 21)), jnp.asarray(np.arange(20) % 4 != 0))  # 15 valid rows
    buf = add(buf, tagged(np.arange(21, 38)), jnp.ones(17, bool))  # 32 filled rows, 68 unfilled
    assert int(buf.count) == 32
    filled = set(ids_of(buf.data)[:32].tolist())
    assert 0.0 not in filled and len(filled) == 32
    drawn = ids_of(sample(buf, jax.random.key(0), 4096))
    assert set(drawn.tolist()) == filled  # never an unfilled (zero) row, and every filled row reachable
    counts = np.unique(drawn, return_counts=True)[1]
    assert counts.min() > 4096 / 32 / 2 and counts.max() < 4096 / 32 * 2  # roughly uniform


def test_sample_from_full_buffer_reaches_every_row():
    buf = add(buffer_init(16, OBS_DIM, ACT_DIM), tagged(np.arange(1, 41)), jnp.ones(40, bool))
    drawn = ids_of(sample(buf, jax.random.key(1), 2048))
    assert set(drawn.tolist()) == set(range(25, 41))


def test_jit_and_vmap_over_buffers_equal_separate_calls():
    masks = jnp.array([[1, 0, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 0, 1]], bool)
    rows = tagged(np.arange(1, 8))
    bufs = jax.tree.map(lambda x: jnp.stack([x, x]), buffer_init(5, OBS_DIM, ACT_DIM))
    v_add = jax.jit(jax.vmap(buffer_add, in_axes=(0, None, 0)))
    bufs = v_add(bufs, rows, masks)
    bufs = v_add(bufs, rows, masks)
    keys = jax.random.split(jax.random.key(3), 2)
    v_drawn = jax.jit(jax.vmap(functools.partial(buffer_sample, batch_size=64)))(bufs, keys)
    for i in range(2):
        single = buffer_init(5, OBS_DIM, ACT_DIM)
        single = add(add(single, rows, masks[i]), rows, masks[i])
        for x, y in zip(jax.tree.leaves(row(bufs, i)), jax.tree.leaves(single), strict=True):
            np.testing.assert_array_equal(x, np.asarray(y))
        np.testing.assert_array_equal(ids_of(row(v_drawn, i)), ids_of(sample(single, keys[i], 64)))
    np.testing.assert_array_equal(np.asarray(bufs.count), [5, 4])
    np.testing.assert_array_equal(ids_of(row(bufs.data, 1)), [3, 7, 3, 7, 0])


def test_num_real_rows_and_mixed_batch():
    assert num_real_rows(256, 0.05) == 12  # int(12.8): rounds down
    assert num_real_rows(256, 0.0) == 0 and num_real_rows(10, 1.0) == 10
    real = tagged(-np.arange(1, 51))  # negative ids mark real rows
    buf = add(buffer_init(100, OBS_DIM, ACT_DIM), tagged(np.arange(1, 31)), jnp.ones(30, bool))
    batch = jax.jit(sample_mixed_batch, static_argnums=(3, 4))(real, buf, jax.random.key(0), 256, 0.05)
    ids = ids_of(batch)
    assert ids.shape == (256,)
    assert np.all(ids[:12] < 0) and np.all(ids[:12] >= -50)
    assert np.all(ids[12:] >= 1) and np.all(ids[12:] <= 30)
    both = mix_batches(tagged([-1, -2]), tagged([5, 6, 7]))
    np.testing.assert_array_equal(ids_of(both), [-1, -2, 5, 6, 7])
