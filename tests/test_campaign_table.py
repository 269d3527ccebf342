"""experiments/campaign_table.py: the README's results tables are the publications' numbers, and
README.md is up to date with the publications committed in experiments/results/."""

import gzip
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import campaign_table as ct  # noqa: E402


def _publish_run(folder: Path, seed: int, final: float, last10: float, final_eval: float,
                 chunk_seconds: float) -> None:
    folder.mkdir(parents=True)
    pid = f"h5-lam1-seed{seed}"
    (folder / "results.json").write_text(json.dumps({"epochs": 2, "policy_ids": [pid], "policies": {
        pid: {"final_normalized_score": final, "last10_normalized_score": last10,
              "final_eval_normalized_score": final_eval, "final_eval_episodes": 100,
              "best_normalized_score": 40.0 + seed, "best_epoch": 1}}}))
    (folder / "config.json").write_text(json.dumps({"seed": seed, "device": "cpu (test)",
                                                    "jax_version": "0.0"}))
    rows = [{"epoch": e, "policy": pid, "eval_return": 1.0, "chunk_seconds": chunk_seconds}
            for e in (1, 2)]
    with gzip.open(folder / "metrics.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_a_table_holds_each_seed_the_spread_and_the_paper(tmp_path):
    old, new = tmp_path / "2026-01-01-hopper-random", tmp_path / "2026-02-01-hopper-random"
    _publish_run(old / "hopper-random-seed0", 0, 1.0, 1.0, 1.0, 1.0)
    (old / "campaign.json").write_text(json.dumps({"runs": ["hopper-random-seed0"]}))
    for seed, final in ((1, 14.0), (0, 10.0)):
        _publish_run(new / f"hopper-random-seed{seed}", seed, final, final + 1, final - 1, 900.0)
    (new / "campaign.json").write_text(json.dumps({"runs": ["hopper-random-seed1",
                                                            "hopper-random-seed0"]}))
    (tmp_path / "2026-03-01-hopper-random").mkdir()  # no manifest: not a publication
    assert ct.latest_publication(tmp_path, "hopper-random") == new
    assert ct.latest_publication(tmp_path, "walker2d-random") is None

    text = ct.tables(tmp_path)
    assert "**hopper-random** (2 of 3 seeds;" in text and "2026-02-01-hopper-random/README.md" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| seed | epochs | final | last-10 mean | final eval (100 fresh")
    assert rows[1] == "| 0 | 2 | 10.0 | 11.0 | 9.0 | 40.0 (epoch 1) | 30 min |"  # 2 × 900 s
    assert rows[2] == "| 1 | 2 | 14.0 | 15.0 | 13.0 | 41.0 (epoch 1) | 30 min |"
    # mean ± sample std of (10, 14): 12.0 ± 2.83
    assert rows[3] == "| mean ± std | | 12.0 ± 2.8 | 13.0 ± 2.8 | 11.0 ± 2.8 | | |"
    assert rows[4].startswith("| paper (D4RL v0 data; ours on v5 data) | 1000 | 11.7 ± 0.4 |")
    assert "Machine: cpu (test), jax 0.0." in text


def test_the_block_between_the_markers_is_replaced_and_nothing_else():
    text = f"intro\n{ct.START}\nold\n{ct.END}\nafter\n"
    assert ct.replace_block(text, "new") == f"intro\n{ct.START}\nnew\n{ct.END}\nafter\n"
    with pytest.raises(ValueError, match="needs one"):
        ct.replace_block("no markers", "new")


def test_the_readme_tables_match_the_committed_publications(capsys):
    assert ct.main(["--check"]) == 0, capsys.readouterr().err
    assert set(ct.PAPER) == {e.group for e in ct.QUEUE}


def test_a_table_of_several_machines_says_which_seed_ran_where():
    cpu, gpu = "cpu (cpu, 1 devices, 2 host cores)", "NVIDIA H200 (gpu, 1 devices, 16 host cores)"
    runs = [{"device": cpu, "jax": "0.10.2", "seed": 0}, {"device": cpu, "jax": "0.10.2", "seed": 1},
            {"device": gpu, "jax": "0.11.2", "seed": 2}]
    assert ct._machines(runs) == (f"Machine: seeds 0, 1: {cpu}, jax 0.10.2; "
                                  f"seed 2: {gpu}, jax 0.11.2.")
    assert ct._machines(runs[:2]) == f"Machine: {cpu}, jax 0.10.2."
