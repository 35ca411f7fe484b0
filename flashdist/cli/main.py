"""``flashdist <command> ...``: a thin dispatcher; each command lives in its own module.

Each module ``flashdist.cli.<command>`` exposes ``HELP`` (one line) and ``run(argv) -> int``.
Commands import their dependencies lazily, so ``flashdist plan`` answers without importing
Lightning or DeepSpeed.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "fit": "flashdist.cli.fit",
    "validate": "flashdist.cli.fit",
    "plan": "flashdist.cli.plan",
    "launch": "flashdist.cli.launch",
    "slurm": "flashdist.cli.slurm",
    "bench": "flashdist.cli.bench",
    "export": "flashdist.cli.export",
}

SUMMARIES = {
    "fit": "train from a YAML config (LightningCLI): flashdist fit --config configs/quickstart.yaml",
    "validate": "run validation from a YAML config",
    "plan": "print the step plan for a hypothetical cluster, without launching anything",
    "launch": "run a command under torchrun (one or many nodes)",
    "slurm": "write (and optionally submit) an sbatch script for a config",
    "bench": "measure overheads: bench schedulers | fit | llm | ... | startup (time to the first step)",
    "export": "write a Hugging Face model directory (save_pretrained) from a CausalLM checkpoint",
}


def usage() -> str:
    lines = ["usage: flashdist <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {SUMMARIES[name]}" for name in COMMANDS]
    lines += ["", "Each command has --help."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from flashdist.compat.console import quiet_console

    quiet_console()  # known noise off flashdist's own console (flashdist/compat/console.py lists each, and why)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"flashdist: unknown command {command!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command])
    return int(module.run(rest if command not in ("fit", "validate") else [command, *rest]) or 0)


if __name__ == "__main__":
    sys.exit(main())
