"""rollout_fn: penalty and reward against numpy, termination masking, jit/vmap/no-retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.mopo.rollout import make_rollout_fn, rollout_fn
from mopo_jax.buffer import buffer_add, buffer_init
from mopo_jax.dynamics.model import EnsembleModel, init_ensemble_params, predict
from mopo_jax.mopo import config as mopo_config
from mopo_jax.mopo.rollout import PENALTIES, uncertainty_penalty
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.update import init_sac
from mopo_jax.sac.policy import make_policy_apply
from mopo_jax.envs.termination import termination_fn

OBS, ACT, E = 11, 3, 4
SAC_CFG = SACConfig(hidden_sizes=(16, 16))
POLICY = make_policy_apply(SAC_CFG)


def _model(key, height_shift=0.0):
    params = init_ensemble_params(key, E, OBS + ACT, OBS + 1, (16, 16))
    return EnsembleModel(params=params, max_logvar=jnp.full(OBS + 1, 0.5),
                         min_logvar=jnp.full(OBS + 1, -10.0), input_mean=jnp.zeros(OBS + ACT),
                         input_std=jnp.ones(OBS + ACT), elite_idx=jnp.array([2, 0], jnp.int32))


@pytest.fixture(scope="module")
def setup():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    model = _model(k1)
    actor = init_sac(k2, OBS, ACT, SAC_CFG).actor_params
    start = jnp.asarray(np.random.default_rng(0).normal(0, 0.05, (64, OBS)), jnp.float32)
    start = start.at[:, 0].add(1.25)
    return model, actor, start


def test_penalty_and_reward_match_numpy(setup):
    model, actor, start = setup
    lam = 0.7
    out = rollout_fn(jax.random.key(1), model, actor, start, lam, policy_apply=POLICY, horizon=3,
                     termination=termination_fn("halfcheetah"))
    assert out.obs.shape == (3, 64, OBS) and out.reward.shape == (3, 64)
    for t in range(3):
        mean, std = (np.asarray(x, np.float64) for x in predict(model, out.obs[t], out.action[t]))
        want = np.sqrt((std ** 2).sum(-1)).max(0)  # max over ALL members of ||sigma||_2
        np.testing.assert_allclose(out.penalty[t], want, rtol=1e-5)
        np.testing.assert_allclose(out.reward[t], out.raw_reward[t] - lam * want, rtol=1e-5, atol=1e-5)
        elite_std = np.sqrt((std[[2, 0]] ** 2).sum(-1)).max(0)
        np.testing.assert_allclose(uncertainty_penalty(jnp.asarray(mean), jnp.asarray(std),
                                                       model.elite_idx, "max_std_elites"),
                                   elite_std, rtol=1e-5)
        # The sampled next state lies near one of the ELITE means (within 6 sigma).
        z = np.abs(np.asarray(out.next_obs[t])[None] - mean[:, :, :OBS]) / std[:, :, :OBS]
        assert np.all(z[[2, 0]].max(-1).min(0) < 6.0)
    np.testing.assert_array_equal(out.obs[1:], out.next_obs[:-1])  # never terminates
    assert np.all(out.valid)


def test_terminated_rows_are_not_continued_or_stored(setup):
    model, actor, start = setup
    out = rollout_fn(jax.random.key(2), model, actor, start, 1.0, policy_apply=POLICY, horizon=5,
                     termination=termination_fn("hopper"))
    done, valid = np.asarray(out.done), np.asarray(out.valid)
    assert done[0].any() and not done[0].all()  # the random model knocks some hoppers over
    assert valid[0].all()
    np.testing.assert_array_equal(valid[1:], valid[:-1] & ~done[:-1])
    cont = valid[1:]
    np.testing.assert_array_equal(np.asarray(out.obs[1:])[cont], np.asarray(out.next_obs[:-1])[cont])
    rows, mask = out.transitions()
    buf = buffer_add(buffer_init(1000, OBS, ACT), rows, mask)
    assert int(buf.count) == valid.sum()
    stored = np.asarray(buf.data.observations[: int(buf.count)])
    np.testing.assert_array_equal(stored, np.asarray(out.obs)[valid])
    np.testing.assert_array_equal(np.asarray(buf.data.terminations[: int(buf.count)]),
                                  done[valid].astype(np.float32))


def test_jit_vmap_scan_and_no_retrace(setup):
    model, actor, start = setup
    rollout = make_rollout_fn(POLICY, termination_fn("hopper"), horizon=2)
    a = rollout(jax.random.key(3), model, actor, start, 1.0)
    b = rollout(jax.random.key(4), model, actor, start, 2.0)
    assert rollout._cache_size() == 1
    assert not np.array_equal(a.raw_reward, b.raw_reward)
    keys = jax.random.split(jax.random.key(5), 3)
    batched = jax.vmap(lambda k: rollout(k, model, actor, start, 1.0))(keys)
    assert batched.reward.shape == (3, 2, 64)
    np.testing.assert_allclose(batched.reward[1], rollout(keys[1], model, actor, start, 1.0).reward,
                               rtol=1e-6)
    actors = jax.tree.map(lambda x: jnp.stack([x, 0.5 * x]), actor)
    per_policy = jax.vmap(lambda p: rollout(keys[0], model, p, start, 1.0))(actors)
    assert not np.allclose(per_policy.action[0], per_policy.action[1])

    def body(c, k):
        return c + rollout(k, model, actor, start, 1.0).penalty.sum(), None

    total, _ = jax.lax.scan(body, 0.0, keys)
    assert np.isfinite(total) and total > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown penalty"):
        make_rollout_fn(POLICY, termination_fn("hopper"), 2, penalty="variance")
    with pytest.raises(ValueError, match="horizon"):
        make_rollout_fn(POLICY, termination_fn("hopper"), 0)
    with pytest.raises(ValueError, match="horizon"):
        rollout_fn(jax.random.key(0), None, None, jnp.zeros((2, OBS)), 1.0, policy_apply=POLICY,
                   horizon=0, termination=termination_fn("hopper"))


@pytest.mark.parametrize("row_chunk", [16, 24, 64, 1000])  # 24 does not divide the 64 rows
def test_row_chunks_give_the_same_rollout(setup, row_chunk):
    model, actor, start = setup
    kwargs = dict(policy_apply=POLICY, horizon=3, termination=termination_fn("hopper"))
    whole = rollout_fn(jax.random.key(6), model, actor, start, 1.0, **kwargs)
    chunked = rollout_fn(jax.random.key(6), model, actor, start, 1.0, row_chunk=row_chunk, **kwargs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), whole, chunked)
    with pytest.raises(ValueError, match="row_chunk"):
        make_rollout_fn(POLICY, termination_fn("hopper"), 2, row_chunk=0)


def _numpy_penalty(mean, std, elites, mode):
    """Reference u(s, a) [B] from mean, std [E, B, D] (reward last), written out per member."""
    if mode == "max_std":  # the original's penalty_learned_var=True: all members, all dims
        return np.max([np.sqrt(np.sum(std[k] ** 2, -1)) for k in range(len(std))], axis=0)
    if mode == "max_std_elites":
        return np.max([np.sqrt(np.sum(std[k] ** 2, -1)) for k in elites], axis=0)
    if mode == "disagreement":  # the original's penalty_learned_var=False: all members, obs dims
        obs_means = mean[:, :, :-1]
        centre = obs_means.sum(0) / len(obs_means)
        return np.max([np.sqrt(np.sum((m - centre) ** 2, -1)) for m in obs_means], axis=0)
    assert mode == "disagreement_elites_with_reward"
    centre = np.mean([mean[k] for k in elites], axis=0)
    return np.max([np.sqrt(np.sum((mean[k] - centre) ** 2, -1)) for k in elites], axis=0)


@pytest.mark.parametrize("mode", PENALTIES)
def test_each_penalty_equals_numpy_on_random_predictions(mode):
    rng = np.random.default_rng(3)
    mean = rng.normal(0, 1, (7, 50, OBS + 1))
    mean[:, :, -1] += rng.normal(0, 30, (7, 50))  # a reward disagreement that only some modes see
    std = rng.uniform(0.01, 2.0, (7, 50, OBS + 1))
    elites = np.array([5, 1, 3])
    got = np.asarray(jax.jit(uncertainty_penalty, static_argnames="mode")(
        jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32), jnp.asarray(elites), mode=mode))
    np.testing.assert_allclose(got, _numpy_penalty(mean, std, elites, mode), rtol=1e-5)
    assert mopo_config.PENALTIES == PENALTIES  # the config accepts exactly these


def test_penalty_variants_differ_where_they_should():
    """Excluding the reward, using all members, and σ vs μ each change the value."""
    rng = np.random.default_rng(4)
    mean = rng.normal(0, 1, (5, 20, OBS + 1))
    std = rng.uniform(0.1, 1.0, (5, 20, OBS + 1))
    elites = jnp.array([0, 2])
    u = {m: np.asarray(uncertainty_penalty(jnp.asarray(mean), jnp.asarray(std), elites, m))
         for m in PENALTIES}
    loud = mean.copy()
    loud[0, :, -1] += 100.0  # an elite's reward prediction alone disagrees wildly
    loud_u = {m: np.asarray(uncertainty_penalty(jnp.asarray(loud), jnp.asarray(std), elites, m))
              for m in PENALTIES}
    np.testing.assert_allclose(loud_u["disagreement"], u["disagreement"], rtol=1e-6)  # obs only
    assert np.all(loud_u["disagreement_elites_with_reward"] > 10 * u["disagreement_elites_with_reward"])
    far = mean.copy()
    far[4] += 50.0  # a non-elite member far away: only the all-member penalties see it
    far_u = {m: np.asarray(uncertainty_penalty(jnp.asarray(far), jnp.asarray(std), elites, m))
             for m in PENALTIES}
    assert np.all(far_u["disagreement"] > 10 * u["disagreement"])
    np.testing.assert_allclose(far_u["disagreement_elites_with_reward"],
                               u["disagreement_elites_with_reward"], rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown penalty"):
        uncertainty_penalty(jnp.asarray(mean), jnp.asarray(std), elites, "variance")


def test_disagreement_rollout_uses_all_members(setup):
    model, actor, start = setup
    kwargs = dict(policy_apply=POLICY, horizon=2, termination=termination_fn("halfcheetah"),
                  penalty="disagreement")
    out = rollout_fn(jax.random.key(8), model, actor, start, 0.5, **kwargs)
    for t in range(2):
        mean, std = (np.asarray(x, np.float64) for x in predict(model, out.obs[t], out.action[t]))
        np.testing.assert_allclose(out.penalty[t], _numpy_penalty(mean, std, [2, 0], "disagreement"),
                                   rtol=1e-4, atol=1e-6)
    # A non-elite member that outputs NaN poisons the penalty: every member is evaluated.
    broken = model.replace(params=jax.tree.map(lambda p: p.at[1].set(jnp.nan), model.params))
    assert np.isnan(np.asarray(rollout_fn(jax.random.key(8), broken, actor, start, 0.5, **kwargs).penalty)).all()


@pytest.mark.parametrize("penalty", ["max_std_elites", "disagreement_elites_with_reward"])
def test_elite_penalties_evaluate_only_elites(setup, penalty):
    """Only elites are computed; the values equal those from all members' predictions."""
    model, actor, start = setup
    out = rollout_fn(jax.random.key(7), model, actor, start, 0.5, policy_apply=POLICY, horizon=2,
                     termination=termination_fn("halfcheetah"), penalty=penalty)
    for t in range(2):
        mean, std = predict(model, out.obs[t], out.action[t])
        want = uncertainty_penalty(mean, std, model.elite_idx, penalty)
        np.testing.assert_allclose(out.penalty[t], want, rtol=1e-5, atol=1e-6)
        z = np.abs(np.asarray(out.next_obs[t])[None] - np.asarray(mean)[:, :, :OBS]) / np.asarray(std)[:, :, :OBS]
        assert np.all(z[[2, 0]].max(-1).min(0) < 6.0)
    # A model whose non-elite members output NaN still rolls out: they are never evaluated.
    broken = model.replace(params=jax.tree.map(lambda p: p.at[jnp.array([1, 3])].set(jnp.nan), model.params))
    again = rollout_fn(jax.random.key(7), broken, actor, start, 0.5, policy_apply=POLICY, horizon=2,
                       termination=termination_fn("halfcheetah"), penalty=penalty)
    np.testing.assert_allclose(again.reward, out.reward, rtol=1e-6)


