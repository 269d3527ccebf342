"""experiments/gpu_check.py and experiments/gpu/: the budget rule, stop-and-continue across commands
(with stand-in parts, so no JAX work runs), the wheel closure, the deadline of a job, a run
directory's progress, and the device command's size."""

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "experiments" / "gpu"))

import fetch_wheels
import gpu_check
from gpu import jobs, plan


def test_budget_rule_and_plan_text():
    bench, dataset, fit, policy = plan.FULL
    assert plan.may_start(bench, None) and plan.may_start(bench, bench.estimate_s)
    assert not plan.may_start(bench, bench.estimate_s - 1)  # not resumable: must fit whole
    assert plan.may_start(fit, fit.min_s) and not plan.may_start(fit, fit.min_s - 1)
    expected = max(bench.estimate_s, dataset.estimate_s) + fit.estimate_s + policy.estimate_s
    assert plan.total_s(False) == expected
    text = plan.plan_text(False, 530)
    assert all(p.name in text for p in plan.FULL) and "budget: 530 s" in text and "total" in text


def _stand_ins(calls: Path, fit_code: str):
    def commands(args, work, name):
        note = f"open({str(calls)!r}, 'a').write(%r + '\\n')"
        py = sys.executable
        return {"bench": [py, "-c", note % "bench"], "dataset": [py, "-c", note % "dataset"],
                "fit": [py, "-c", note % "fit" + "; " + fit_code], "policy": [py, "-c", note % "policy"]}
    return commands


@pytest.fixture
def check(tmp_path, monkeypatch):
    """gpu_check.main with stand-in parts of negligible estimates and a fake device probe."""
    monkeypatch.setattr(gpu_check, "probe", lambda env: {
        "backend": "cpu", "device_kind": "test dev", "device_count": 1, "jax": "0", "jaxlib": "0",
        "python": "3", "host_cores": 1})
    monkeypatch.setattr(plan, "SMALL", tuple(plan.Part(p.name, p.what, 0.5, "test", p.resumable, 0.5)
                                             for p in plan.SMALL))
    monkeypatch.setattr(jobs, "TICK_S", 0.5)
    calls = tmp_path / "calls.txt"

    def main(fit_code, *extra):
        monkeypatch.setattr(gpu_check, "commands", _stand_ins(calls, fit_code))
        return gpu_check.main(["--small", "--work", str(tmp_path / "work"), "--out",
                               str(tmp_path / "out"), *extra])
    return main, calls, tmp_path / "out" / "gpu-check-cpu-test_dev.json"


@pytest.mark.slow
def test_a_stopped_check_continues_where_it_stopped(check):
    main, calls, summary = check
    start = time.perf_counter()
    budget = str(jobs.GRACE_S + 5 + 3)  # 3 s for the parts
    assert main("import time; time.sleep(60)", "--budget-seconds", budget) == 3
    assert time.perf_counter() - start < 20  # the fit was stopped by SIGINT, not waited for
    first = json.loads(summary.read_text())
    assert {k: v["status"] for k, v in first["parts"].items()} == {
        "bench": "done", "dataset": "done", "fit": "stopped: budget"}
    assert main("pass") == 0  # the same check again: only the unfinished parts run
    order = calls.read_text().split()  # dataset and bench ran side by side
    assert sorted(order[:2]) == ["bench", "dataset"] and order[2:] == ["fit", "fit", "policy"]
    second = json.loads(summary.read_text())
    assert second["commands"] == 2 and len(second["parts"]["fit"]["seconds_per_command"]) == 2
    assert all(v["status"] == "done" for v in second["parts"].values())


def test_a_failed_part_stops_the_run_and_is_reported(check):
    main, _, summary = check
    assert main("raise SystemExit('fit broke')") == 1
    parts = json.loads(summary.read_text())["parts"]
    assert parts["fit"]["status"] == "failed" and "fit broke" in parts["fit"]["log_tail"]
    assert "policy" not in parts


