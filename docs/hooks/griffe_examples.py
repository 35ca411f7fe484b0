"""Griffe extension: read flashdist's ``Example:`` docstring sections as examples.

The code base writes ``Example:`` followed by ``>>>`` lines (STYLE.md: one usage example per
public function). Griffe's Google parser knows ``Examples:`` (rendered as Python console code)
but reads ``Example:`` as a Markdown admonition, where ``batch["input"]["ids"]`` becomes a
broken reference link. Renaming the section here keeps the sources as they are.
"""

from __future__ import annotations

import re

import griffe

SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = SINGULAR.sub(r"\1Examples:", obj.docstring.value)
