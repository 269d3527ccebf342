"""The documentation runs: every ```python block of README.md and docs/*.md executes, offline, each
in a fresh subprocess; the `python -m mopo_jax.X` modules and `experiments/*.py` scripts that the
```bash blocks name exist; relative links point at files that exist.

A block that cannot run here (a long job, the network) is marked in the markdown with a comment
on the line before its fence, `<!-- no-test: the reason -->`; it is reported as skipped with that
reason (pytest -rs lists them).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.+?)\s*-->")
BLOCK_TIMEOUT_S = 900  # a cold compile cache on a busy 2-core machine


class Block(NamedTuple):
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, with a preceding `no-test` comment if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{start + 1}: unclosed code fence")
        before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        skip = NO_TEST.search(before)
        found.append(Block(page, start + 1, match[1], "\n".join(body) + "\n",
                           skip[1] if skip else None))
        i += 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]
SHELL = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


def test_the_pages_have_runnable_python():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 1
    assert any(b.page.name == "README.md" for b in PYTHON)
    unknown = [b.name for b in ALL_BLOCKS if b.lang not in ("python", "bash", "sh", "shell",
                                                            "console", "text", "")]
    assert not unknown, f"code blocks of a language this test does not know: {unknown}"


def test_a_no_test_comment_marks_only_the_next_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- no-test: needs the network -->\n\n```python\nimport x\n```\n\n"
                    "```bash\npython -m mopo_jax.train\n```\n\n```python\nprint(1)\n```\n")
    found = blocks(page)
    assert [(b.lang, b.line, b.skip_reason) for b in found] == [
        ("python", 5, "needs the network"), ("bash", 9, None), ("python", 13, None)]
    assert found[0].code == "import x\n"


@pytest.fixture(scope="module")
def doc_env(tmp_path_factory):
    """Environment of the block subprocesses: offline, with their own Minari root and caches
    (shared by the blocks of this worker, so a dataset is built once)."""
    root = tmp_path_factory.mktemp("docs")
    env = dict(os.environ, MOPO_JAX_OFFLINE="1", MINARI_DATASETS_PATH=str(root / "minari"),
               MOPO_JAX_CACHE_DIR=str(root / "cache"), JAX_PLATFORMS="cpu")
    env.pop("MOPO_JAX_POLICY_DIR", None)
    env.pop("MOPO_JAX_BEHAVIOR_DIR", None)
    return root, env


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
def test_python_block_runs(block, doc_env):
    if block.skip_reason:
        pytest.skip(f"{block.name} marked no-test: {block.skip_reason}")
    root, env = doc_env
    work = root / block.name.replace("/", "_").replace(":", "_")
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", block.code], cwd=work, env=env,
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, (f"{block.name} failed (exit {proc.returncode}):\n{block.code}\n"
                                  f"--- stderr ---\n{proc.stderr[-4000:]}")


MODULE = re.compile(r"python3? -m (mopo_jax(?:\.\w+)*)")
SCRIPT = re.compile(r"python3? (experiments/[\w/.-]+\.py)")


def test_shell_blocks_name_existing_modules_and_scripts():
    missing = []
    for block in SHELL:
        for module in MODULE.findall(block.code):
            if importlib.util.find_spec(module) is None:
                missing.append(f"{block.name}: python -m {module}")
            elif module.count(".") == 0 or importlib.util.find_spec(module).submodule_search_locations:
                if importlib.util.find_spec(module + ".__main__") is None:
                    missing.append(f"{block.name}: python -m {module} (a package without __main__)")
        for script in SCRIPT.findall(block.code):
            if not (ROOT / script).is_file():
                missing.append(f"{block.name}: {script}")
    assert not missing, "commands naming what does not exist:\n" + "\n".join(missing)
    assert any(MODULE.search(b.code) for b in SHELL)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_resolve():
    broken = []
    for page in [*PAGES, ROOT / "BENCHMARKS.md", ROOT / "experiments" / "README.md"]:
        if not page.exists():
            continue
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
