"""The run driver with injected data, models and evaluation: grids equal single runs, resume is
exact and keeps results, evaluation seeds follow the seed, divergence stops with the checkpoint kept."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax import rundir
from mopo_jax.dynamics.fit import fit_many
from mopo_jax.mopo.config import config_to_dict, tiny
from mopo_jax.keys import policy_key
from mopo_jax.mopo.grid import Grid, GridPoint, eval_seeds
from mopo_jax.mopo.run import RunSpec, RunStopped, TrainingDiverged, resume_mismatch, run
from mopo_jax.mopo.train import make_train
from mopo_jax.sac.policy import deterministic_action
from mopo_jax.sac.policy_io import load_policy

CFG = tiny("hopper-random", epochs=4, steps_per_epoch=6, rollout_batch_size=32, eval_every=2)


@pytest.fixture(scope="module")
def setup(hopper_small):
    data = jax.tree.map(lambda x: jnp.asarray(x[:1500]), hopper_small.transitions())
    models, _ = fit_many(jax.vmap(jax.random.key)(jnp.arange(3)), data, CFG.dynamics)
    return data, models  # ensembles of seeds 0, 1, 2


class FakeEval:
    """Returns the mean first-layer weight of each actor as every episode's return (so results
    depend on the policy), and records the seeds asked for."""

    def __init__(self, fail_on_call=None):
        self.seeds, self.calls, self.fail_on_call = [], 0, fail_on_call

    def __call__(self, actors, seeds):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("killed during evaluation")
        self.seeds.append(np.asarray(seeds))
        w = np.asarray(actors["trunk"]["hidden_0"]["kernel"]).mean(axis=(1, 2))
        return np.repeat(w[:, None], seeds.shape[1], axis=1) * 1000


def _spec(tmp_path, name, grid, **kw):
    return RunSpec(kw.pop("config", CFG), grid, tmp_path / name, {"dataset": CFG.dataset},
                   (-20.0, 3000.0), **kw)


def _rows(path):
    return [{k: v for k, v in r.items() if k != "chunk_seconds"}
            for r in rundir.read_jsonl(path / "metrics.jsonl")]


def _models(models, seeds):
    return jax.tree.map(lambda x: x[jnp.asarray(seeds)], models)


@pytest.mark.slow
def test_grid_equals_single_runs(setup, tmp_path):
    data, models = setup
    grid = Grid((0, 1), (0.5, 2.0), (5,))
    run(_spec(tmp_path, "grid", grid), data, _models(models, [0, 1]), evaluate=FakeEval())
    single_eval = FakeEval()
    run(_spec(tmp_path, "one", Grid((1,), (2.0,), (5,))), data, _models(models, [1]),
        evaluate=single_eval)
    grid_rows = [r for r in _rows(tmp_path / "grid") if r["policy"] == "h5-lam2-seed1"]
    one_rows = _rows(tmp_path / "one")
    assert len(grid_rows) == len(one_rows) == CFG.epochs
    for a, b in zip(grid_rows, one_rows):
        assert a.keys() == b.keys() and a["seed_index"] == 1 and b["seed_index"] == 0
        for k in a:
            if isinstance(a[k], float):
                np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # Evaluation seeds depend on (seed, λ, h, epoch), not on the policy's position in the run;
    # each evaluation and the final one get their own start states.
    policy = GridPoint(1, 1, 2.0, 5)
    asked = [s[0].tolist() for s in single_eval.seeds]
    assert asked == [eval_seeds(policy, 1, 2).tolist(), eval_seeds(policy, 1, 4).tolist(),
                     eval_seeds(policy, CFG.final_eval_episodes, None).tolist()]
    seeds = [int(s) for p in grid.policies() for e in (2, 4, None) for s in eval_seeds(p, 3, e)]
    assert len(set(seeds)) == len(seeds)
    # The λ of each policy is traced state: the penalised reward uses it.
    for r in _rows(tmp_path / "grid"):
        np.testing.assert_allclose(r["rollout_reward"], r["rollout_raw_reward"]
                                   - r["penalty_coef"] * r["rollout_penalty"], atol=2e-3)


@pytest.mark.slow
def test_single_run_matches_the_pure_loop(setup, tmp_path):
    data, models = setup
    run(_spec(tmp_path, "one", Grid((2,), (1.0,), (5,))), data, _models(models, [2]),
        evaluate=FakeEval())
    fns = make_train(CFG, data, _models(models, [2]))
    one = jax.tree.map(lambda x: x[0], _models(models, [2]))
    _, direct = fns.run_epochs(fns.init(policy_key(2), 1.0), data, one, CFG.epochs)
    np.testing.assert_allclose([r["critic_loss"] for r in _rows(tmp_path / "one")],
                               direct["critic_loss"], rtol=1e-4)


@pytest.mark.slow
def test_kill_and_resume_reproduce_the_uninterrupted_run(setup, tmp_path):
    data, models = setup
    grid = Grid((0,), (1.0, 3.0), (5,))
    run(_spec(tmp_path, "whole", grid), data, _models(models, [0]), evaluate=FakeEval())
    spec = _spec(tmp_path, "killed", grid, checkpoint_seconds=0.0)
    with pytest.raises(KeyboardInterrupt):
        run(spec, data, _models(models, [0]), evaluate=FakeEval(fail_on_call=2))
    assert len(_rows(tmp_path / "killed")) == 2 * 2  # the first chunk's rows, checkpointed
    resumed = run(_spec(tmp_path, "killed", grid, resume=True), data, _models(models, [0]),
                  evaluate=FakeEval())
    assert _rows(tmp_path / "whole") == _rows(tmp_path / "killed")
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert resumed["final_return_mean"] == whole["final_return_mean"]
    assert len(resumed["policies"]["h5-lam3-seed0"]["evaluations"]) == 2
    # Resuming a finished run keeps every evaluation; --epochs larger extends it.
    again = run(_spec(tmp_path, "killed", grid, resume=True), data, _models(models, [0]),
                evaluate=FakeEval())
    assert again["policies"] == resumed["policies"]
    longer = tiny("hopper-random", epochs=6, steps_per_epoch=6, rollout_batch_size=32, eval_every=2)
    extended = run(_spec(tmp_path, "killed", grid, resume=True, config=longer), data,
                   _models(models, [0]), evaluate=FakeEval())
    assert [e["epoch"] for e in extended["policies"]["h5-lam1-seed0"]["evaluations"]] == [2, 4, 6]
    # A requested stop finishes and checkpoints the chunk in flight: nothing is recomputed.
    asked = []
    with pytest.raises(RunStopped) as stopped:
        run(_spec(tmp_path, "stopped", grid), data, _models(models, [0]), evaluate=FakeEval(),
            stop_requested=lambda: asked.append(1) or True)
    assert stopped.value.epoch == 2 and len(asked) == 1
    assert rundir.checkpoint_metadata(tmp_path / "stopped")["epoch"] == 2
    assert _rows(tmp_path / "stopped") == _rows(tmp_path / "whole")[:2 * 2]
    run(_spec(tmp_path, "stopped", grid, resume=True), data, _models(models, [0]),
        evaluate=FakeEval())
    assert _rows(tmp_path / "whole") == _rows(tmp_path / "stopped")


@pytest.mark.slow
def test_final_evaluation_on_fresh_states_and_final_only_mode(setup, tmp_path):
    data, models = setup
    grid = Grid((0,), (1.0,), (5,))
    fake = FakeEval()
    results = run(_spec(tmp_path, "e", grid), data, _models(models, [0]), evaluate=fake)
    rows = _rows(tmp_path / "e")
    assert [r["epoch"] for r in rows if "eval_return" in r] == [2, 4]
    assert [r["epoch"] for r in rows if "final_eval_return" in r] == [4]
    assert fake.seeds[-1].shape == (1, CFG.final_eval_episodes)
    summary = results["policies"]["h5-lam1-seed0"]
    assert summary["final_eval_episodes"] == CFG.final_eval_episodes
    assert summary["final_eval_return_mean"] == rows[-1]["final_eval_return"]
    assert summary["last10_evaluations"] == 2 and "optimistic" in results["notes"]["best"]
    assert load_policy(tmp_path / "e" / "policies" / "h5-lam1-seed0-best").metadata["optimistic"]
    # --eval-every 0: no evaluation during training, only the final one.
    only_final = tiny("hopper-random", epochs=4, steps_per_epoch=6, rollout_batch_size=32,
                      eval_every=0)
    fake = FakeEval()
    results = run(_spec(tmp_path, "f", grid, config=only_final), data, _models(models, [0]),
                  evaluate=fake)
    rows = _rows(tmp_path / "f")
    assert len(fake.seeds) == 1 and not any("eval_return" in r for r in rows)
    assert [r["epoch"] for r in rows if "final_eval_return" in r] == [4]
    assert results["policies"]["h5-lam1-seed0"]["final_eval_return_mean"] is not None
    # The same training numbers as the run that evaluated every 2 epochs.
    assert [r["critic_loss"] for r in rows] == [r["critic_loss"] for r in _rows(tmp_path / "e")]


def test_resume_mismatch_names_only_the_differing_fields():
    grid = Grid((0,), (1.0,), (5,))
    saved = {"config": config_to_dict(CFG), "grid": grid.to_dict()}
    assert resume_mismatch(saved, CFG, grid) == []
    other = tiny("hopper-random", epochs=9, steps_per_epoch=7, rollout_batch_size=32, eval_every=2)
    assert resume_mismatch(saved, other, Grid((0,), (2.0,), (5,))) == [
        "config.steps_per_epoch: saved 6, requested 7", "grid.penalty_coefs: saved [1.0], requested [2.0]"]


@pytest.mark.slow
def test_best_and_final_policies_load_as_the_training_actor(setup, tmp_path):
    data, models = setup
    run(_spec(tmp_path, "p", Grid((0,), (1.0,), (5,))), data, _models(models, [0]), evaluate=FakeEval())
    final = load_policy(tmp_path / "p" / "policies" / "h5-lam1-seed0-final")
    best = load_policy(tmp_path / "p" / "policies" / "h5-lam1-seed0-best")
    assert final.metadata["epoch"] == CFG.epochs and best.metadata["kind"] == "best"
    obs = np.asarray(data.observations[:7])
    fns = make_train(CFG, data, jax.tree.map(lambda x: x[0], models))
    one = jax.tree.map(lambda x: x[0], _models(models, [0]))
    state, _ = fns.run_epochs(fns.init(policy_key(0), 1.0), data, one, CFG.epochs)
    np.testing.assert_allclose(final(obs), deterministic_action(state.sac.actor_params, obs),
                               rtol=1e-5, atol=1e-6)


def test_divergence_stops_with_an_error_and_keeps_the_checkpoint(setup, tmp_path):
    data, models = setup
    grid = Grid((0,), (1.0,), (5,))
    spec = _spec(tmp_path, "nan", grid, checkpoint_seconds=0.0)
    clock = iter(range(1000))
    bad = data._replace(rewards=data.rewards.at[:].set(jnp.nan))
    with pytest.raises(TrainingDiverged, match="critic_loss"):
        run(spec, bad, _models(models, [0]), evaluate=FakeEval(), clock=lambda: next(clock))
    assert rundir.checkpoint_metadata(tmp_path / "nan") is None  # nothing bad was checkpointed
