"""Tests of the msgpack + JSON checkpoint helpers: round trips, damage, kills between renames, modes."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mopo_jax import checkpoint, files


def _tree():
    return {"layers": [{"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}],
            "step": np.array(7, np.int32), "idx": np.array([2, 0], np.int32)}


def test_round_trip_metadata_and_no_temp_files(tmp_path):
    tree, meta = _tree(), {"name": "x", "sizes": [1, 2], "lr": 2.5e-5}
    checkpoint.save_pytree(tmp_path / "ck", tree, meta)
    assert sorted(os.listdir(tmp_path)) == ["ck.json", "ck.msgpack"]
    template = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    loaded, got_meta = checkpoint.load_pytree(tmp_path / "ck", template)
    assert got_meta == meta
    assert jax.tree.structure(loaded) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert checkpoint.load_metadata(str(tmp_path / "ck") + ".json") == meta  # suffix tolerated
    tree["step"] = np.array(8, np.int32)  # overwrite in place
    checkpoint.save_pytree(tmp_path / "ck.msgpack", tree, meta)
    assert int(checkpoint.load_pytree(tmp_path / "ck", template)[0]["step"]) == 8
    assert sorted(os.listdir(tmp_path)) == ["ck.json", "ck.msgpack"]


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        checkpoint.load_pytree(tmp_path / "nothing", _tree())
    checkpoint.save_pytree(tmp_path / "ck", _tree(), {})
    os.remove(tmp_path / "ck.msgpack")
    with pytest.raises(FileNotFoundError, match=r"ck\.msgpack"):
        checkpoint.load_pytree(tmp_path / "ck", _tree())


def test_corrupt_or_mismatched_files(tmp_path):
    checkpoint.save_pytree(tmp_path / "ck", _tree(), {"a": 1})
    raw = (tmp_path / "ck.msgpack").read_bytes()
    (tmp_path / "ck.msgpack").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="checksum"):
        checkpoint.load_pytree(tmp_path / "ck", _tree())
    (tmp_path / "ck.msgpack").write_bytes(raw)
    (tmp_path / "ck.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"ck\.json is corrupt"):
        checkpoint.load_pytree(tmp_path / "ck", _tree())
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.save_pytree(tmp_path / "bad", _tree(), {"_checkpoint": 1})
    with pytest.raises(TypeError):  # not JSON-serialisable: nothing is written
        checkpoint.save_pytree(tmp_path / "bad", _tree(), {"obj": object()})
    assert not (tmp_path / "bad.msgpack").exists()


def test_template_mismatch_names_the_leaf(tmp_path):
    checkpoint.save_pytree(tmp_path / "ck", _tree(), {})
    wrong_shape = _tree()
    wrong_shape["layers"][0]["w"] = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"\['layers'\]\[0\]\['w'\].*shape \(2, 3\).*expected shape \(2, 4\)"):
        checkpoint.load_pytree(tmp_path / "ck", wrong_shape)
    wrong_dtype = _tree()
    wrong_dtype["idx"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="idx.*int32.*float32"):
        checkpoint.load_pytree(tmp_path / "ck", wrong_dtype)
    wrong_keys = {"other": np.zeros(1)}
    with pytest.raises(ValueError, match="structure"):
        checkpoint.load_pytree(tmp_path / "ck", wrong_keys)


def test_prng_keys_round_trip_through_key_data(tmp_path):
    tree = {"key": jax.random.key(3), "keys": jax.random.split(jax.random.key(4), 2),
            "rbg": jax.random.key(5, impl="rbg"), "x": np.ones(2, np.float32)}
    disk = checkpoint.keys_to_data(tree)
    assert disk["key"].dtype == np.uint32 and disk["keys"].shape == (2, 2)
    checkpoint.save_pytree(tmp_path / "k", disk, {})
    loaded, _ = checkpoint.load_pytree(tmp_path / "k", disk)
    back = checkpoint.keys_from_data(loaded, tree)
    for name in ("key", "keys", "rbg"):
        assert jax.random.key_impl(back[name]) == jax.random.key_impl(tree[name])
        np.testing.assert_array_equal(jax.random.key_data(back[name]), jax.random.key_data(tree[name]))
    np.testing.assert_array_equal(jax.random.normal(back["key"], (3,)), jax.random.normal(tree["key"], (3,)))
    np.testing.assert_array_equal(back["x"], tree["x"])


_PAIR_KILL_SCRIPT = """
import json, os, sys
import numpy as np
from mopo_jax import checkpoint, files

def save_then_die(prefix, die_before):
    checkpoint.save_pytree(prefix, {"v": np.array(1, np.int32)}, {"v": 1})
    calls, replace = [0], os.replace
    def patched(a, b):
        calls[0] += 1
        if calls[0] == die_before:
            os._exit(17)
        replace(a, b)
    os.replace = patched
    checkpoint.save_pytree(prefix, {"v": np.array(2, np.int32)}, {"v": 2})

codes = {}
for k in sys.argv[2:]:  # one forked child per kill point: the imports are paid once
    pid = os.fork()
    if pid == 0:
        save_then_die(os.path.join(sys.argv[1], k, "ck"), int(k))
        os._exit(0)
    codes[k] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""
PAIR_KILLS = {"1": 1, "2": 1, "3": 2}  # die before the k-th os.replace: the value that loads


@pytest.fixture(scope="module")
def killed_pairs(tmp_path_factory):
    """A folder per kill point: pair `ck` saved with v=1, then a v=2 save that died there."""
    base = tmp_path_factory.mktemp("pairs")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _PAIR_KILL_SCRIPT, str(base), *PAIR_KILLS], env=env,
                          check=True, capture_output=True, text=True, timeout=120)
    return base, json.loads(proc.stdout)


@pytest.mark.parametrize("die_before", PAIR_KILLS)
def test_pair_killed_at_each_rename_loads_old_or_new(killed_pairs, die_before):
    """save_pytree's renames: staged JSON, msgpack, JSON. A kill before any of them leaves a pair
    that loads (the old one, or the new one via the staged JSON), never a checksum error."""
    base, codes = killed_pairs
    prefix, expect = base / die_before / "ck", PAIR_KILLS[die_before]
    assert codes[die_before] == 17
    template = {"v": np.array(0, np.int32)}
    tree, meta = checkpoint.load_pytree(prefix, template)
    assert int(tree["v"]) == meta["v"] == expect
    assert checkpoint.load_metadata(prefix) == {"v": expect} and checkpoint.pair_exists(prefix)
    checkpoint.save_pytree(prefix, {"v": np.array(3, np.int32)}, {"v": 3})
    assert int(checkpoint.load_pytree(prefix, template)[0]["v"]) == 3
    assert not [n for n in os.listdir(prefix.parent) if n.endswith(".pending")]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o007)
    try:
        files.atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f.bin").st_mode & 0o777 == 0o660
    assert os.listdir(tmp_path) == ["f.bin"]
