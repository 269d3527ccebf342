"""Shared fixtures: an isolated Minari root and flat cache, and one small locally built dataset.

XLA executables are kept in a persistent compilation cache shared by the test workers and the
subprocesses they start (JAX_COMPILATION_CACHE_DIR), so the many identical tiny programs of the
suite compile once. A cached executable is the same program; only compile time is saved.
"""

import os
from pathlib import Path

import pytest

_COMPILE_CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation"


def pytest_configure(config):
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_COMPILE_CACHE))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

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
