"""Find the code examples of a Markdown page: what tests/docs/test_examples.py runs.

The rules (docs/README.md says the same to page authors):
- A ```python block runs; the python blocks of one page share one namespace, in page order.
- A ```bash block runs under ``bash -euo pipefail``.
- ``<!-- not-run: REASON -->`` on the line before a block's fence: it does not run. The reason is
  required (a GPU, a cluster, a long fit that another named test covers).
- ``<!-- file: PATH -->`` on the line before a block's fence: its text is written to PATH (relative
  to the page's working directory) before the page's next blocks run, e.g. a YAML config that a
  following ```bash block trains with.
- Every other language (```console for a shell session with its output, ```text, ```yaml without
  a file marker, ...) is shown only.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Literal

RUN_LANGUAGES = ("python", "bash")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<lang>[\w+-]*)[^\n]*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<kind>not-run|file)\s*:(?P<value>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, what to do with it, and its text."""

    line: int  # 1-based line of the opening fence
    language: str
    action: Literal["run", "file", "show", "skip"]
    code: str
    argument: str = ""  # the file path of a `file` block; the reason of a `skip` block


class ExampleSyntaxError(ValueError):
    """A page's markers are malformed (a not-run without reason, an unclosed fence)."""


def extract_blocks(markdown: str, page: str = "<page>") -> list[Block]:
    """Every fenced block of ``markdown``, each with its action.

    >>> [b.action for b in extract_blocks("<!-- not-run: GPU -->\\n```python\\nx = 1\\n```\\n```bash\\nls\\n```")]
    ['skip', 'run']
    """
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        ticks, indent = opening["ticks"], opening["indent"]
        end = i + 1
        while end < len(lines) and not re.match(rf"^{re.escape(indent)}{ticks}\s*$", lines[end]):
            end += 1
        if end == len(lines):
            raise ExampleSyntaxError(f"{page}:{i + 1}: a ``` fence that is never closed")
        code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
        blocks.append(_classify(page, i, lines, opening["lang"].lower(), code))
        i = end + 1
    return blocks


def _classify(page: str, fence_index: int, lines: list[str], language: str, code: str) -> Block:
    previous = next((lines[j] for j in range(fence_index - 1, -1, -1) if lines[j].strip()), "")
    directive = DIRECTIVE.match(previous)
    line = fence_index + 1
    if directive is None:
        action = "run" if language in RUN_LANGUAGES else "show"
        return Block(line, language, action, code)
    value = directive["value"].strip()
    if not value:
        raise ExampleSyntaxError(f"{page}:{line}: `<!-- {directive['kind']}: -->` needs a "
                                 f"{'reason' if directive['kind'] == 'not-run' else 'path'}")
    if directive["kind"] == "not-run":
        return Block(line, language, "skip", code, value)
    if value.startswith("/") or ".." in value.split("/"):
        raise ExampleSyntaxError(f"{page}:{line}: `<!-- file: {value} -->` must be a relative path inside the page's directory")
    return Block(line, language, "file", code, value)
