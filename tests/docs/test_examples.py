"""Every code example of the docs and the README runs (rules: tests/docs/examples.py, docs/README.md).

Each page runs in its own temporary directory holding a copy of ``configs/`` (so an example may
write next to a config without touching the checkout): its ```python blocks in one namespace in
this process (Lightning and torch are imported once for all pages), its ```bash blocks with this
checkout's ``flashdist`` first on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.examples import Block, ExampleSyntaxError, extract_blocks

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(p for p in (REPO / "docs").rglob("*.md") if p.name != "README.md") + [REPO / "README.md"]
BASH_TIMEOUT_S = 300


def _name(page: Path) -> str:
    return str(page.relative_to(REPO))


def _runnable(page: Path) -> list[Block]:
    return [b for b in extract_blocks(page.read_text(), _name(page)) if b.action in ("run", "file")]


RUNNABLE_PAGES = [p for p in PAGES if any(b.action == "run" for b in _runnable(p))]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=_name)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs_example__"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    for block in _runnable(page):
        where = f"{_name(page)}:{block.line}"
        if block.action == "file":
            target = tmp_path / block.argument
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        elif block.language == "python":
            exec(compile(block.code, where, "exec"), namespace)  # a failure's traceback names page:line
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=BASH_TIMEOUT_S)
            assert done.returncode == 0, (f"{where}: the bash example exited {done.returncode}\n{block.code}\n"
                                          f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}")


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_page_markers_are_well_formed(page: Path):
    extract_blocks(page.read_text(), _name(page))  # raises on a not-run without reason, an unclosed fence


def test_readme_lm_config_is_the_one_the_docs_run():
    # The README shows the config without running it (one fit of it is enough for CI's time);
    # docs/language-models.md writes the same text to lm.yaml and trains it.
    readme = [b.code for b in extract_blocks((REPO / "README.md").read_text()) if b.language == "yaml"]
    guide = [b.code for b in extract_blocks((REPO / "docs/language-models.md").read_text()) if b.argument == "lm.yaml"]
    assert len(readme) == 1 and len(guide) == 1 and readme == guide


EXTRACTION_TABLE = [
    # (markdown, [(language, action, argument)])
    ("```python\nx = 1\n```", [("python", "run", "")]),
    ("```bash\nflashdist plan --help\n```", [("bash", "run", "")]),
    ("```console\n$ flashdist plan\n```", [("console", "show", "")]),
    ("```yaml\na: 1\n```", [("yaml", "show", "")]),
    ("<!-- not-run: needs a GPU -->\n```python\nx = 1\n```", [("python", "skip", "needs a GPU")]),
    ("<!-- not-run: cluster -->\n\n```bash\nsbatch x\n```", [("bash", "skip", "cluster")]),
    ("<!-- file: run.yaml -->\n```yaml\na: 1\n```", [("yaml", "file", "run.yaml")]),
    ("- item\n\n  ```python\n  x = 1\n  ```\n", [("python", "run", "")]),
    ("````markdown\n```python\nx\n```\n````", [("markdown", "show", "")]),
    ("<!-- not-run: GPU -->\ntext between\n```python\nx = 1\n```", [("python", "run", "")]),
]


@pytest.mark.parametrize(("markdown", "expected"), EXTRACTION_TABLE)
def test_extract_blocks_table(markdown: str, expected: list[tuple[str, str, str]]):
    assert [(b.language, b.action, b.argument) for b in extract_blocks(markdown)] == expected


def test_indented_block_is_dedented():
    (block,) = extract_blocks("- item\n\n  ```python\n  x = 1\n  if x:\n      y = 2\n  ```\n")
    assert block.code == "x = 1\nif x:\n    y = 2\n"


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("<!-- not-run: -->\n```python\nx\n```", "needs a reason"),
        ("<!-- file:  -->\n```yaml\nx\n```", "needs a path"),
        ("<!-- file: ../x.yaml -->\n```yaml\nx\n```", "relative path inside"),
        ("```python\nx = 1\n", "never closed"),
    ],
)
def test_malformed_markers_are_refused(markdown: str, message: str):
    with pytest.raises(ExampleSyntaxError, match=message):
        extract_blocks(markdown)
