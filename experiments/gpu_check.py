"""The prepared GPU check, sized to a 15-minute device session and resumable across commands.

Parts, in priority order (experiments/gpu/plan.py has each one's expected H200 time and why):
  bench    experiments/benchmark.py parts a-d at the paper's shapes with 1 and 16 policies
           vmapped in one program (aggregate SAC steps/s, the 16-vs-1 ratio); skipped once its
           results file exists in the work folder.
  dataset  --dataset (default hopper-random; a random level) built locally (1M uniform-random
           steps; no download is tried), on the host CPU only, beside the benchmark.
  fit      the dynamics ensemble on all of it (`python -m mopo_jax.dynamics`, into the model cache
           that training reads); a stopped fit saves its state and continues next time.
  policy   the full run: `python -m mopo_jax.train --dataset D --seed N` with the original's
           defaults (1000 epochs, evaluation every epoch, a 100-episode final evaluation),
           checkpointing every minute and continued with --resume. With --campaign the runs are
           the campaign's own (`experiments/campaign.py run --no-publish` on a queue of one entry
           per seed of --seeds N,M,...): their campaign.json and campaign.log record the attempts,
           and each train command fits its seed's ensemble itself (the fit part is skipped),
           exactly as the campaign runs them on a CPU; bring the run folders back and adopt them.

A part's state records what it made (the dataset; the seeds), so the same work folder serves a
later command for other seeds: the built dataset is reused, and the runs are new.

    python experiments/gpu_check.py --budget-seconds 530   # on the GPU (experiments/gpu/README.md)
    python experiments/gpu_check.py --small                # CPU smoke run of the same script

--budget-seconds: a part starts only if it can finish (a resumable one: make progress) in the
time left, and a running part is stopped (SIGINT, state saved) before the budget ends, so the
same command run again continues. State lives in --work (default runs/gpu-check, git-ignored;
kept between commands on a warm device machine). After every part, and every 30 s during one,
the summary is written atomically to --out (default $OUT when set, else experiments/results/):
gpu-check-<device>.json, with the device, jax version, each phase's wall-clock, SAC steps/s and
the run's scores. Exit code 0 when every part is done, 3 when the budget stopped it, 1 on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from gpu import plan
from gpu.jobs import probe, read_json, write_json
from gpu.parts import Parts, bench_path, device_name

SMALL_DATA = ["--num-steps", "2000"]
SMALL_EPOCHS = 3  # the policy epochs of --small (the train command's or the queue entry's)
SMALL_TRAIN = ["--dataset-steps", "2000", "--steps-per-epoch", "20",
               "--rollout-batch-size", "64", "--eval-episodes", "1", "--final-eval-episodes", "2",
               "--dynamics.max-epochs", "3", "--sac.hidden-sizes", "32", "32",
               "--sac.batch-size", "32"]


def parse_seeds(text: str) -> list[int]:
    """'2' -> [2]; '0,1' -> [0, 1]: distinct non-negative seeds, in the order given."""
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seeds as N or N,M,... (e.g. 0,1)") from None
    if any(x < 0 for x in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be distinct and non-negative")
    return seeds


def run_dirs(args, work: Path) -> list[Path]:
    """The train runs' folders: [work/run], or the campaign's run folder of each seed."""
    if not args.campaign:
        return [work / "run"]
    return [work / "campaign" / f"{args.dataset}-seed{seed}" for seed in args.seeds]


def part_targets(args) -> dict[str, str]:
    """What each part makes. A part recorded as done for another target (an earlier command's
    dataset or seeds, in the same work folder) is not done for this one."""
    seeds = ",".join(map(str, args.seeds))
    return {"bench": "benchmark", "dataset": args.dataset,
            "fit": f"{args.dataset} seed {args.seeds[0]}",
            "policy": f"{args.dataset} seeds {seeds}" + (" (campaign)" if args.campaign else "")}


def train_flags(args) -> list[str]:
    """The flags both policy commands pass to the train command: the tiny sizes of --small and
    --eval-workers (the epochs go separately: a campaign takes them from its queue entry)."""
    flags = list(SMALL_TRAIN) if args.small else []
    return flags + (["--eval-workers", str(args.eval_workers)] if args.eval_workers else [])


def campaign_policy(args, work: Path) -> list[str]:
    """The policy part with --campaign: the campaign on a queue of one entry per seed, written
    to work (the runs go one after another; a finished one is skipped when the part runs again)."""
    train = train_flags(args)
    if args.small:  # the campaign's default checkpoint cadence otherwise
        train += ["--checkpoint-minutes", str(args.checkpoint_minutes)]
    epochs = args.epochs or (SMALL_EPOCHS if args.small else 1000)
    write_json(work / "queue.json", [{"dataset": args.dataset, "seed": seed, "epochs": epochs}
                                     for seed in args.seeds])
    return [sys.executable, str(ROOT / "experiments" / "campaign.py"), "run", "--no-publish",
            "--queue-json", str(work / "queue.json"), "--root", str(work / "campaign"),
            *(["--", *train] if train else [])]


def commands(args, work: Path, name: str) -> dict[str, list[str]]:
    """Each part's command line."""
    py, small = sys.executable, args.small
    bench = [py, str(HERE / "benchmark.py"), "--only", args.bench_parts, "--num-seeds", "1,16",
             "--repeats", "3", "--out", str(bench_path(work, name))]
    if small:
        bench += ["--quick", "--num-seeds", "1,2", "--repeats", "2"]
    data = [py, "-m", "mopo_jax.data", "--dataset", args.dataset, "--offline"]
    fit = [py, "-m", "mopo_jax.dynamics", "--dataset", args.dataset, "--offline", "--seed",
           str(args.seeds[0])]
    train = [py, "-m", "mopo_jax.train", "--dataset", args.dataset, "--offline", "--resume",
             "--seed", str(args.seeds[0]), "--logdir", str(work / "run"),
             "--checkpoint-minutes", str(args.checkpoint_minutes), *train_flags(args)]
    if small:
        data += SMALL_DATA
        fit += SMALL_DATA + ["--max-epochs", "3"]
    epochs = args.epochs or (SMALL_EPOCHS if small else None)
    if epochs:
        train += ["--epochs", str(epochs)]
    if args.campaign:
        train = campaign_policy(args, work)
    return {"bench": bench, "dataset": data, "fit": fit, "policy": train}


