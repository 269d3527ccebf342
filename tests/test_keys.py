"""The run's key tree: no two random streams share a key, and the streams follow (seed, λ, h, epoch)."""

import jax
import numpy as np
import pytest

from mopo_jax import keys


def _data(key) -> tuple:
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _streams(seed: int) -> dict[str, jax.Array]:
    """Every named stream of one seed, two levels down the tree, by name."""
    top = keys.seed_streams(seed)
    out = {f"{seed}/{name}": k for name, k in top._asdict().items()}
    out |= {f"{seed}/fit/{name}": k for name, k in keys.fit_streams(top.dynamics)._asdict().items()}
    sac_key, loop_key = keys.sac_init_and_loop(top.policy)
    out |= {f"{seed}/sac_init": sac_key, f"{seed}/loop": loop_key}
    for name, k in zip(("next_loop", "start_states", "rollout", "sac_steps"),
                       keys.epoch_streams(loop_key)):
        out[f"{seed}/epoch1/{name}"] = k
    return out


def test_no_two_streams_share_a_key():
    streams = {name: k for seed in range(8) for name, k in _streams(seed).items()}
    by_data: dict[tuple, str] = {}
    for name, k in streams.items():
        assert _data(k) not in by_data, f"{name} and {by_data.get(_data(k))} share a key"
        by_data[_data(k)] = name
    # Reproducer: the policy key used to be fold_in(key(s), 1), which (jax 0.10) equals the fit's
    # initial-weights key split(key(s), 4)[1].
    for seed in (0, 1, 7):
        assert _data(keys.policy_key(seed)) != _data(keys.fit_streams(keys.dynamics_key(seed)).init)


def test_streams_are_the_ones_the_fit_and_the_policy_phase_use():
    assert _data(keys.dynamics_key(3)) == _data(keys.seed_streams(3).dynamics)
    assert _data(keys.policy_key(3)) == _data(keys.seed_streams(3).policy)
    assert _data(keys.policy_key(3)) == _data(jax.random.split(jax.random.key(3), 3)[1])


def test_evaluation_reset_seeds():
    a = keys.eval_reset_seeds(0, 1.0, 5, 10, epoch=1)
    assert a.dtype == np.int64 and a.shape == (10,) and (a >= 0).all()
    np.testing.assert_array_equal(a, keys.eval_reset_seeds(0, 1, 5, 10, epoch=1))  # 1 == 1.0
    assert keys.eval_reset_seeds(0, 1.0, 5, 3, epoch=1).tolist() == a[:3].tolist()
    others = [keys.eval_reset_seeds(*args, 10, epoch=e) for args, e in [
        ((0, 1.0, 5), 2), ((0, 1.0, 5), None), ((1, 1.0, 5), 1), ((0, 2.5, 5), 1), ((0, 1.0, 1), 1)]]
    seen = set(a.tolist())
    for seeds in others:  # every epoch, the final evaluation, and every (seed, λ, h): fresh states
        assert not seen & set(seeds.tolist())
        seen |= set(seeds.tolist())
    with pytest.raises(ValueError, match="epoch=0"):
        keys.eval_reset_seeds(0, 1.0, 5, 10, epoch=0)


def _eager_reset_seeds(seed, penalty_coef, rollout_length, episodes, epoch):
    """The derivation spelled out op by op, as eval_reset_seeds computed it before it was compiled."""
    import zlib

    coef_tag = zlib.crc32(repr(float(penalty_coef)).encode()) % 2**31
    key = jax.random.fold_in(jax.random.split(jax.random.key(seed), 3)[2], coef_tag)
    during, final = jax.random.split(jax.random.fold_in(key, int(rollout_length)))
    key = final if epoch is None else jax.random.fold_in(during, int(epoch))
    return np.asarray(jax.random.randint(key, (episodes,), 0, 2**31 - 1), np.int64)


def test_compiled_reset_seeds_equal_the_eager_derivation_and_compile_once_per_shape():
    """The compiled host-CPU version gives the seeds of the op-by-op one (so runs evaluated before
    the change resume and compare exactly), for any epoch without compiling again."""
    cases = [(0, 1.0, 5, 10, 1), (2, 1.0, 5, 10, 1000), (1, 0.25, 1, 7, 37), (12345, 3.0, 10, 10, None),
             (2**31 - 1, 1.0, 5, 100, None), (3, 1, 5, 10, 999_999)]
    for case in cases:
        np.testing.assert_array_equal(keys.eval_reset_seeds(*case), _eager_reset_seeds(*case),
                                      err_msg=str(case))
    before = keys._reset_seeds._cache_size()
    for epoch in range(2, 40):
        keys.eval_reset_seeds(0, 1.0, 5, 10, epoch)
    assert keys._reset_seeds._cache_size() == before  # epochs are traced, not static