def test_rollout_clip_data_clips_samples_and_the_default_changes_nothing(setup):
    """--rollout-clip data: next states and rewards are clipped to the data's range before the
    termination rule and the penalty; without bounds (the default) every number is as sampled."""
    from mopo_jax.mopo.rollout import ClipBounds, data_bounds
    from mopo_jax.types import Transitions

    model, actor, start = setup
    term = termination_fn("halfcheetah")
    args = (jax.random.key(4), model, actor, start, 0.5)
    kw = dict(policy_apply=POLICY, horizon=3, termination=term)
    free = rollout_fn(*args, **kw)
    huge = ClipBounds(jnp.full(OBS, -1e30), jnp.full(OBS, 1e30), jnp.float32(-1e30), jnp.float32(1e30))
    for a, b in zip(free, rollout_fn(*args, huge, **kw)):  # bounds that bind nowhere: identical
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(1)
    obs = rng.normal(0, 0.02, (50, OBS)).astype(np.float32) + np.float32(1.25) * (np.arange(OBS) == 0)
    data = Transitions(jnp.asarray(obs), jnp.zeros((50, ACT)), jnp.asarray(rng.uniform(-0.1, 0.2, 50)),
                       jnp.asarray(obs[::-1].copy()), jnp.zeros(50))
    bounds = data_bounds(data)
    np.testing.assert_allclose(bounds.obs_low, np.minimum(obs.min(0), obs[::-1].min(0)))
    np.testing.assert_allclose([bounds.reward_low, bounds.reward_high],
                               [data.rewards.min(), data.rewards.max()])
    clipped = rollout_fn(*args, bounds, **kw)
    assert np.all(clipped.next_obs >= bounds.obs_low) and np.all(clipped.next_obs <= bounds.obs_high)
    assert np.all(clipped.raw_reward >= bounds.reward_low) and np.all(clipped.raw_reward <= bounds.reward_high)
    np.testing.assert_allclose(clipped.next_obs[0], np.clip(free.next_obs[0], bounds.obs_low,
                                                            bounds.obs_high), rtol=1e-6)
    assert not np.allclose(free.next_obs, clipped.next_obs)  # the random model leaves the range
    np.testing.assert_allclose(clipped.reward, clipped.raw_reward - 0.5 * clipped.penalty, rtol=1e-5,
                               atol=1e-5)
