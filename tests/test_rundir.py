"""Run-directory files: the lock, JSONL logs, atomic text, file modes, checkpoint generations under kills."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mopo_jax import checkpoint, rundir
from mopo_jax.run_layout import RUN_FILES, holds_run
from mopo_jax.rundir import RunDirError, RunLock

ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _tree(value):
    return {"w": np.full(3, value, np.float32), "step": np.array(value, np.int32)}


def _step(loaded):
    tree, meta = loaded
    assert int(tree["step"]) == meta["step"] and np.all(tree["w"] == meta["step"])
    return meta["step"]


def _gens(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


_HOLD_SCRIPT = """
import sys, time
from mopo_jax.rundir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_refused_for_a_second_holder_and_freed_by_sigkill(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_SCRIPT, str(run_dir)],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunDirError, match=rf"{run_dir}.*in use.*pid {holder.pid}\)"), RunLock(run_dir):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with RunLock(run_dir):  # the kernel released the dead holder's lock
        with pytest.raises(RunDirError, match="in use"):  # also exclusive within one process
            RunLock(run_dir).__enter__()
        assert (run_dir / ".lock").read_text() == f"{os.getpid()}\n"
    with RunLock(run_dir):  # released on exit
        pass


def test_torn_last_line_is_dropped_and_appends_continue_cleanly(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert rundir.read_jsonl(path) == []
    rundir.append_lines(path, [json.dumps({"epoch": 1}) + "\n", json.dumps({"epoch": 2}) + "\n"])
    with open(path, "a") as f:
        f.write('{"epoch": 3, "ret')  # a kill in the middle of an append
    assert rundir.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    rundir.append_lines(path, ['{"epoch": 3}\n'])
    assert [r["epoch"] for r in rundir.read_jsonl(path)] == [1, 2, 3]
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x00\n")  # a complete but unparsable last line (zeros after a crash)
    assert [r["epoch"] for r in rundir.read_jsonl(path)] == [1, 2, 3]
    assert path.read_text().endswith('{"epoch": 3}\n')
    with pytest.raises(ValueError, match="newline"):
        rundir.append_lines(path, ['{"a": 1}'])
    with pytest.raises(ValueError, match="newline"):
        rundir.append_lines(path, ['{"a": 1}\n{"b": 2}\n'])
    assert len(rundir.read_jsonl(path)) == 3


def test_rewind_keeps_the_records_up_to_the_checkpoint_and_only_the_writer_rewrites(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rundir.append_records(path, [{"epoch": e} for e in (1, 2, 3)])
    with open(path, "a") as f:
        f.write('{"epoch": 4, "ret')  # torn by a kill
    before = path.read_bytes()
    assert rundir.rewind_jsonl(path, lambda r: r["epoch"] <= 2, write=False) == [{"epoch": 1}, {"epoch": 2}]
    assert path.read_bytes() == before  # a reader (another process of the run) never modifies it
    assert rundir.rewind_jsonl(path, lambda r: r["epoch"] <= 2) == [{"epoch": 1}, {"epoch": 2}]
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    rundir.write_json(tmp_path / "results.json", {"b": [1], "a": None})
    assert (tmp_path / "results.json").read_text() == json.dumps({"b": [1], "a": None}, indent=2)


def test_resume_differences_name_each_differing_leaf():
    saved = {"config": {"lr": 1, "epochs": 5, "sac": {"h": [2]}}, "grid": [1], "extra": 0}
    wanted = {"config": {"lr": 2, "epochs": 9, "sac": {"h": [3], "new": 1}}, "grid": [1]}
    assert rundir.resume_differences(saved, wanted, may_differ=("config.epochs",)) == [
        "config.lr: saved 1, requested 2", "config.sac.h: saved [2], requested [3]",
        "config.sac.new: saved None, requested 1"]
    assert rundir.resume_differences(saved, {"grid": [1]}) == []  # only wanted's keys count


def test_a_folder_holds_a_run_once_any_run_file_exists(tmp_path):
    assert not holds_run(tmp_path / "absent") and not holds_run(tmp_path)
    (tmp_path / ".lock").touch()  # a lock alone (a run refused before writing) is not a run
    assert not holds_run(tmp_path)
    for name in RUN_FILES:
        (tmp_path / name).touch()
        assert holds_run(tmp_path)
        (tmp_path / name).unlink()


def test_bad_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    text = '{"epoch": 1}\nnot json\n{"epoch": 3}\n'
    path.write_text(text)
    with pytest.raises(RunDirError, match=r"metrics\.jsonl, line 2"):
        rundir.read_jsonl(path)
    path.write_text('{"epoch": 1}\n[1, 2]\n{"epoch": 3')  # not an object, then a torn last line
    with pytest.raises(RunDirError, match=r"metrics\.jsonl, line 2"):
        rundir.read_jsonl(path)
    assert path.read_text() == '{"epoch": 1}\n[1, 2]\n{"epoch": 3'  # not truncated on error


def test_symlink_at_a_run_file_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "run" / "metrics.jsonl"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(RunDirError, match="symbolic link"):
        rundir.append_lines(link, ['{"epoch": 1}\n'])
    with pytest.raises(RunDirError, match="symbolic link"):
        rundir.write_text_atomic(link, "")
    with pytest.raises(RunDirError, match="symbolic link"):
        rundir.read_jsonl(link)
    assert target.read_text() == "keep me\n" and link.is_symlink()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        rundir.write_text_atomic(tmp_path / "config.json", "{}")
        rundir.write_text_atomic(tmp_path / "config.json", "{}")  # replacing keeps the mode
        rundir.append_lines(tmp_path / "metrics.jsonl", ["{}\n"])
        gen = rundir.save_checkpoint(tmp_path, _tree(1), {"step": 1})
        checkpoint.save_pytree(tmp_path / "model", _tree(1), {})
        with RunLock(tmp_path):
            pass
    finally:
        os.umask(old)
    names = ["config.json", "metrics.jsonl", ".lock", "model.msgpack", "model.json",
             f"checkpoints/{gen.name}/state.msgpack", f"checkpoints/{gen.name}/meta.json"]
    assert {f: oct(os.stat(tmp_path / f).st_mode & 0o777) for f in names} == dict.fromkeys(
        names, oct(0o666 & ~umask))
    assert os.stat(gen).st_mode & 0o777 == 0o777 & ~umask


def test_generations_round_trip_and_keep_the_newest_two(tmp_path):
    assert rundir.load_checkpoint(tmp_path, _tree(0)) is None
    assert rundir.checkpoint_metadata(tmp_path) is None and not rundir.has_checkpoint(tmp_path)
    for v in (1, 2, 3):
        gen = rundir.save_checkpoint(tmp_path, _tree(v), {"step": v, "note": "x"})
    assert gen == tmp_path / "checkpoints" / "gen-00000003"
    assert _gens(tmp_path) == ["gen-00000002", "gen-00000003"]
    assert _step(rundir.load_checkpoint(tmp_path, _tree(0))) == 3
    assert rundir.checkpoint_metadata(tmp_path) == {"step": 3, "note": "x"}
    # The same bytes as a prefix pair: the two layouts share one encoding.
    shutil.copy(gen / "state.msgpack", tmp_path / "pair.msgpack")
    shutil.copy(gen / "meta.json", tmp_path / "pair.json")
    assert _step(checkpoint.load_pytree(tmp_path / "pair", _tree(0))) == 3
    with pytest.raises(ValueError, match="reserved"):
        rundir.save_checkpoint(tmp_path, _tree(4), {"_checkpoint": 1})
    with pytest.raises(TypeError):
        rundir.save_checkpoint(tmp_path, _tree(4), {"obj": object()})
    assert _gens(tmp_path) == ["gen-00000002", "gen-00000003"]  # nothing written by the failures


def test_damaged_newest_generation_falls_back_with_a_warning(tmp_path, caplog):
    logging.getLogger("mopo_jax").addHandler(caplog.handler)
    try:
        for v in (1, 2):
            rundir.save_checkpoint(tmp_path, _tree(v), {"step": v})
        newest = tmp_path / "checkpoints" / "gen-00000002"
        raw = bytearray((newest / "state.msgpack").read_bytes())
        raw[-1] ^= 0xFF
        (newest / "state.msgpack").write_bytes(bytes(raw))
        assert _step(rundir.load_checkpoint(tmp_path, _tree(0))) == 1
        assert rundir.checkpoint_metadata(tmp_path) == {"step": 1}
        assert "gen-00000002" in caplog.text and "checksum" in caplog.text
        (tmp_path / "checkpoints" / "gen-00000001" / "meta.json").unlink()
        with pytest.raises(RunDirError, match=r"gen-00000002: .*checksum.*gen-00000001: .*meta\.json"):
            rundir.load_checkpoint(tmp_path, _tree(0))
        with pytest.raises(RunDirError, match="delete that folder"):
            rundir.checkpoint_metadata(tmp_path)
        # A new save after the damage is picked again.
        rundir.save_checkpoint(tmp_path, _tree(3), {"step": 3})
        assert _step(rundir.load_checkpoint(tmp_path, _tree(0))) == 3
    finally:
        logging.getLogger("mopo_jax").removeHandler(caplog.handler)


def test_template_mismatch_is_not_silently_loaded(tmp_path):
    rundir.save_checkpoint(tmp_path, _tree(1), {"step": 1})
    with pytest.raises(RunDirError, match=r"gen-00000001: .*\['w'\].*shape \(3,\).*expected shape \(4,\)"):
        rundir.load_checkpoint(tmp_path, {"w": np.zeros(4, np.float32), "step": np.array(0, np.int32)})


_KILL_SCRIPT = textwrap.dedent("""
    import json, os, shutil, sys
    import numpy as np
    from mopo_jax import files, rundir

    def save_then_die(run_dir, point):
        tree = lambda v: {"w": np.full(3, v, np.float32), "step": np.array(v, np.int32)}
        for v in (1, 2, 3):
            rundir.save_checkpoint(run_dir, tree(v), {"step": v})
        die = lambda *args, **kwargs: os._exit(17)
        write, rename = files.write_new_file, os.rename
        if point in ("after-state-write", "after-meta-write"):
            name = "state.msgpack" if point == "after-state-write" else "meta.json"
            def patched(path, data):
                write(path, data)
                if os.path.basename(path) == name:
                    die()
            files.write_new_file = patched
        elif point == "before-rename":
            os.rename = die
        elif point == "after-rename":
            os.rename = lambda a, b: (rename(a, b), die())
        elif point == "mid-prune":
            shutil.rmtree = die  # the old generation has been renamed to a temp name
        rundir.save_checkpoint(run_dir, tree(4), {"step": 4})

    codes = {}
    for point in sys.argv[2:]:  # one forked child per point: the imports are paid once
        run_dir = os.path.join(sys.argv[1], point)
        pid = os.fork()
        if pid == 0:
            save_then_die(run_dir, point)
            os._exit(0)
        codes[point] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(json.dumps(codes))
""")
KILL_POINTS = {"after-state-write": (3, 1), "after-meta-write": (3, 1), "before-rename": (3, 1),
               "after-rename": (4, 0), "mid-prune": (4, 1)}  # point: (step loaded, temp leftovers)


@pytest.fixture(scope="module")
def killed_saves(tmp_path_factory):
    """A folder per kill point, holding 3 generations and a 4th save that died at that point."""
    base = tmp_path_factory.mktemp("killed")
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(base), *KILL_POINTS], env=ENV,
                          check=True, capture_output=True, text=True, timeout=120)
    return base, json.loads(proc.stdout)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_generation_save_killed_at_each_step(killed_saves, point):
    base, codes = killed_saves
    run_dir, (expect_step, leftovers) = base / point, KILL_POINTS[point]
    assert codes[point] == 17  # it died at the injected point
    assert _step(rundir.load_checkpoint(run_dir, _tree(0))) == expect_step
    assert rundir.checkpoint_metadata(run_dir) == {"step": expect_step}
    assert len(_gens(run_dir)) == 3 and "gen-00000003" in _gens(run_dir)  # previous good one kept
    assert rundir.clean_stale_temp_files(run_dir) == leftovers
    gen = rundir.save_checkpoint(run_dir, _tree(9), {"step": 9})
    assert _step(rundir.load_checkpoint(run_dir, _tree(0))) == 9 and len(_gens(run_dir)) == 2
    assert gen.name == f"gen-{expect_step + 1:08d}"


