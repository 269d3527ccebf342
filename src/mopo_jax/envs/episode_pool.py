"""Real-env evaluation episodes spread over worker processes, with the in-process returns exactly.

On an accelerator the compiled epoch takes a fraction of a second, and evaluating 10 episodes per
epoch on one host core (MuJoCo steps and one actor call per step) becomes what paces a run. An
`EpisodePool` runs the episodes of one evaluation in parallel, one whole episode per task, each
with the reference loop of `evaluate.evaluate_policy` (one env, one-row actor calls on the CPU),
so every return equals the one `evaluate.evaluate_policies` computes in-process.

The workers are spawned (never forked from a process that runs JAX) and choose JAX's CPU backend
in their initializer, before any backend starts, so they take no accelerator memory. As with any
spawned pool, each worker imports the parent's main module first: a script that makes a pool
must keep its JAX work under `if __name__ == "__main__":`, or each worker would start that work
(and an accelerator backend) too.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import jax
import numpy as np

from mopo_jax.envs.evaluate import EnvSource, check_episode_seeds, evaluate_policy

PARENT_POLL_S = 1.0  # how often a worker checks that its parent still runs


class EvaluationWorkerDied(RuntimeError):
    """A worker process ended during an evaluation (killed, out of memory, a crash)."""


def _exit_with_parent(parent: int) -> None:
    """Watchdog thread of a worker: end the worker once its parent is gone (a SIGKILLed train
    process cannot close its pool, and its workers would wait for tasks forever)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def _init_worker() -> None:
    """Worker start: JAX's CPU backend only; SIGINT is left to the parent (whose first Ctrl-C
    finishes the chunk in flight, evaluation included); the worker ends with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jax.config.update("jax_platforms", "cpu")
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _one_episode(task: tuple) -> float:
    """(actor params of one policy as numpy arrays, env source, reset seed) -> the return."""
    params, make_env, seed = task
    return float(evaluate_policy(params, make_env, episodes=1, seed=seed)[0])


class EpisodePool:
    """`workers` processes that evaluate episodes of `make_env` (a Gymnasium id or a picklable
    factory such as `functools.partial(make_eval_env, task)`).

        with EpisodePool("Hopper-v5", workers=10) as pool:
            returns = pool.evaluate(actor_params, episode_seeds)   # [P, E] float64

    `evaluate` has the signature and the results of `evaluate.evaluate_policies`. Workers start
    with the first evaluation (a few seconds: each imports JAX and MuJoCo) and stop on `close`.
    """

    def __init__(self, make_env: EnvSource, workers: int):
        if workers < 1:
            raise ValueError(f"workers={workers}: need >= 1 (0 means: evaluate in-process, "
                             "without a pool)")
        self.make_env, self.workers = make_env, workers
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker)

    def evaluate(self, actor_params, episode_seeds) -> np.ndarray:
        """Returns [P, E] float64 of P policies (params leaves [P, ...]) on E episodes each,
        episode (p, e) reset with episode_seeds[p, e]. One task per episode, handed to the
        workers one at a time as they free up (episode lengths differ). Raises
        EvaluationWorkerDied when a worker ends mid-evaluation (the pool is then unusable)."""
        seeds = check_episode_seeds(episode_seeds, actor_params)
        if seeds.size == 0:
            return np.zeros(seeds.shape)
        host = jax.tree.map(np.asarray, jax.device_get(actor_params))
        per_policy = [jax.tree.map(lambda leaf, p=p: leaf[p], host) for p in range(seeds.shape[0])]
        tasks = [(per_policy[p], self.make_env, int(seeds[p, e]))
                 for p in range(seeds.shape[0]) for e in range(seeds.shape[1])]
        try:
            returns = list(self._pool.map(_one_episode, tasks))
        except BrokenProcessPool as err:  # a pool of dead workers would otherwise wait forever
            raise EvaluationWorkerDied(
                f"an evaluation worker process ended during an evaluation ({err}); the run keeps "
                "its last checkpoint: --resume continues it (with fewer --eval-workers if memory "
                "ran out)") from None
        return np.asarray(returns, np.float64).reshape(seeds.shape)

    def close(self) -> None:
        """Stop the workers (idempotent); episodes not yet started are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> EpisodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
