"""The h5py writer and reader of Minari files: the same file as Minari's own writer, read into
the same flat arrays as through minari's EpisodeData."""

import json

import h5py
import numpy as np
import pytest

from mopo_jax.data import h5io, minari_io
from mopo_jax.data.collect import collect_random_steps
from mopo_jax.envs.make import env_spec


@pytest.fixture(scope="module")
def steps():
    """3000 hopper-random steps (~140 episodes), one of them with an unknown seed."""
    out = collect_random_steps("Hopper-v5", 3000, num_workers=1)
    out["episode_seeds"][3] = -1
    return out


def _minari_write(data_dir, steps):
    """What this project wrote before: MinariStorage.update_episodes of EpisodeBuffers."""
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    storage = MinariStorage.new(data_dir, env_spec=env_spec("Hopper-v5"))
    storage.update_episodes([EpisodeBuffer(id=i, seed=seed, **arrays)
                             for i, seed, arrays in h5io.episode_slices(steps)])


def _ours(data_dir, steps, workers):
    from minari.dataset.minari_storage import MinariStorage

    storage = MinariStorage.new(data_dir, env_spec=env_spec("Hopper-v5"))
    total_steps, total_episodes = h5io.write_episodes(data_dir, steps, workers)
    storage.update_metadata({"total_steps": total_steps, "total_episodes": total_episodes,
                             "dataset_size": storage.get_size()})


def _structure(path) -> list:
    """Every object of an HDF5 file with what a reader can see of it: names, attributes with
    dtypes, dataset dtypes, shapes, chunks, maxshape, filters, fill, layout and the data bytes."""
    out = []
    with h5py.File(path, "r") as f:
        out.append(("/", f.id.get_create_plist().get_version(),
                    f.id.get_create_plist().get_link_creation_order(), list(f.keys())))

        def visit(name, obj):
            attrs = [(k, obj.attrs[k].dtype.str, obj.attrs[k].tolist()) for k in obj.attrs]
            plist = obj.id.get_create_plist()
            if isinstance(obj, h5py.Group):
                out.append((name, plist.get_link_creation_order(), attrs))
            else:
                out.append((name, obj.dtype.str, str(obj.dtype), obj.shape, obj.chunks,
                            obj.maxshape, obj.compression, obj.fillvalue.tolist(),
                            plist.get_layout(), plist.get_fill_time(), plist.get_alloc_time(),
                            plist.get_obj_track_times(), attrs, obj[()].tobytes()))

        f.visititems(visit)
    return out


@pytest.mark.slow
def test_one_process_writes_minari_s_very_bytes_and_workers_the_same_objects(steps, tmp_path):
    _minari_write(tmp_path / "minari", steps)
    _ours(tmp_path / "ours", steps, 1)
    _ours(tmp_path / "parts", steps, 2)
    reference = (tmp_path / "minari" / h5io.MAIN_FILE).read_bytes()
    assert (tmp_path / "ours" / h5io.MAIN_FILE).read_bytes() == reference
    meta = json.loads((tmp_path / "minari" / "metadata.json").read_text())
    assert json.loads((tmp_path / "ours" / "metadata.json").read_text()) == meta
    assert meta["total_steps"] == 3000 and meta["total_episodes"] == len(steps["episode_lengths"])
    structure = _structure(tmp_path / "minari" / h5io.MAIN_FILE)
    assert _structure(tmp_path / "parts" / h5io.MAIN_FILE) == structure
    assert structure[1] == ("episode_0", 0, [("id", "<i8", 0), ("seed", "<i8", 123),
                                             ("total_steps", "<i8", int(steps["episode_lengths"][0]))])
    assert not [p for p in tmp_path.rglob(".parts-*")]  # the parts folder is gone


def test_minari_loads_our_file_episode_for_episode(steps, data_dirs):
    import minari

    minari_io.write_minari_dataset("test/hopper/h5io-v0", steps, "Hopper-v5", description="t",
                                   algorithm_name="a", ref_min_score=0.0, ref_max_score=1.0,
                                   num_workers=2)
    dataset = minari.load_dataset("test/hopper/h5io-v0")
    episodes = list(dataset.iterate_episodes())
    assert len(episodes) == len(steps["episode_lengths"]) == dataset.total_episodes
    for (i, _seed, arrays), episode in zip(h5io.episode_slices(steps), episodes):
        assert episode.id == i
        for key, value in arrays.items():
            np.testing.assert_array_equal(getattr(episode, key), value)
            assert getattr(episode, key).dtype == value.dtype
    seeds = [m.get("seed") for m in dataset.storage.get_episode_metadata(range(5))]
    assert seeds == [123, 124, 125, None, 127]


@pytest.mark.parametrize("workers", [1, 2])
def test_fast_read_is_the_minari_read(steps, data_dirs, workers):
    minari_io.write_minari_dataset("test/hopper/read-v0", steps, "Hopper-v5", description="t",
                                   algorithm_name="a", ref_min_score=0.0, ref_max_score=1.0,
                                   num_workers=1)
    slow = minari_io._read_flat_minari("test/hopper/read-v0")
    fast = minari_io.read_flat("test/hopper/read-v0", num_workers=workers)
    assert set(fast) == set(slow) | {"ref_scores"}
    for key, value in slow.items():
        assert fast[key].dtype == value.dtype == np.float32, key
        np.testing.assert_array_equal(fast[key], value, err_msg=key)
    np.testing.assert_array_equal(fast["ref_scores"], [0.0, 1.0])
    assert fast["episode_ends"].sum() == len(steps["episode_lengths"])


def test_a_file_that_disagrees_with_its_metadata_is_unreadable(steps, data_dirs):
    minari_io.write_minari_dataset("test/hopper/short-v0", steps, "Hopper-v5", description="t",
                                   algorithm_name="a", ref_min_score=0.0, ref_max_score=1.0)
    meta_path = data_dirs / "minari" / "test/hopper/short-v0/data/metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, total_steps=meta["total_steps"] + 1)))
    with pytest.raises(minari_io.UnreadableDataset, match="metadata says 3001"):
        minari_io.read_flat("test/hopper/short-v0")
