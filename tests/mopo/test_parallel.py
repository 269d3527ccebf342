"""Many seeds at once: vmapped ensemble fits equal separate fits; seeds sharded over 2 forced CPU
devices, and over 2 processes (jax.distributed, also when resumed), give the same results as on one device."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopo_jax import rundir
from mopo_jax.mopo.config import tiny
from mopo_jax.dynamics.fit import fit, fit_many
from mopo_jax.sharding import combine_rows, gather, owned_rows, seed_mesh, shard_seeds

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_two(run_dir, *extra: str, second: tuple[str, ...] = ()) -> list[subprocess.Popen]:
    """Start the CLI as 2 local CPU processes (one device each), coordinator on 127.0.0.1;
    `second`: flags given to process 1 only."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "mopo_jax.train", "--dataset", "hopper-random", "--tiny",
         "--dataset-steps", "1500", "--offline", "--num-seeds", "2", "--logdir", str(run_dir),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
         *extra, *(second if i else ())],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]


def _two_processes(run_dir, *extra: str, second: tuple[str, ...] = ()) -> list[subprocess.CompletedProcess]:
    """The CLI as 2 local CPU processes (see `_start_two`), waited for."""
    procs = _start_two(run_dir, *extra, second=second)
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _rows(run_dir) -> list[dict]:
    """metrics.jsonl rows without timings, and without the final evaluation of a shorter run that
    was later extended (kept in the file, at the epoch that was its last)."""
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["epoch"] for r in rows)
    return [{k: v for k, v in r.items() if k != "chunk_seconds"
             and not (k.startswith("final_eval") and r["epoch"] < last)} for r in rows]


def _assert_same_rows(one: list[dict], other: list[dict]) -> None:
    """Equal up to float32 rounding of a different vmap width (1 vs 2 policies per device)."""
    assert len(one) == len(other) == 2 * CFG.epochs
    for a, b in zip(one, other):
        assert a.keys() == b.keys()
        numeric = [k for k in a if isinstance(a[k], (int, float)) and a[k] is not None]
        rest = [k for k in a if k not in numeric and k != "eval_returns"]
        assert {k: a[k] for k in rest} == {k: b[k] for k in rest}
        np.testing.assert_allclose(a.get("eval_returns", []), b.get("eval_returns", []), rtol=1e-4)
        np.testing.assert_allclose([a[k] for k in numeric], [b[k] for k in numeric], rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.slow
def test_run_on_two_devices_and_two_processes_equals_one_device(data_dirs, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    # The ensembles are cached by the script's runs. 2 processes run 1 epoch, then resume to 2.
    for extra in (("--epochs", "1"), ("--resume",)):
        two = _two_processes(tmp_path / "proc2", *extra)
        assert [p.returncode for p in two] == [0, 0], two[0].stderr[-2000:] + two[1].stderr[-2000:]
        assert len(_rows(tmp_path / "proc2")) == 2 * (1 if extra[0] == "--epochs" else CFG.epochs)
    assert '"run_dir"' in two[0].stdout and '"run_dir"' not in two[1].stdout  # process 0 reports
    saved = {d: json.loads((tmp_path / d / "config.json").read_text())
             for d in ("dev1", "dev2", "proc2")}
    assert {d: c["devices_used"] for d, c in saved.items()} == {"dev1": 1, "dev2": 2, "proc2": 2}
    assert saved["proc2"]["processes"] == 2 and saved["dev2"]["processes"] == 1
    one = _rows(tmp_path / "dev1")
    _assert_same_rows(one, _rows(tmp_path / "dev2"))
    _assert_same_rows(one, _rows(tmp_path / "proc2"))
    assert sorted(p.name for p in (tmp_path / "proc2" / "policies").iterdir()) == sorted(
        p.name for p in (tmp_path / "dev1" / "policies").iterdir())


@pytest.mark.slow
def test_processes_started_with_different_flags_are_refused(data_dirs, tmp_path):
    """Reproducer: process 1 started with --penalty-coef 3 trained λ=3 under process 0's λ=1 label."""
    procs = _two_processes(tmp_path / "mixed", "--epochs", "1", second=("--penalty-coef", "3"))
    for proc in procs:
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "processes [1] were started with other flags than process 0" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mixed").exists()


def test_gather_owned_rows_and_combine_rows_in_one_process():
    mesh = seed_mesh(3)
    tree = {"key": jax.random.split(jax.random.key(3), 3), "x": jnp.arange(6.0).reshape(3, 2)}
    placed = shard_seeds(tree, mesh)
    host = gather(placed)
    np.testing.assert_array_equal(host["key"], jax.random.key_data(tree["key"]))  # raw key data
    np.testing.assert_array_equal(host["x"], np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(owned_rows(placed["x"]), [0, 1, 2])  # one process holds all
    local = np.array([[1.5], [2.5]])
    np.testing.assert_array_equal(combine_rows(local, np.array([0, 2]), 3), [[1.5], [0.0], [2.5]])


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_checkpointed_epoch(data_dirs, tmp_path):
    """The clean stop of a multi-process run: SIGTERM to process 1 alone (not the writer) ends
    both processes after the same chunk, with a checkpoint at the last epoch written."""
    import signal
    import time

    run_dir = tmp_path / "stopped"
    procs = _start_two(run_dir, "--epochs", "100000", "--checkpoint-minutes", "60")
    try:
        metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 300
        while time.monotonic() < deadline and (
                not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-2000:]
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGTERM)
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [130, 130], results[0][1][-2000:] + results[1][1][-2000:]
    last = max(r["epoch"] for r in _rows(run_dir))
    assert 2 <= last < 100000 and rundir.checkpoint_metadata(run_dir)["epoch"] == last
    assert all("Traceback" not in err for _, err in results)
