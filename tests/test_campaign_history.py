"""experiments/campaign_history.py: what a medium-replay group needs, and training it exactly.

The end-to-end test trains a tiny behaviour run twice (a reference run whose snapshot plays the
shipped medium policy, then the campaign's own run from the recorded command), so it also checks
that a behaviour run started afresh in another process reproduces the snapshot bit for bit.
"""

import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import campaign  # noqa: E402
import campaign_history as ch  # noqa: E402
from mopo_jax.cli.behavior import main as behavior_main  # noqa: E402

TINY = ("--env Hopper-v5 --steps 1000 --start-steps 200 --eval-every 300 --eval-episodes 1 "
        "--hidden 32,32 --batch-size 32 --max-episode-steps 80 --seed 3")
STEP = 300


def test_shipped_medium_replay_needs_the_hopper_run_to_step_100000(data_dirs):
    need = ch.history_need("hopper-medium-replay")
    shipped = ROOT / "src" / "mopo_jax" / "policies" / "hopper-medium"
    meta = json.loads(shipped.with_suffix(".json").read_text())
    assert need.env == "hopper" and need.step == meta["step"] == 100000
    assert need.weights_sha256 == meta["_checkpoint"]["msgpack_sha256"]
    assert need.run_dir == Path(data_dirs / "cache" / "behavior" / "hopper")
    assert " ".join(need.argv) == meta["training_command"].split("mopo_jax.behavior ")[1]
    cmd = ch.behavior_command(need)
    assert cmd[cmd.index("--stop-at") + 1] == "100000" and cmd[cmd.index("--logdir") + 1] == str(need.run_dir)
    for other in ("hopper-random", "walker2d-random", "halfcheetah-medium", "ant-medium-expert"):
        assert ch.history_need(other) is None


@pytest.fixture
def tiny_policy(tmp_path, monkeypatch, data_dirs):
    """A policy dir whose hopper-medium is the step-300 snapshot of a tiny reference run."""
    reference = tmp_path / "reference"
    assert behavior_main([*TINY.split(), "--logdir", str(reference), "--stop-at", str(STEP),
                          "--no-progress"]) == 0
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "hopper-medium.msgpack").write_bytes(
        (reference / "snapshots" / f"step_{STEP}.msgpack").read_bytes())
    (policies / "hopper-medium.json").write_text(json.dumps(
        {"step": STEP, "training_command": f"python -m mopo_jax.behavior {TINY}"}))
    monkeypatch.setenv("MOPO_JAX_POLICY_DIR", str(policies))
    monkeypatch.setenv("MOPO_JAX_BEHAVIOR_DIR", str(tmp_path / "behavior"))
    return policies


def test_campaign_trains_the_history_and_checks_its_snapshot(tiny_policy, tmp_path):
    root, said = tmp_path / "root", []
    root.mkdir()
    need = ch.history_need("hopper-medium-replay")
    assert need.step == STEP and need.argv == tuple(shlex.split(TINY))
    need.run_dir.mkdir(parents=True)  # somebody else's run: left alone
    (need.run_dir / "mine.txt").write_text("keep")
    assert not ch.ensure_history(need, root, campaign.run_logged, said.append)
    assert "did not start it" in said[-1] and (need.run_dir / "mine.txt").exists()

    (root / ch.MARKER.format(env="hopper")).write_text("{}")  # now it is the campaign's, interrupted
    assert ch.ensure_history(need, root, campaign.run_logged, said.append), said
    assert (need.run_dir.with_name("hopper.interrupted") / "mine.txt").exists()
    assert ch.history_steps(need.run_dir) == STEP and ch.snapshot_matches(need)
    log = (root / ch.LOG.format(env="hopper")).read_text()
    assert "--stop-at 300" in log and "=== campaign: exit 0" in log and "\nstep      300  return" in log
    (line,) = ch.status_lines(root)
    assert line.startswith("behaviour history hopper (for hopper-medium-replay): done (snapshot "
                           "matches the shipped policy), evaluated at step 300 of 300; log ")

    said.clear()  # there already: nothing trained again
    assert ch.ensure_history(need, root, campaign.run_logged, said.append) and said == []
    queue = tmp_path / "queue.json"
    queue.write_text(json.dumps([{"dataset": "hopper-random", "seed": 0},
                                 {"dataset": "hopper-medium-replay", "seed": 0}]))
    assert campaign.main(["prepare", "--root", str(root), "--queue-json", str(queue)]) == 0
    assert ch.history_steps(need.run_dir) == STEP  # nothing trained again

    (tiny_policy / "hopper-medium.msgpack").write_bytes(b"other weights")
    other = ch.history_need("hopper-medium-replay")
    assert other.weights_sha256 == hashlib.sha256(b"other weights").hexdigest()
    assert not ch.ensure_history(other, root, campaign.run_logged, said.append)
    assert "differs from the shipped hopper-medium" in said[-1]
    assert "snapshot differs from the shipped policy" in ch.status_lines(root)[0]
    assert campaign.main(["prepare", "--root", str(root), "--queue-json", str(queue)]) == 1


def test_a_stopped_campaign_marks_its_behaviour_run_interrupted(tiny_policy, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    need = ch.history_need("hopper-medium-replay")

    def stopped(cmd, log):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ch.ensure_history(need, root, stopped, lambda message: None)
    (line,) = ch.status_lines(root)
    assert "hopper-medium-replay): interrupted (it starts again" in line and "step 0 of 300" in line
