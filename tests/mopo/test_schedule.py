"""The run's schedule as pure functions: when it evaluates and how many epochs each compiled chunk runs."""

import pytest

from mopo_jax.mopo.config import tiny
from mopo_jax.mopo.schedule import (EPOCHS_PER_CHUNK_WITHOUT_EVAL, chunk_plan, chunk_sizes,
                                    evaluates_at)


def _config(epochs, eval_every):
    return tiny("hopper-random", epochs=epochs, eval_every=eval_every)


@pytest.mark.parametrize("epochs, eval_every, sizes", [
    (4, 2, [2, 2]),
    (5, 2, [2, 2, 1]),  # the last chunk stops at the last epoch
    (3, 1, [1, 1, 1]),
    (3, 5, [3]),  # evaluated only after the last epoch
    (25, 0, [EPOCHS_PER_CHUNK_WITHOUT_EVAL] * 2 + [5]),
])
def test_chunks_end_at_every_evaluation_and_at_the_last_epoch(epochs, eval_every, sizes):
    config = _config(epochs, eval_every)
    assert chunk_sizes(config) == sizes
    ends = [sum(sizes[:i + 1]) for i in range(len(sizes))]
    evaluated = [e for e in range(1, epochs + 1) if evaluates_at(config, e)]
    assert set(evaluated) <= set(ends)  # each evaluation reads the end of a chunk
    assert evaluated == ([] if eval_every == 0 else
                         sorted({e for e in range(eval_every, epochs + 1, eval_every)} | {epochs}))


def test_a_resumed_or_extended_run_realigns_on_the_evaluations():
    config = _config(10, 4)
    assert [chunk_plan(config, done) for done in (0, 3, 4, 8, 9)] == [4, 1, 4, 2, 1]
    assert chunk_sizes(config, done=3) == [1, 4, 2]
    assert chunk_sizes(config, done=10) == [] and chunk_sizes(config, done=12) == []


def test_eval_every_zero_never_evaluates_during_training():
    config = _config(7, 0)
    assert not any(evaluates_at(config, e) for e in range(1, 8))
    assert chunk_plan(config, 0) == 7 and chunk_plan(config, 6) == 1
