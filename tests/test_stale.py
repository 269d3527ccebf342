"""Removal of temporary entries left by interrupted writes (mopo_jax.stale): what is stale, what is
kept, and the callers that clean before they write."""

import os
import subprocess
import sys
import time

import pytest

from mopo_jax import stale


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_tagged_folders_of_ended_processes_go_and_the_rest_stay(tmp_path):
    mine = stale.temp_dir("build", tmp_path)  # this process: alive
    host = stale._host()
    dead = tmp_path / f".mopo_jax-build-{host}-{_dead_pid()}-abc_12"
    other_host = tmp_path / ".mopo_jax-download-elsewhere-1-xyz"  # young, another host: unknown
    old_untagged = tmp_path / ".mopo_jax-build-q2v8xk"  # an older version's name, two days old
    young_untagged = tmp_path / ".mopo_jax-trash-9f3kd0"
    unrelated = tmp_path / "mujoco"
    for folder in (dead, other_host, old_untagged, young_untagged, unrelated):
        folder.mkdir()
        (folder / "part.hdf5").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_untagged, (two_days_ago, two_days_ago))
    os.utime(unrelated, (two_days_ago, two_days_ago))
    removed = stale.remove_stale(tmp_path, (".mopo_jax-*",))
    assert sorted(removed) == sorted([dead, old_untagged])
    assert not dead.exists() and not old_untagged.exists()
    assert all(p.exists() for p in (mine, other_host, young_untagged, unrelated))


def test_temp_dir_names_round_trip_and_bad_kinds_are_refused(tmp_path):
    made = stale.temp_dir("download", tmp_path)
    tag = stale.TAGGED.match(made.name)
    assert tag and tag["kind"] == "download" and int(tag["pid"]) == os.getpid()
    assert not stale.is_stale(made)
    with pytest.raises(ValueError, match="lowercase letters"):
        stale.temp_dir("Build-1", tmp_path)


def test_old_temp_files_go_young_ones_and_missing_folders_are_fine(tmp_path):
    old, young = tmp_path / "m.msgpack.a1b2c3.tmp", tmp_path / "m.json.d4e5f6.tmp"
    for path in (old, young, tmp_path / "m.msgpack"):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 90000, time.time() - 90000))
    assert stale.remove_stale(tmp_path, ("*.tmp",)) == [old]
    assert young.exists() and (tmp_path / "m.msgpack").exists()
    assert stale.remove_stale(tmp_path / "absent", ("*.tmp",)) == []


def test_a_dataset_build_clears_what_a_killed_build_left(data_dirs, tmp_path, monkeypatch):
    """Reproducer: temp folders of killed builds were never cleaned."""
    from mopo_jax.data import minari_io

    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    killed = root / f".mopo_jax-build-{stale._host()}-{_dead_pid()}-k1ll3d"
    killed.mkdir(parents=True)
    (killed / "main_data.hdf5").write_bytes(b"half written")
    minari_io.remove_dataset("mujoco/hopper/absent-v0")  # any writer in the Minari root cleans first
    assert not killed.exists() and [p.name for p in root.iterdir()] == []
