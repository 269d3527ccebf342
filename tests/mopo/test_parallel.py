"""Many seeds at once: vmapped ensemble fits equal separate fits; seeds sharded over 2 forced CPU
devices give the same results as on one device (functional API and the CLI)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax.mopo.config import tiny
from mopo_jax.dynamics.fit import fit, fit_many
from mopo_jax.sharding import seed_mesh

CFG = tiny("hopper-random", epochs=2, steps_per_epoch=8, rollout_batch_size=32)


def test_fit_many_equals_separate_fits(hopper_small):
    data = jax.tree.map(lambda x: jnp.asarray(x[:1500]), hopper_small.transitions())
    keys = jax.random.split(jax.random.key(5), 2)
    models, reports = fit_many(keys, data, CFG.dynamics)
    assert models.elite_idx.shape == (2, CFG.dynamics.num_elites)
    for i in range(2):
        single, report = fit(keys[i], data, CFG.dynamics)
        assert int(reports.epochs[i]) == int(report.epochs)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b),
                                                             rtol=1e-4, atol=1e-5), models, single)
    assert not np.allclose(models.params["mean_head"]["w"][0], models.params["mean_head"]["w"][1])
    seen = []  # driven epoch by epoch from the host: the same result, with progress
    stepped, stepped_reports = fit_many(keys, data, CFG.dynamics, on_epoch=seen.append)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stepped, models)
    np.testing.assert_array_equal(stepped_reports.epochs, reports.epochs)
    assert [i.epoch for i in seen] == list(range(1, int(np.max(reports.epochs)) + 1))
    assert seen[-1].holdout_mse.shape == (2, CFG.dynamics.num_members)


def test_seed_mesh_uses_largest_divisor():
    cpu = jax.devices("cpu")[0]
    fake = [cpu] * 4  # only the count matters for the choice
    assert seed_mesh(6, devices=fake).devices.size == 3
    assert seed_mesh(8, devices=fake).devices.size == 4
    assert seed_mesh(5, devices=fake).devices.size == 1
    assert seed_mesh(8, num_devices=2, devices=fake).devices.size == 2
    with pytest.raises(ValueError, match="num_seeds"):
        seed_mesh(0)


_SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from mopo_jax.mopo.config import tiny
    from mopo_jax.dynamics.fit import fit_many
    from mopo_jax.mopo.train import make_train
    from mopo_jax.sharding import replicate, seed_mesh, shard_seeds
    from mopo_jax.train import main

    assert len(jax.devices()) == 2, jax.devices()
    cfg = tiny("hopper-random", epochs=2, steps_per_epoch=8, rollout_batch_size=32)
    k = jax.random.split(jax.random.key(0), 4)
    obs = 0.1 * jax.random.normal(k[0], (600, 11)) + jnp.zeros(11).at[0].set(1.25)
    act = jax.random.uniform(k[1], (600, 3), minval=-1, maxval=1)
    nxt = obs + 0.01 * jax.random.normal(k[2], (600, 11))
    from mopo_jax.types import Transitions
    data = Transitions(obs, act, jax.random.normal(k[3], (600,)), nxt, jnp.zeros(600))
    models, _ = fit_many(jax.random.split(jax.random.key(1), 2), data, cfg.dynamics)
    fns = make_train(cfg, data, jax.tree.map(lambda x: x[0], models))
    run = jax.jit(jax.vmap(lambda s, d, m: fns.run_epochs(s, d, m, 2), in_axes=(0, None, 0)))
    state = jax.vmap(fns.init)(jax.random.split(jax.random.key(2), 2))
    one_state, one = run(state, data, models)
    mesh = seed_mesh(2)
    two_state, two = run(shard_seeds(state, mesh), replicate(data, mesh), shard_seeds(models, mesh))
    placed = {d.id for d in two_state.sac.actor_params["trunk"]["output"]["kernel"].sharding.device_set}
    assert placed == {0, 1}, placed
    for a, b in zip(jax.tree.leaves((one_state.sac, one)), jax.tree.leaves((two_state.sac, two))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
    # The CLI: 2 seeds split over 2 devices vs the same on 1 device.
    for devices in ("2", "1"):
        assert main(["--dataset", "hopper-random", "--tiny", "--dataset-steps", "1500", "--offline",
                     "--num-seeds", "2", "--num-devices", devices,
                     "--logdir", sys.argv[1] + "/dev" + devices]) == 0
    print("OK")
""")


def test_sharded_run_equals_unsharded_on_two_cpu_devices(data_dirs, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    used = {d: json.loads((tmp_path / f"dev{d}" / "config.json").read_text())["devices_used"]
            for d in ("1", "2")}
    assert used == {"1": 1, "2": 2}

    def rows(d):
        lines = (tmp_path / f"dev{d}" / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(ln).items() if k != "chunk_seconds"} for ln in lines]

    one, two = rows("1"), rows("2")
    assert len(one) == len(two) == 2 * CFG.epochs
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        numeric = [k for k in a if isinstance(a[k], (int, float)) and a[k] is not None]
        other = [k for k in a if k not in numeric and k != "eval_returns"]
        assert {k: a[k] for k in other} == {k: b[k] for k in other}
        np.testing.assert_allclose(a.get("eval_returns", []), b.get("eval_returns", []), rtol=1e-4)
        np.testing.assert_allclose([a[k] for k in numeric], [b[k] for k in numeric], rtol=1e-4,
                                   atol=1e-5)