def build_parser() -> argparse.ArgumentParser:
    """The check's command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny sizes (CPU smoke run, minutes)")
    p.add_argument("--budget-seconds", type=float, default=None, help="wall-clock for this command")
    p.add_argument("--work", type=Path,
                   help="state folder (default runs/gpu-check; --small: a new temp folder)")
    p.add_argument("--out", type=Path, help="results folder (default $OUT, else experiments/results)")
    p.add_argument("--epochs", type=int, help="policy epochs (default: the train CLI's, 1000)")
    p.add_argument("--checkpoint-minutes", type=float,
                   help="run checkpoint cadence (default 1; --small: every epoch)")
    p.add_argument("--fresh", action="store_true", help="delete the work folder's state first")
    p.add_argument("--seeds", "--seed", dest="seeds", type=parse_seeds, default=[0],
                   help="the run's (and its ensemble's) seed; with --campaign a list, N,M,...: "
                   "the runs go one after another")
    p.add_argument("--campaign", action="store_true", help="run the policy part as the campaign's "
                   "runs <dataset>-seed<N> (each fits its own ensemble; no fit part)")
    p.add_argument("--dataset", default="hopper-random", help="the run's dataset, built on the "
                   "machine (a random level: a medium-replay one needs a behaviour history)")
    p.add_argument("--bench-parts", default="a,b,c,d", help="benchmark.py --only (default a,b,c,d)")
    p.add_argument("--eval-workers", type=int, default=0, help="the train command's --eval-workers: "
                   "evaluation episodes in this many processes (0: in the train process)")
    return p


def setup(args) -> tuple[Path, Path, dict]:
    """The work folder (made; emptied first with --fresh), the results folder and the parts'
    environment (the caches inside the work folder unless the caller's environment names them;
    always with --small)."""
    work = args.work or (Path(tempfile.mkdtemp(prefix="gpu-check-small-")) if args.small
                         else ROOT / "runs" / "gpu-check")
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else
                           work / "out" if args.small else HERE / "results")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "disable")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT / "src")]))
    for var, sub in (("MOPO_JAX_CACHE_DIR", "cache"), ("MINARI_DATASETS_PATH", "minari")):
        if args.small or var not in env:  # --small never touches the user's caches
            env[var] = str(work / sub)
    return work, out_dir, env


def load_state(args, work: Path, env: dict, targets: dict[str, str]) -> dict:
    """The work folder's state, started (device probe) when there is none, with this command
    counted and the parts done for another target (`part_targets`: dataset, seeds) moved to
    `earlier_parts`."""
    state = read_json(work / "state.json") or {}
    if state and state.get("small") != args.small:
        raise SystemExit(f"{work} holds a {'small' if state['small'] else 'full'} check: use "
                         "another --work, or --fresh")
    if not state:
        state = {"small": args.small, "machine": probe(env), "parts": {}, "commands": 0}
    state["commands"] += 1
    state.setdefault("command_starts", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    state["budget_seconds"] = args.budget_seconds
    state["plan"] = {x.name: {"estimate_s": x.estimate_s, "how": x.how} for x in plan.parts(args.small)}
    state["plan_total_s"] = plan.total_s(args.small)
    for part, entry in list(state["parts"].items()):
        if entry.get("target", targets[part]) != targets[part]:
            state.setdefault("earlier_parts", []).append({part: state["parts"].pop(part)})
    state["dataset"], state["seeds"], state["campaign"] = args.dataset, args.seeds, args.campaign
    return state


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    if len(args.seeds) > 1 and not args.campaign:
        p.error("several --seeds need --campaign (without it the check runs one train command)")
    if args.checkpoint_minutes is None:
        args.checkpoint_minutes = 0.0001 if args.small else 1.0
    t0 = time.perf_counter()
    work, out_dir, env = setup(args)
    print(plan.plan_text(args.small, args.budget_seconds), flush=True)
    targets = part_targets(args)
    state = load_state(args, work, env, targets)
    name, m = device_name(state["machine"]), state["machine"]
    parts = Parts(args, work, out_dir, state, t0, commands(args, work, name), run_dirs(args, work),
                  targets)
    print(f"device: {m['device_kind']} ({m['backend']}, {m['device_count']}), jax {m['jax']}; "
          f"work {work}; out {out_dir}", flush=True)
    if read_json(parts.bench_file) is not None:  # finished in an earlier command
        state["parts"].setdefault("bench", {"seconds_per_command": []})["status"] = "done"
    data_job = parts.start("dataset", env={**env, "JAX_PLATFORMS": "cpu"})  # host only, beside bench
    parts.finish("bench", parts.start("bench", env=env))  # a failed benchmark does not stop the run
    if args.campaign:  # the campaign's train command fits the seed's ensemble itself
        state["parts"]["fit"] = {"status": "done", "seconds_per_command": [],
                                 "target": parts.targets["fit"],
                                 "note": "in the policy part: the campaign's train command fits it"}
    if parts.finish("dataset", data_job) and parts.finish("fit", parts.start("fit", env=env)):
        parts.finish("policy", parts.start("policy", env=env))
    parts.save()
    statuses = {k: v["status"] for k, v in state["parts"].items()}
    print(f"summary: {statuses}; runs: {state.get('runs')}; written {parts.summary}", flush=True)
    if any(s == "failed" for s in statuses.values()):
        return 1
    return 0 if all(statuses.get(x.name) == "done" for x in plan.parts(args.small)) else 3


if __name__ == "__main__":
    sys.exit(main())
