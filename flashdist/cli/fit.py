"""``flashdist fit`` / ``flashdist validate``: a run described by one YAML file, via LightningCLI.

Configs look like every Lightning project's: ``trainer:``, ``model:``, ``data:`` with
``class_path`` / ``init_args``; any key can be overridden (``--trainer.max_epochs=1``) and
``--print_config`` shows the merged result. What flashdist adds is all *before launch*: a
bad key, type, optimizer or scheduler spec, or a model/data mismatch raises one
``ConfigError`` naming the key path, in the launching process, before Lightning starts
any other rank.

Example:
    $ flashdist fit --config configs/quickstart.yaml --trainer.max_epochs=1
"""

from __future__ import annotations

import sys
from typing import Any

HELP = "train from a YAML config (LightningCLI): flashdist fit --config configs/quickstart.yaml"
COMMANDS = ("fit", "validate")


def run(argv: list[str]) -> int:
    """Run ``argv`` (``["fit", "--config", ...]``); return the exit status.

    A ``ConfigError`` becomes one message on stderr and status 2, with no traceback: it is the
    user's config, not flashdist, that needs fixing.
    """
    from flashdist.errors import ConfigError

    if not argv or argv[0] not in COMMANDS:
        print(f"usage: flashdist {{{','.join(COMMANDS)}}} --config CONFIG.yaml [--section.key=value ...]", file=sys.stderr)
        return 2
    try:
        build_cli(argv)
    except ConfigError as err:
        print(f"flashdist {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help, --print_config
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


def build_cli(argv: list[str], run: bool = True) -> Any:
    """Parse, check and instantiate ``argv``; run the subcommand when ``run`` (else ``argv[0]`` is dropped).

    Example:
        >>> cli = build_cli(["fit", "--config", "configs/quickstart.yaml"], run=False)  # doctest: +SKIP
        >>> type(cli.trainer).__name__  # doctest: +SKIP
        'Trainer'
    """
    from flashdist.cli.lightning_cli import FlashdistCLI

    return FlashdistCLI(args=argv if run else argv[1:], run=run)


if __name__ == "__main__":
    from flashdist.cli.console import quiet_console

    quiet_console()
    sys.exit(run(sys.argv[1:]))


__all__ = ["HELP", "build_cli", "run"]
