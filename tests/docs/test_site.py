"""The documentation site builds with warnings as errors, and its generated pages are filled.

`mkdocs build --strict` fails on a broken link or anchor, a page missing from the nav, a docstring
mkdocstrings cannot render, or a `flashdist ... --help` that fails (docs/hooks/cli_reference.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_site_builds_strictly_with_generated_references(tmp_path: Path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a build warning
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for usage in ("usage: flashdist &lt;command&gt;", "usage: flashdist plan", "usage: flashdist launch",
                  "usage: flashdist bench schedulers", "--trainer.resume_policy"):
        assert usage in cli, f"the CLI reference lacks {usage!r}: the help hook did not fill it"
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("build_optimizer", "plan_steps", "ConfigError", "LanguageModelingDataModule"):
        assert name in api, f"the API reference lacks {name!r}"


def test_readme_links_point_at_files_that_exist():
    # The README is not part of the site (mkdocs checks the site's links); its links into docs/
    # are checked here.
    readme = (REPO / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in t]
    assert targets, "the README links into the docs"
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
