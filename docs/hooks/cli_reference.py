"""MkDocs hook: the CLI reference is the parsers' own ``--help``, generated at every build.

A page writes ``<!-- cli-help: plan -->`` (or ``bench schedulers``); the hook replaces the marker
with the text ``flashdist plan --help`` prints, run from this checkout. So the reference cannot go
stale: a changed option changes the page at the next build, and a command that stops answering
``--help`` fails the (strict) build. The commands run in parallel: ``fit --help`` imports Lightning
(seconds), the others answer at once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^(?P<indent>[ \t]*)<!--\s*cli-help:\s*(?P<command>[a-z_ -]*?)\s*-->[ \t]*$", re.MULTILINE)
REPO_ROOT = Path(__file__).resolve().parents[2]
HELP_COLUMNS = "100"  # argparse wraps at $COLUMNS: fixed, so the page does not depend on the terminal


def _help_texts(commands: list[str]) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": HELP_COLUMNS, "PYTHONPATH": str(REPO_ROOT)}
    running = {
        command: subprocess.Popen(
            [sys.executable, "-m", "flashdist.cli.main", *command.split(), "--help"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for command in commands
    }
    texts = {}
    for command, process in running.items():
        out, err = process.communicate(timeout=300)
        if process.returncode != 0:
            raise PluginError(f"cli_reference: `flashdist {command} --help` exited {process.returncode}:\n{err}")
        texts[command] = out.rstrip()
    return texts


def on_page_markdown(markdown: str, page, config, files) -> str:
    commands = list(dict.fromkeys(m["command"].strip() for m in MARKER.finditer(markdown)))
    if not commands:
        return markdown
    texts = _help_texts(commands)

    def block(m: re.Match) -> str:  # indented like its marker, so it may sit in an admonition
        text = f"```text\n{texts[m['command'].strip()]}\n```"
        return "\n".join(m["indent"] + line if line else line for line in text.splitlines())

    return MARKER.sub(block, markdown)
