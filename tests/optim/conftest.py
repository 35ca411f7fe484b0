"""Install tests/fixtures/flashdist_example_plugin for the session, as pip would.

pip installs a package as its modules plus a ``<name>-<version>.dist-info`` directory whose
``entry_points.txt`` is what ``importlib.metadata.entry_points`` reads. This fixture writes exactly
that into a temporary directory (the entry points rendered from the plugin's own pyproject.toml,
so the two cannot diverge) and puts it on ``sys.path`` for the session: milliseconds, where a
real ``pip install`` of it builds a wheel with setuptools first.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parents[1] / "fixtures" / "flashdist_example_plugin"


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory):
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("site-packages")
    shutil.copytree(PLUGIN / "flashdist_example_plugin", site / "flashdist_example_plugin")
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (dist_info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n" for group, points in groups.items())
    )
    sys.path.insert(0, str(site))
    yield project
    sys.path.remove(str(site))
    sys.modules.pop("flashdist_example_plugin", None)
