"""Fixtures of the data tests."""

import pytest


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty Minari root and flat cache of this test's own (offline unless a test says so)."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("MOPO_JAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MOPO_JAX_OFFLINE", "1")
    return tmp_path