def test_stale_temp_files_are_cleaned(tmp_path):
    ck = tmp_path / "checkpoints"
    (ck / "gen-00000007.tmp-4242").mkdir(parents=True)
    (ck / "gen-00000007.tmp-4242" / "state.msgpack").write_bytes(b"x" * 100)
    (tmp_path / "snapshots").mkdir()
    stale = [tmp_path / "metrics.jsonl.1a2b.tmp", tmp_path / "checkpoint.msgpack.abc.tmp",
             ck / "odd.tmp", tmp_path / "snapshots" / "step_5.msgpack.x.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    (tmp_path / "dangling.tmp").symlink_to(tmp_path / "nowhere")
    keep = [tmp_path / "metrics.jsonl", tmp_path / "notes.tmpl", tmp_path / "snapshots" / "step_5.json"]
    for path in keep:
        path.write_text("{}")
    gen = rundir.save_checkpoint(tmp_path, _tree(1), {"step": 1})
    assert rundir.clean_stale_temp_files(tmp_path, extra_dirs=["snapshots"]) == 6
    assert not any(p.exists() for p in stale) and not (ck / "gen-00000007.tmp-4242").exists()
    assert all(p.exists() for p in keep) and gen.is_dir()
    assert rundir.clean_stale_temp_files(tmp_path, extra_dirs=["snapshots"]) == 0
