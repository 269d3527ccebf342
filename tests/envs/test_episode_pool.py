"""envs.episode_pool.EpisodePool: episodes in worker processes return exactly what the in-process
evaluation returns, for trained policies whose episodes end at very different times."""

import functools
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from mopo_jax import load_policy
from mopo_jax.envs.episode_pool import EpisodePool, EvaluationWorkerDied
from mopo_jax.envs.evaluate import evaluate_policies
from mopo_jax.envs.make import make_env

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"
# the newest hopper-random publication (a new one replaces the older ones): seeds 0 and 1 stay in it
PUBLISHED = sorted(RESULTS.glob("*-hopper-random/campaign.json"))[-1].parent


def _published_actors():
    """Seed 0's final policy (stands for all 1000 steps) and seed 1's (falls within ~200),
    stacked [2, ...]."""
    policies = [load_policy(PUBLISHED / f"hopper-random-seed{s}" / "policies" / f"h5-lam1-seed{s}-final")
                for s in (0, 1)]
    return jax.tree.map(lambda *leaves: np.stack(leaves), *(p.params for p in policies))


def test_pool_returns_equal_the_in_process_evaluation():
    actors = _published_actors()
    seeds = np.array([[11, 12, 13], [21, 22, 23]])
    expected = evaluate_policies(actors, "Hopper-v5", seeds)
    assert expected[0].min() > 900 > 400 > expected[1].max()  # one long, one short episode kind
    with EpisodePool("Hopper-v5", workers=2) as pool:
        np.testing.assert_array_equal(pool.evaluate(actors, seeds), expected)
        np.testing.assert_array_equal(pool.evaluate(actors, seeds[:, :0]), np.zeros((2, 0)))
    factory = functools.partial(make_env, "Hopper-v5")  # a picklable factory works as well
    with EpisodePool(factory, workers=1) as pool:
        got = pool.evaluate(jax.tree.map(lambda x: x[1:], actors), seeds[1:, :1])
    np.testing.assert_array_equal(got, expected[1:, :1])


def test_pool_arguments_are_checked():
    with pytest.raises(ValueError, match="workers=0"):
        EpisodePool("Hopper-v5", workers=0)


def _env_that_kills_its_process():
    os._exit(3)  # as an out-of-memory kill or a crash would end a worker


def test_a_worker_that_dies_raises_instead_of_waiting_forever():
    """Reproducer: with multiprocessing.Pool a task whose worker died was never answered, so the
    run would have waited forever."""
    actors = jax.tree.map(lambda x: x[1:], _published_actors())
    with EpisodePool(_env_that_kills_its_process, workers=1) as pool:
        with pytest.raises(EvaluationWorkerDied, match="--resume"):
            pool.evaluate(actors, np.array([[5, 6]]))


@pytest.mark.slow  # a subprocess with its own pool: ~10 s
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """Reproducer: after a SIGKILL of the train process its pool's workers waited for tasks forever."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys, time, numpy as np\n"
              "from mopo_jax.envs.episode_pool import EpisodePool\n"
              "sys.path.insert(0, sys.argv[1])\n"
              "from test_episode_pool import _published_actors\n"
              "pool = EpisodePool('Hopper-v5', workers=2)\n"
              "pool.evaluate(_published_actors(), np.array([[1, 2], [3, 4]]))\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        workers = [int(c) for c in children
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        proc.kill()
