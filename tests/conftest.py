"""Shared fixtures: an isolated Minari root and flat cache, and one small locally built dataset."""

import pytest

SMALL_STEPS = 5000


@pytest.fixture(scope="session")
def data_dirs(tmp_path_factory):
    """Point Minari and our flat cache at fresh temporary folders for the whole test session."""
    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        mp.setenv("MOPO_JAX_CACHE_DIR", str(root / "cache"))
        mp.setenv("MOPO_JAX_OFFLINE", "1")
        yield root


@pytest.fixture(scope="session")
def hopper_small(data_dirs):
    """hopper-random with 5k steps, built locally by the real build path."""
    from mopo_jax.data.load import load_dataset

    return load_dataset("hopper-random", num_steps=SMALL_STEPS)
