"""One prepared device check for an accelerator session (≤ 10 minutes on one GPU), printing
device, times and ratios:

  1. the speed benchmark (experiments/benchmark.py parts a–d) at the paper's shapes, with 1 and
     16 policies vmapped in one program (part d: aggregate SAC steps/s and the 16-vs-1 ratio);
  2. a full hopper-random run through the real CLI: the dataset (built locally when no Minari copy
     exists: 1M uniform-random steps), the dynamics fit on all of it, then --epochs × 1000 SAC
     steps, with evaluation every --eval-every epochs.

    python experiments/gpu_check.py                   # on the accelerator machine
    python experiments/gpu_check.py --small           # CPU smoke run of the same script (minutes)

Writes experiments/results/gpu-check-<device>.json (atomically; --small writes into a temporary
folder) and prints one summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def _run(cmd: list[str], timeout: float) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main(argv: list[str] | None = None) -> int:
    """Run the checks; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="small shapes and a tiny run (CPU smoke)")
    p.add_argument("--epochs", type=int, default=1000, help="epochs of the full run (1000 = 1M SAC steps)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--timeout", type=float, default=540, help="seconds allowed for the full run")
    args = p.parse_args(argv)
    import jax

    results = tempfile.mkdtemp(prefix="gpu-check-small-") if args.small else RESULTS
    device = jax.devices()[0]
    name = f"{jax.default_backend()}-{device.device_kind}".replace(" ", "_").lower()
    summary = {"device": f"{device.device_kind} ({jax.default_backend()}, {len(jax.devices())} devices)",
               "jax_version": jax.__version__, "host_cores": os.cpu_count()}
    bench_out = os.path.join(results, f"gpu-check-bench-{name}.json")
    bench = [sys.executable, os.path.join(HERE, "benchmark.py"), "--only", "a,b,c,d",
             "--num-seeds", "1,16", "--repeats", "3", "--out", bench_out]
    if args.small:
        bench += ["--quick", "--num-seeds", "1,2"]
    summary["benchmark_seconds"], _ = _run(bench, timeout=300)
    with open(bench_out) as f:
        summary["benchmark"] = json.load(f)
    run_dir = os.path.join(results, f"gpu-check-run-{name}")
    train = [sys.executable, "-m", "mopo_jax.train", "--dataset", "hopper-random", "--offline",
             "--no-progress", "--overwrite", "--logdir", run_dir]
    if args.small:
        train += ["--tiny", "--epochs", "2", "--eval-every", "1"]
    else:
        train += ["--epochs", str(args.epochs), "--eval-every", str(args.eval_every)]
    summary["full_run_seconds"], out = _run(train, timeout=args.timeout)
    summary["full_run"] = json.loads(out.strip().splitlines()[-1])
    path = os.path.join(results, f"gpu-check-{name}.json")
    from mopo_jax.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(summary, indent=2).encode())
    d = summary["benchmark"].get("parts", {}).get("d", {})
    print(json.dumps({"device": summary["device"], "benchmark_s": round(summary["benchmark_seconds"], 1),
                      "part_d": d, "full_run_s": round(summary["full_run_seconds"], 1),
                      "final_normalized_score": summary["full_run"]["final_normalized_score"],
                      "written": path}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
