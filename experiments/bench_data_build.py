"""Phase timings of a local random-data build (collect, Minari write, first read), today's path vs the fast one.

    python experiments/bench_data_build.py --num-steps 1000000 --old   # ~15 min on 2 cores

Everything is built in a temporary Minari root and cache (MINARI_DATASETS_PATH, MOPO_JAX_CACHE_DIR),
removed at the end; the real ~/.minari is never touched. Each phase prints its seconds and steps/s,
the new paths are checked to give exactly the old arrays (--old), and the many-core time is
estimated from the serial chain's rate and the per-process replay, write and read rates.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def phase(results: dict, name: str, steps: int, fn, *args, **kwargs):
    """Run fn(*args, **kwargs), record and print its seconds and steps/s under `name`."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    results[name] = {"seconds": round(seconds, 2), "steps_per_s": round(steps / seconds)}
    print(f"{name:34s} {seconds:8.1f} s {steps / seconds:10.0f} steps/s", flush=True)
    return out


def load() -> str:
    """The 1/5/15-minute load averages and the CPUs, as `uptime` would say."""
    return f"load {os.getloadavg()} on {len(os.sched_getaffinity(0))} CPUs"


def minari_write(data_dir: Path, steps: dict, env_id: str) -> None:
    """Today's writer: MinariStorage.update_episodes over one EpisodeBuffer per episode."""
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    from mopo_jax.data import h5io
    from mopo_jax.envs.make import env_spec

    storage = MinariStorage.new(data_dir, env_spec=env_spec(env_id))
    storage.update_metadata({"dataset_id": "bench/" + data_dir.parent.name})
    storage.update_episodes([EpisodeBuffer(id=i, seed=seed, **arrays)
                             for i, seed, arrays in h5io.episode_slices(steps)])


def new_write(data_dir: Path, steps: dict, env_id: str, workers: int) -> None:
    """The h5io writer behind minari_io.write_minari_dataset (metadata as Minari writes it)."""
    import minari
    from minari.dataset.minari_storage import MinariStorage

    from mopo_jax.data import h5io
    from mopo_jax.envs.make import env_spec

    storage = MinariStorage.new(data_dir, env_spec=env_spec(env_id))
    total_steps, total_episodes = h5io.write_episodes(data_dir, steps, workers)
    storage.update_metadata({"dataset_id": "bench/" + data_dir.parent.name,
                             "minari_version": minari.__version__, "total_steps": total_steps,
                             "total_episodes": total_episodes})


def chain_only(env_id: str, n: int) -> int:
    """Pass 1 of the parallel collection alone (its serial part): returns the episode count."""
    from mopo_jax.data import parallel
    from mopo_jax.envs.make import make_env

    env = make_env(env_id)
    env.action_space.seed(123)
    return sum(1 for _ in parallel.chain_lengths(env, n, 123, parallel.sample_actions(
        env.action_space, n)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--num-steps", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--old", action="store_true", help="also time today's serial paths")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    tmp = Path(tempfile.mkdtemp(prefix="bench-data-"))
    os.environ.update(MINARI_DATASETS_PATH=str(tmp / "minari"), MOPO_JAX_CACHE_DIR=str(tmp / "cache"))
    from mopo_jax.data import collect, minari_io

    n, w, results = args.num_steps, args.workers, {"load_before": load()}
    print(results["load_before"], flush=True)
    try:
        steps = phase(results, f"collect ({w} workers)", n, collect.collect_random_steps,
                      args.env_id, n, num_workers=w)
        if args.old:
            serial = phase(results, "collect (serial, today)", n, collect.collect_random_steps,
                           args.env_id, n, num_workers=1)
            for key in steps:
                np.testing.assert_array_equal(serial[key], steps[key], err_msg=key)
            print("parallel collection == serial collection: every array equal", flush=True)
            del serial
        phase(results, "chain alone (serial part)", n, chain_only, args.env_id, n)
        episodes = len(steps["episode_lengths"])
        results["episodes"] = episodes
        dirs = {}
        for name, fn, extra in ([("write (today: minari)", minari_write, ())] if args.old else []) + [
                ("write (h5io, 1 process)", new_write, (1,)),
                (f"write (h5io, {w} processes)", new_write, (w,))]:
            dirs[name] = tmp / "minari" / "bench" / f"w{len(dirs)}-v0" / "data"
            dirs[name].parent.mkdir(parents=True)
            phase(results, name, n, fn, dirs[name], steps, args.env_id, *extra)
        minari_id = "bench/" + dirs[f"write (h5io, {w} processes)"].parent.name
        reads = [("read (h5io, 1 process)", 1), (f"read (h5io, {w} processes)", w)]
        flat = {name: phase(results, name, n, minari_io.read_flat, minari_id, workers)
                for name, workers in reads}
        if args.old:
            flat["old"] = phase(results, "read (today: minari EpisodeData)", n,
                                minari_io._read_flat_minari, minari_id)
        first = flat[reads[0][0]]
        for arrays in flat.values():
            for key, value in arrays.items():
                np.testing.assert_array_equal(first[key], value, err_msg=key)
        print("every read gives the same flat arrays", flush=True)
        results["load_after"] = load()
        print(results["load_after"], flush=True)
        chain = results["chain alone (serial part)"]["seconds"]
        write1 = results["write (h5io, 1 process)"]["seconds"]
        read1 = results["read (h5io, 1 process)"]["seconds"]
        results["estimate_16_cores_s"] = {
            "collect": round(chain * 1.05, 1), "write (parts + ~1/3 of write1 to merge)":
            round(write1 / 16 + write1 / 3, 1), "read": round(read1 / 16 + 2, 1)}
        print("16-core estimate:", results["estimate_16_cores_s"], flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