@pytest.mark.slow
def test_job_is_interrupted_at_its_deadline(tmp_path):
    code = ("import time, pathlib\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            f"    pathlib.Path({str(tmp_path / 'saved')!r}).write_text('ok')\n    raise SystemExit(130)")
    job = jobs.Job("t", [sys.executable, "-c", code], tmp_path / "t.log").start()
    result = job.wait(time.perf_counter() + 1.5)
    assert result["stopped"] and result["rc"] == 130 and (tmp_path / "saved").read_text() == "ok"
    assert result["seconds"] < 15


def test_run_progress_reads_rates_and_scores(tmp_path):
    rows = [{"epoch": e, "policy": "p", "sac_steps": 1000 * e, "chunk_seconds": 0.5 * e,
             "eval_return": 10.0 * e, "normalized_score": e} for e in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    jobs.write_json(tmp_path / "results.json", {"policies": {"p": {"last10_normalized_score": 2.0}},
                                                "final_normalized_score": [3]})
    got = jobs.run_progress(tmp_path)
    assert got["epochs_done"] == 3 and got["driver_sac_steps_per_s_median"] == 1000.0
    assert got["last_eval"] == {"epoch": 3, "eval_return": 30.0, "normalized_score": 3}
    assert got["last10_normalized_score"] == 2.0 and got["final_normalized_score"] == [3]


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires) + "\nDescription\nRequires-Dist: not-a-header\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_wheel_closure_follows_extras_and_markers_and_skips_the_device(tmp_path, monkeypatch):
    wheels = {"gym": ["numpy>=1", "mj>=2; extra == 'mujoco'", "old; python_version < '3.10'"],
              "mj": ["glfw", "numpy"], "glfw": [], "mi": ["gym>=0.2", "h5py; extra == 'hdf5'"]}
    pins = {"gym": "1.0", "mj": "3.0", "glfw": "2.0", "mi": "0.5"}
    monkeypatch.setattr(fetch_wheels, "PINS", pins)
    fetched = []

    def fetch(name, version):
        fetched.append(name)
        return _wheel(tmp_path, name, version, wheels[name])

    roots = [Requirement("mi[hdf5]>=0.5"), Requirement("gym[mujoco]>=1.0")]
    bundle, skipped = fetch_wheels.closure(roots, fetch)
    assert sorted(bundle) == ["glfw", "gym", "mi", "mj"] and sorted(fetched) == sorted(bundle)
    assert sorted(skipped) == ["h5py", "numpy"]  # on the device; 'old' only for Python < 3.10
    monkeypatch.setattr(fetch_wheels, "PINS", {**pins, "gym": "0.1"})
    with pytest.raises(SystemExit, match="does not satisfy"):
        fetch_wheels.closure(roots, fetch)
    monkeypatch.setattr(fetch_wheels, "PINS", {k: v for k, v in pins.items() if k != "glfw"})
    with pytest.raises(SystemExit, match="no pin"):
        fetch_wheels.closure(roots, fetch)


def test_the_project_closure_needs_only_pinned_or_preinstalled_packages():
    names = {fetch_wheels.canonicalize_name(r.name) for r in fetch_wheels.project_requirements()}
    assert names <= set(fetch_wheels.PINS) | fetch_wheels.DEVICE_HAS


def test_device_command_fits_and_names_existing_scripts():
    command = (ROOT / "experiments" / "gpu" / "device_command.txt").read_text().strip()
    assert len(command) < 2000 and "\n" not in command
    for script in ("experiments/gpu/check_imports.py", "experiments/gpu_check.py"):
        assert script in command and (ROOT / script).exists()
    assert "--no-index" in command and "$OUT" in command
    subprocess.run(["bash", "-n", "-c", command], check=True)  # valid shell syntax


def test_campaign_device_command_fits_and_names_existing_scripts():
    command = (ROOT / "experiments" / "gpu" / "device_command_campaign.txt").read_text().strip()
    assert len(command) < 2000 and "\n" not in command and "MUJOCO_GL=disable" in command
    for script in ("experiments/gpu/check_imports.py", "experiments/gpu_check.py",
                   "experiments/gpu/detached.py"):
        assert script in command and (ROOT / script).exists()
    assert "--campaign" in command and "detached.py start" in command and "detached.py wait" in command
    subprocess.run(["bash", "-n", "-c", command], check=True)


def test_campaign_mode_runs_the_campaigns_own_command(tmp_path):
    """--campaign: the policy part is `campaign.py run --no-publish` on a queue of the seeds, its
    run folders are the campaign's, and --small passes the tiny train flags but not --epochs (the
    queue entries hold the epochs)."""
    args = gpu_check.argparse.Namespace(small=True, campaign=True, seeds=[2], epochs=None,
                                        checkpoint_minutes=0.5, bench_parts="a,d", eval_workers=3,
                                        dataset="hopper-random")
    cmds = gpu_check.commands(args, tmp_path, "dev")
    policy = cmds["policy"]
    assert policy[1].endswith("campaign.py") and policy[2:4] == ["run", "--no-publish"]
    assert policy[policy.index("--root") + 1] == str(tmp_path / "campaign")
    extra = policy[policy.index("--") + 1:]
    assert "--epochs" not in extra and "--dataset-steps" in extra and "0.5" in extra
    assert extra[extra.index("--eval-workers") + 1] == "3"
    assert json.loads((tmp_path / "queue.json").read_text()) == [
        {"dataset": "hopper-random", "seed": 2, "epochs": 3}]
    assert gpu_check.run_dirs(args, tmp_path) == [tmp_path / "campaign" / "hopper-random-seed2"]
    assert cmds["fit"][cmds["fit"].index("--seed") + 1] == "2"
    assert cmds["bench"][cmds["bench"].index("--only") + 1] == "a,d"
    plain = gpu_check.argparse.Namespace(**{**vars(args), "campaign": False, "small": False})
    train = gpu_check.commands(plain, tmp_path, "dev")["policy"]
    assert train[1:3] == ["-m", "mopo_jax.train"] and train[train.index("--seed") + 1] == "2"
    assert train[train.index("--eval-workers") + 1] == "3"
    assert gpu_check.run_dirs(plain, tmp_path) == [tmp_path / "run"]
    walker = gpu_check.argparse.Namespace(**{**vars(args), "dataset": "walker2d-random"})
    assert gpu_check.commands(walker, tmp_path, "dev")["dataset"][4] == "walker2d-random"
    assert gpu_check.run_dirs(walker, tmp_path)[0].name == "walker2d-random-seed2"
    two = gpu_check.argparse.Namespace(**{**vars(walker), "seeds": [0, 1]})
    gpu_check.commands(two, tmp_path, "dev")
    assert [e["seed"] for e in json.loads((tmp_path / "queue.json").read_text())] == [0, 1]
    assert [r.name for r in gpu_check.run_dirs(two, tmp_path)] == [
        "walker2d-random-seed0", "walker2d-random-seed1"]


def test_seeds_are_parsed_and_several_need_the_campaign():
    assert gpu_check.parse_seeds("2") == [2] and gpu_check.parse_seeds("1,0") == [1, 0]
    for bad in ("a", "1,1", "-1", ""):
        with pytest.raises(gpu_check.argparse.ArgumentTypeError):
            gpu_check.parse_seeds(bad)
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--small", "--seeds", "0,1"])
    assert exit_info.value.code == 2


def test_a_later_command_for_other_seeds_runs_them_and_reuses_the_dataset(check):
    """Reproducer (2026-12-04, on the H200): in the work folder of a finished check, the same
    command with another seed reported the first seed's run as its own and ran nothing, because
    the state said "policy: done" without saying for which seed."""
    main, calls, summary = check
    assert main("pass") == 0
    assert main("pass", "--seed", "1") == 0  # --seed: the flag's name before --seeds
    order = calls.read_text().split()
    assert sorted(order[:2]) == ["bench", "dataset"] and order[2:] == ["fit", "policy", "fit", "policy"]
    state = json.loads(summary.read_text())
    assert state["seeds"] == [1] and state["parts"]["fit"]["target"] == "hopper-random seed 1"
    assert [list(e) for e in state["earlier_parts"]] == [["fit"], ["policy"]]
    assert main("pass", "--seeds", "1") == 0  # the same seed again: nothing left to run
    assert calls.read_text().split() == order
    assert main("pass", "--seeds", "1", "--dataset", "walker2d-random") == 0  # another dataset
    assert calls.read_text().split()[len(order):] == ["dataset", "fit", "policy"]
