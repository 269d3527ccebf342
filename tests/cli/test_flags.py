"""The commands' tyro-generated flags: documented and older spellings, shared cache keys, recorded commands."""

import dataclasses
import shlex
import subprocess
import sys
import typing

import pytest

from mopo_jax.cli import behavior, data, dynamics, report, train_flags
from mopo_jax.data.load import DatasetInfo
from mopo_jax.tracking import TRACKERS

# The commands README.md and docs/ tell users to run (flags only; nothing is run).
DOCUMENTED = [
    "train --dataset hopper-random",
    "train --dataset hopper-random --tiny",
    "train --dataset hopper-random --num-seeds 5 --penalty-coef 0.5 1 2.5 5",
    "train --dataset hopper-random --rollout-length 1 5 --penalty-coef 1 5",
    "train --logdir runs/h1 --resume",
    "train --dataset hopper-random --track tensorboard",
    "train --dataset hopper-random --num-seeds 2 --logdir runs/two --coordinator 127.0.0.1:4455 "
    "--num-processes 2 --process-id 1",
    "data --dataset hopper-random",
    "data --dataset hopper-random --num-steps 200000 --offline",
    "data --dataset hopper-random --offline --rebuild",
    "dynamics --dataset hopper-random",
    "dynamics --dataset hopper-random --offline --seed 0 --num-steps 2000 --max-epochs 3",
    "report runs/a runs/b --out results",
    "behavior --env Hopper-v5 --steps 1000000",
    "behavior --env Hopper-v5 --steps 1000000 --resume",
    "behavior --env HalfCheetah-v5 --reward halfcheetah-vel3",
    "behavior export --logdir ~/.cache/mopo_jax/behavior/hopper --level medium --out p/hopper-medium",
    "behavior export --logdir runs/b --level expert --out p/x --episodes 2 --seed 5 --fraction 0.3",
]
PARSERS = {"train": train_flags.parse, "data": data.parse, "dynamics": dynamics.parse,
           "report": report.parse, "behavior": behavior.parse}
INFO = DatasetInfo(name="hopper-random", env_name="hopper", env_id="Hopper-v5", source="x",
                   minari_id="mujoco/hopper/random-v0", path="/x", num_episodes=3,
                   ref_min_score=0.0, ref_max_score=1.0, ref_source="x", data_stamp="aaaa")


@pytest.mark.parametrize("command", DOCUMENTED)
def test_documented_commands_parse(command):
    name, *argv = shlex.split(command)
    assert PARSERS[name](argv) is not None


def test_the_shipped_policies_training_commands_parse():
    """Each shipped policy file records the behaviour command that trained it: it must still work."""
    import json
    from pathlib import Path

    import mopo_jax

    files = sorted((Path(mopo_jax.__file__).parent / "policies").glob("*.json"))
    assert files
    for path in files:
        command = json.loads(path.read_text())["training_command"]
        assert command.startswith(behavior.PROG + " ") and "/" not in command  # no machine's path
        config = behavior.parse(shlex.split(command)[3:]).config()
        assert config.sac.hidden_sizes == (256, 256) and config.total_steps == 1_000_000


@pytest.mark.parametrize("flags", [[], ["--dynamics.num-members", "5"],
                                   ["--dynamics.hidden-sizes", "64", "64", "--dynamics.hidden-weight-decays",
                                    "1e-4", "1e-4", "--seed", "3"]])
def test_dynamics_fits_the_cache_entry_train_looks_for(flags):
    """Reproducer: `dynamics` exposed 1 of 17 DynamicsConfig fields, so it could not pre-fit the
    ensemble `train --dynamics.num-members 5` looks for. Both now give the same cache prefix."""
    from mopo_jax.dynamics import io

    config, _, _, options = train_flags.parse(["--dataset", "hopper-random", *flags])
    fit = dynamics.parse(["--dataset", "hopper-random", *flags])
    assert fit.config() == config.dynamics and fit.seed == options.seed
    wanted = io.cache_prefix(INFO, 1000, options.seed, config.dynamics)  # what train loads
    assert dynamics.out_prefix(fit, INFO, 1000) == wanted
    if flags:
        default = io.cache_prefix(INFO, 1000, 0, train_flags.parse(["--dataset", "hopper-random"])[0].dynamics)
        assert wanted != default


def test_older_spellings_still_work():
    assert dynamics.parse(["--dataset", "x", "--max-epochs", "3"]).config() == \
        dynamics.parse(["--dataset", "x", "--dynamics.max-epochs", "3"]).config()
    base = ["--env", "Hopper-v5", "--steps", "2500"]
    old = behavior.parse([*base, "--hidden", "32,32", "--batch-size", "32"]).config()
    new = behavior.parse([*base, "--sac.hidden-sizes", "32", "32", "--sac.batch-size", "32"]).config()
    assert old == new and old.sac.hidden_sizes == (32, 32) and old.total_steps == 2500
    assert not behavior.parse([*base, "--no-progress"]).progress
    with pytest.raises(ValueError, match="--hidden: expected positive sizes like 256,256"):
        behavior.parse([*base, "--hidden", "32,x"]).config()


