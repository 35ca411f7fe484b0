"""The dependency rule: no module imports from a layer above its own (README, Architecture)."""

from __future__ import annotations

import ast
from pathlib import Path

import flashdist

PACKAGE = Path(flashdist.__file__).parent
# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "version", "registry", "plan", "strategy_names", "spec_text", "compat", "optim", "data", "launching"),
    ("strategies",),
    ("tasks", "image", "text"),
    ("runtime",),
    ("core", "cli", "bench", "__init__"),
)
_LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "flashdist":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_every_package_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts - set(_LAYER_OF) == set()


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _part(".".join(("flashdist", *path.relative_to(PACKAGE).with_suffix("").parts)))
        for line, module in _imports(path):
            target = _part(module)
            if target is not None and _LAYER_OF[target] > _LAYER_OF[own]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert upward == []
