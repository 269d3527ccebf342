"""Smoke test of the benchmark tool: `experiments/benchmark.py --quick` runs every part end to end and
writes complete results (JSON + markdown). No assertions on speed."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # one test: every benchmark part end to end in a subprocess

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "a": {"fit", "step"},
    "b": {"rollout"},
    "c": {"epoch", "sac_only"},
    "d": {"seeds_1", "seeds_2"},
    "e": {"epoch", "fetch", "checkpoint", "eval", "total"},
    "f": {"epoch", "rollout", "sac", "ours_rollout", "speedup"},
}


def _numbers(tree, path=""):
    """(path, value) of every int/float leaf (bools and None skipped)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_quick_benchmark_writes_complete_results(tmp_path):
    out = tmp_path / "bench.json"
    # Unoptimised XLA compiles about twice as fast; the numbers of a smoke test are meaningless anyway.
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--quick",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    result = json.loads(out.read_text())
    for key in ("platform", "device_kind", "jax", "jaxlib", "cpu_count"):
        assert result["machine"][key], key
    assert result["config"]["rollout_batch_size"] == result["bench"]["rollout_batch_size"]
    parts = result["parts"]
    assert set(parts) == set(EXPECTED)
    for part, names in EXPECTED.items():
        assert names <= set(parts[part]), (part, sorted(parts[part]))
        for name in names - {"speedup"}:
            entry = parts[part][name]
            assert entry["seconds"]["median"] > 0 and len(entry["seconds"]["runs"]) == 2
        numbers = list(_numbers(parts[part], part))
        assert numbers
        for path, value in numbers:
            assert math.isfinite(value) and value > 0, (path, value)
    for part, name in (("a", "step"), ("b", "rollout"), ("c", "epoch"), ("c", "sac_only")):
        assert parts[part][name]["gflop_per_s"] > 0
        assert parts[part][name]["flops_source"] in ("xla", "analytic", "mixed")
    assert set(parts["f"]["speedup"]) == {"epoch", "sac", "rollout"}
    assert parts["d"]["seeds_2"]["num_seeds"] == 2

    table = out.with_suffix(".md").read_text()
    assert "| part | measurement |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + sum(len(names - {"speedup"}) for names in EXPECTED.values())
