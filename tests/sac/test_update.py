"""Tests for mopo_jax.sac: tanh-Gaussian log-prob, action sampling and the SAC update."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mopo_jax.sac.networks import Actor, TwinCritic
from mopo_jax.sac.config import SACConfig
from mopo_jax.sac.policy import deterministic_action, make_policy_apply, sample_action, tanh_gaussian_log_prob
from mopo_jax.sac.update import init_sac, make_sac_update
from mopo_jax.types import Transitions

# Every distinct config or shape costs an XLA compile, so the tests share very few of them.
OBS_DIM, ACT_DIM, BATCH = 5, 2, 64
SMALL = SACConfig(hidden_sizes=(32, 32), tau=0.1)
# Actor, α and target critics frozen: the TD target is a fixed regression target.
FROZEN = SACConfig(
    hidden_sizes=(32, 32), actor_lr=0.0, alpha_lr=0.0, tau=0.0, critic_lr=1e-3, target_entropy=-3.0
)

# Jitted once here (op-by-op dispatch compiles every primitive and is slow on CPU). Optimizer
# states do not depend on learning rates, so states from `init` serve every config above.
_init = jax.jit(init_sac, static_argnums=(1, 2, 3))
init = functools.partial(_init, obs_dim=OBS_DIM, act_dim=ACT_DIM, config=SMALL)
sample = jax.jit(sample_action, static_argnums=3)
policy = jax.jit(make_policy_apply(SMALL))
deterministic = jax.jit(deterministic_action)


@functools.lru_cache
def jit_update(config: SACConfig):
    """One compiled update per config, shared across tests (op-by-op dispatch is slow on CPU)."""
    return jax.jit(make_sac_update(config))


def make_batch(seed: int, terminal_frac: float = 0.25) -> Transitions:
    """A random float32 batch of BATCH rows, built in numpy (no XLA compile)."""
    rng = np.random.default_rng(seed)
    return Transitions(
        observations=jnp.asarray(rng.normal(size=(BATCH, OBS_DIM)), jnp.float32),
        actions=jnp.asarray(rng.uniform(-0.99, 0.99, size=(BATCH, ACT_DIM)), jnp.float32),
        rewards=jnp.asarray(rng.normal(size=BATCH), jnp.float32),
        next_observations=jnp.asarray(rng.normal(size=(BATCH, OBS_DIM)), jnp.float32),
        terminations=jnp.asarray(rng.uniform(size=BATCH) < terminal_frac, jnp.float32),
    )


def with_output_layer(actor_params, kernel, bias):
    """Actor params with the last layer (columns: act_dim means, then act_dim log-stds) replaced."""
    trunk = {**actor_params["trunk"], "output": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
    return {**actor_params, "trunk": trunk}


def with_log_std(actor_params, log_std):
    """Actor params whose log-std output is the constant `log_std` (mean head untouched)."""
    out = actor_params["trunk"]["output"]
    kernel = np.asarray(out["kernel"]).copy()
    kernel[:, ACT_DIM:] = 0.0
    bias = np.asarray(out["bias"]).copy()
    bias[ACT_DIM:] = log_std
    return with_output_layer(actor_params, kernel, bias)


def constant_policy(actor_params, means, log_stds):
    """Actor params whose outputs ignore the observation: mean = means, log_std = log_stds."""
    kernel = np.zeros(actor_params["trunk"]["output"]["kernel"].shape, np.float32)
    return with_output_layer(actor_params, kernel, np.asarray(list(means) + list(log_stds), np.float32))


def allclose_trees(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_log_prob_matches_change_of_variables_reference():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(64, 3))
    log_std = rng.uniform(-2.0, 1.0, size=(64, 3))
    u = mean + np.exp(log_std) * rng.normal(size=(64, 3))
    u = np.clip(u, -4.0, 4.0)  # moderate |u|: the naive formula is accurate in float64
    reference = np.sum(
        stats.norm.logpdf(u, loc=mean, scale=np.exp(log_std)) - np.log(1.0 - np.tanh(u) ** 2), axis=-1
    )
    got = tanh_gaussian_log_prob(*(jnp.asarray(x, jnp.float32) for x in (mean, log_std, u)))
    assert got.shape == (64,)
    np.testing.assert_allclose(np.asarray(got), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("u_value", [-200.0, -30.0, 12.0, 30.0, 200.0])
def test_log_prob_finite_and_exact_for_saturated_actions(u_value):
    # In float32 tanh(u) == ±1 here, so the naive log(1 - tanh²) is -inf; the stable form is not.
    u = np.full((1, 2), u_value)
    mean, log_std = np.full((1, 2), u_value - 0.5), np.zeros((1, 2))
    got = tanh_gaussian_log_prob(*(jnp.asarray(x, jnp.float32) for x in (mean, log_std, u)))
    assert np.all(np.isfinite(np.asarray(got)))
    log_cosh = np.logaddexp(u, -u) - np.log(2.0)  # log(1 - tanh²u) = -2 log cosh u
    reference = np.sum(stats.norm.logpdf(u, loc=mean, scale=1.0) + 2.0 * log_cosh, axis=-1)
    np.testing.assert_allclose(np.asarray(got), reference, rtol=1e-5)


def test_sampled_actions_in_open_interval_and_policy_functions_agree():
    state = init(jax.random.key(0))
    obs = make_batch(1).observations
    key = jax.random.key(2)
    act = sample(state.actor_params, obs, key, SMALL)
    assert act.shape == (BATCH, ACT_DIM)
    assert bool(jnp.all(jnp.abs(act) < 1.0))
    assert float(jnp.std(act)) > 0.1  # actually stochastic, not collapsed
    np.testing.assert_allclose(np.asarray(policy(state.actor_params, obs, key)), np.asarray(act), atol=1e-6)
    other_key = sample(state.actor_params, obs, jax.random.key(3), SMALL)
    assert not np.allclose(np.asarray(other_key), np.asarray(act))
    det = deterministic(state.actor_params, obs)
    assert det.shape == (BATCH, ACT_DIM) and bool(jnp.all(jnp.abs(det) < 1.0))
    assert not np.allclose(np.asarray(det), np.asarray(act))


def test_saturated_policy_gives_bounded_actions_and_finite_log_probs():
    # Huge pre-tanh means: float32 tanh rounds to exactly ±1, the update must stay finite.
    state = init(jax.random.key(0))
    params = constant_policy(state.actor_params, [40.0, -40.0], [0.0, 0.0])
    obs = make_batch(1).observations
    act = sample(params, obs, jax.random.key(2), SMALL)
    assert bool(jnp.all(jnp.abs(act) <= 1.0)) and bool(jnp.all(jnp.abs(act) > 0.999))
    new_state, info = jit_update(SMALL)(state.replace(actor_params=params), make_batch(3), jax.random.key(4))
    assert all(np.isfinite(float(v)) for v in info.values()), info
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_state))


def test_one_step_is_finite_and_changes_every_part():
    config = SMALL
    state = init(jax.random.key(0))
    new_state, info = jit_update(config)(state, make_batch(1), jax.random.key(2))
    names = ["critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean", "q_target_mean"]
    for name in names:
        assert info[name].shape == () and np.isfinite(float(info[name])), name
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_state))
    assert int(new_state.step) == 1
    assert float(info["alpha"]) == pytest.approx(1.0)  # pre-update α = exp(0)
    for field in ["actor_params", "critic_params", "target_critic_params", "log_alpha"]:
        old, new = getattr(state, field), getattr(new_state, field)
        pairs = zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
        assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs), field


def test_td_target_and_critic_loss_match_independent_formula():
    # A constant policy μ = 0.5, σ = e^-20: in float32 u = μ + σε rounds to exactly 0.5, so a' and
    # log π(a'|s') are key-independent and the target can be rebuilt from public pieces:
    # y = r + γ(1 − d)(min_i Q̄_i(s', a') − α log π(a'|s')).
    state = init(jax.random.key(0))
    state = state.replace(
        actor_params=constant_policy(state.actor_params, [0.5] * ACT_DIM, [-20.0] * ACT_DIM),
        target_critic_params=jax.tree.map(lambda x: 1.3 * x, state.critic_params),  # target != online
        log_alpha=jnp.float32(-2.0),
    )
    batch = make_batch(1, 0.5)
    new_state, info = jit_update(SMALL)(state, batch, jax.random.key(2))
    ref = reference_terms(state, new_state, batch, np.float32(np.exp(-2.0)))
    np.testing.assert_array_equal(np.asarray(ref["log_std"]), -20.0)
    np.testing.assert_array_equal(np.asarray(ref["mean"]), 0.5)
    gap = ref["next_q"][0] - ref["next_q"][1]
    assert float(jnp.min(gap)) < 0 < float(jnp.max(gap))  # the min over the twin critics matters
    for name in ["q_target_mean", "critic_loss", "actor_loss"]:
        np.testing.assert_allclose(float(info[name]), float(ref[name]), rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(float(info["q_mean"]), float(ref["q_mean"]), rtol=1e-5, atol=1e-6)
    log_pi = float(ref["log_pi_mean"])
    np.testing.assert_allclose(float(info["entropy"]), -log_pi, rtol=1e-5)
    # α loss = −log α · (log π − |A|) with log α = −2.
    np.testing.assert_allclose(float(info["alpha_loss"]), 2.0 * (log_pi - ACT_DIM), rtol=1e-5)


@jax.jit
def reference_terms(state, new_state, batch, alpha):
    """SAC losses rebuilt from the public modules for a key-independent (σ = e^-20) policy."""
    critic = TwinCritic(SMALL.hidden_sizes)
    actor = Actor(ACT_DIM, SMALL.hidden_sizes)
    mean, log_std = actor.apply({"params": state.actor_params}, batch.next_observations)
    act = deterministic_action(state.actor_params, batch.next_observations)  # also the action at s
    next_q = critic.apply({"params": state.target_critic_params}, batch.next_observations, act)
    log_pi = tanh_gaussian_log_prob(mean, log_std, mean)
    y = batch.rewards + SMALL.gamma * (1 - batch.terminations) * (next_q.min(axis=0) - alpha * log_pi)
    q = critic.apply({"params": state.critic_params}, batch.observations, batch.actions)
    # The actor step sees the critics after their update.
    q_pi = critic.apply({"params": new_state.critic_params}, batch.observations, act).min(axis=0)
    return {
        "mean": mean,
        "log_std": log_std,
        "next_q": next_q,
        "log_pi_mean": jnp.mean(log_pi),
        "q_target_mean": jnp.mean(y),
        "critic_loss": jnp.sum(0.5 * jnp.mean((q - y) ** 2, axis=-1)),
        "q_mean": jnp.mean(q),
        "actor_loss": jnp.mean(alpha * log_pi - q_pi),
    }


def test_critic_regresses_toward_fixed_target():
    # Actor, α and target critics frozen, fixed key -> the TD target is a fixed regression target.
    config = FROZEN
    state = init(jax.random.key(0)).replace(log_alpha=jnp.float32(-1.0))
    batch, key = make_batch(1), jax.random.key(2)
    update = jit_update(config)
    losses, targets = [], []
    for _ in range(60):
        state, info = update(state, batch, key)
        losses.append(float(info["critic_loss"]))
        targets.append(float(info["q_target_mean"]))
    assert np.allclose(targets, targets[0])  # the target really is fixed
    assert float(state.log_alpha) == -1.0 and float(info["alpha"]) == pytest.approx(np.exp(-1.0))
    assert losses[-1] < 0.6 * losses[0], losses
    assert losses[1] < losses[0]


def test_target_params_move_by_exactly_tau():
    config = SMALL
    state = init(jax.random.key(0))
    update = jit_update(config)
    state, _ = update(state, make_batch(1), jax.random.key(2))  # target != critic now
    new_state, _ = update(state, make_batch(3), jax.random.key(4))
    expected = jax.tree.map(
        lambda old_t, new_c: (1 - config.tau) * old_t + config.tau * new_c,
        state.target_critic_params,
        new_state.critic_params,
    )
    allclose_trees(new_state.target_critic_params, expected, rtol=0, atol=1e-7)
    # and the target is not simply the critic
    assert not np.allclose(
        np.asarray(new_state.target_critic_params["q"]["output"]["kernel"]),
        np.asarray(new_state.critic_params["q"]["output"]["kernel"]),
    )


@pytest.mark.parametrize("log_std, grows", [(-5.0, True), (-1.0, False)])
def test_alpha_moves_toward_target_entropy(log_std, grows):
    # Target entropy is -ACT_DIM = -2: σ = e^-5 gives entropy ≈ -7 (below), σ = e^-1 ≈ +0.6 (above).
    state = init(jax.random.key(0))
    state = state.replace(actor_params=with_log_std(state.actor_params, log_std))
    state, info = jit_update(SMALL)(state, make_batch(1), jax.random.key(2))
    assert (float(info["entropy"]) < -ACT_DIM) == grows, float(info["entropy"])
    assert (float(state.log_alpha) > 0.0) == grows
    assert abs(float(state.log_alpha)) == pytest.approx(SMALL.alpha_lr, rel=1e-3)  # Adam's 1st step: lr


def test_default_target_entropy_is_minus_act_dim():
    # With log α = 1 the α loss is -(mean log π + target) = entropy - target_entropy.
    state = init(jax.random.key(0)).replace(log_alpha=jnp.float32(1.0))
    batch, key = make_batch(1), jax.random.key(2)
    _, info = jit_update(SMALL)(state, batch, key)
    assert float(info["alpha_loss"]) == pytest.approx(float(info["entropy"]) + ACT_DIM, abs=1e-5)
    _, info3 = jit_update(FROZEN)(state, batch, key)  # an explicit target entropy is used as given
    assert float(info3["alpha_loss"]) == pytest.approx(float(info3["entropy"]) + 3.0, abs=1e-5)


@functools.lru_cache
def traced_vmapped_update():
    """jit(vmap(update)) whose inner update may be traced at most once in this process."""
    return jax.jit(jax.vmap(chex.assert_max_traces(make_sac_update(SMALL), n=1)))


def stack(trees):
    """Stack pytrees on a new leading axis (via numpy: no per-shape compiles)."""
    return jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *trees)


def stack_keys(keys):
    return jax.random.wrap_key_data(np.stack([np.asarray(jax.random.key_data(k)) for k in keys]))


def seeded_inputs(seeds):
    states = [init(jax.random.key(s)) for s in seeds]
    batches = [make_batch(100 + s) for s in seeds]
    keys = [jax.random.key(200 + s) for s in seeds]
    return states, batches, keys


def row(tree, i):
    """Slice i of every leaf (via numpy: no per-shape compiles)."""
    return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def test_vmap_over_seeds_equals_separate_calls():
    states, batches, keys = seeded_inputs([0, 1])
    v_state, v_info = traced_vmapped_update()(stack(states), stack(batches), stack_keys(keys))
    for i in range(2):
        s_state, s_info = jit_update(SMALL)(states[i], batches[i], keys[i])
        allclose_trees(row(v_state, i), s_state, rtol=1e-5, atol=1e-6)
        allclose_trees(row(v_info, i), s_info, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(v_info["critic_loss"][0]), np.asarray(v_info["critic_loss"][1]))


def test_update_does_not_retrace():
    states, batches, keys = seeded_inputs([3, 4])
    state, batch = stack(states), stack(batches)
    update = traced_vmapped_update()
    for i in range(4):  # assert_max_traces raises on a second trace
        state, _ = update(state, batch, stack_keys([jax.random.key(10 * i), jax.random.key(10 * i + 1)]))
    np.testing.assert_array_equal(np.asarray(state.step), [4, 4])
    with pytest.raises(AssertionError):  # the guard is live: a new shape would retrace
        update(stack(states * 2), stack(batches * 2), stack_keys(keys * 2))