def test_usage_errors_exit_2(capsys):
    for name, argv in (("behavior", ["--steps", "10"]), ("behavior", ["--env", "H", "--reward", "x"]),
                       ("data", []), ("report", []), ("dynamics", ["--dataset", "x", "--bogus"]),
                       ("train", ["--track", "mlflow"])):
        with pytest.raises(SystemExit) as err:
            PARSERS[name](argv)
        assert err.value.code == 2, (name, argv)
    assert "Traceback" not in capsys.readouterr().err


def test_tracker_names_have_one_home():
    hints = typing.get_type_hints(train_flags.RunOptions)
    assert typing.get_args(hints["track"]) == TRACKERS
    for name in TRACKERS:
        assert train_flags.parse(["--track", name])[3].track == name


def test_a_behaviour_run_records_its_command_as_given(monkeypatch, tmp_path, capsys):
    """Reproducer: runs recorded a command rebuilt from the config, ending in the absolute default
    run directory (shipped policy files carried a machine's /root/... path)."""
    from mopo_jax.behavior import train as behavior_train

    seen = {}

    def fake_train(config, logdir, resume=False, *, on_steps=None, on_eval=None, command=None,
                   stop_at=None):
        seen.update(config=config, logdir=logdir, command=command, stop_at=stop_at)
        return {"ok": True}

    monkeypatch.setattr(behavior_train, "train_behavior", fake_train)
    monkeypatch.setattr(behavior, "setup_logging", lambda: None)  # no handler on capsys's stream
    argv = ["--env", "Hopper-v5", "--steps", "2500", "--hidden", "32,32", "--logdir",
            str(tmp_path / "a b"), "--no-progress", "--stop-at", "2000"]
    assert behavior.main(argv) == 0 and seen["stop_at"] == 2000
    assert seen["command"] == "python -m mopo_jax.behavior " + shlex.join(argv)
    assert shlex.split(seen["command"])[3:] == argv
    assert seen["config"].sac.hidden_sizes == (32, 32) and str(seen["logdir"]) == str(tmp_path / "a b")
    assert behavior.main(["--env", "Hopper-v5", "--steps", "0"]) == 2  # a bad value: one line
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: total_steps must be a positive integer, got 0"]


def test_an_interrupted_behaviour_run_exits_130_with_one_line(monkeypatch, tmp_path, capsys):
    """Reproducer: Ctrl-C printed a traceback (and the process then died of SIGSEGV), and
    SIGTERM killed the command unhandled."""
    from mopo_jax.behavior import train as behavior_train

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(behavior_train, "train_behavior", stopped)
    monkeypatch.setattr(behavior, "setup_logging", lambda: None)
    argv = ["--env", "Hopper-v5", "--logdir", str(tmp_path / "run"), "--no-progress"]
    assert behavior.main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted: training stopped; `--resume` continues the run from its last evaluation's "
        "checkpoint"]


@pytest.mark.parametrize("command", ["data", "report"])
def test_an_interrupted_data_or_report_command_exits_130_with_one_line(command, monkeypatch,
                                                                         tmp_path, capsys):
    """Reproducer: Ctrl-C printed a traceback, and SIGTERM killed the command unhandled."""
    import mopo_jax.data.load
    import mopo_jax.report

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    cli = {"data": data, "report": report}[command]
    monkeypatch.setattr({"data": mopo_jax.data.load, "report": mopo_jax.report}[command],
                        {"data": "load_dataset", "report": "report"}[command], stopped)
    monkeypatch.setattr(cli, "setup_logging", lambda: None)
    argv = ["--dataset", "hopper-random"] if command == "data" else [str(tmp_path)]
    assert cli.main(argv) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("interrupted: the ")


def test_a_first_signal_asks_for_a_stop_and_a_second_interrupts(capfd):
    import os
    import signal

    from mopo_jax.cli.common import stop_at_chunk_end

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_at_chunk_end("stopping soon") as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="second signal"):
            os.kill(os.getpid(), signal.SIGINT)
    assert capfd.readouterr().err == "stopping soon\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_train_flags_class_is_plain_tyro_over_the_configs():
    """TrainFlags is a static dataclass: TrainConfig's fields (grid fields as tuples), then
    RunOptions', help from their comments (no regex over the source, no make_dataclass)."""
    from mopo_jax.mopo.config import TrainConfig

    names = [f.name for f in dataclasses.fields(train_flags.TrainFlags)]
    expected = [f.name for f in dataclasses.fields(TrainConfig)]
    expected += [f.name for f in dataclasses.fields(train_flags.RunOptions)]
    assert names == expected
    hints = typing.get_type_hints(train_flags.TrainFlags)
    assert hints["penalty_coef"] == tuple[float, ...] and hints["rollout_length"] == tuple[int, ...]


def test_help_imports_no_jax():
    code = ("import sys\nfrom mopo_jax.cli import behavior, data, dynamics, report, train_flags\n"
            "for parse, argv in ((train_flags.parse, ['--help']), (data.parse, ['--help']),\n"
            "        (dynamics.parse, ['--help']), (report.parse, ['--help']),\n"
            "        (behavior.parse, ['--help']), (behavior.parse, ['export', '--help'])):\n"
            "    try:\n        parse(argv)\n    except SystemExit as e:\n        assert e.code == 0\n"
            "assert 'jax' not in sys.modules, 'jax imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in ("--dynamics.num-members", "--sac.batch-size", "--env", "--steps", "RUN_DIR"):
        assert flag in proc.stdout
