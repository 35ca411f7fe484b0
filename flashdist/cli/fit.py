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
    user's config, not flashdist, that needs fixing. Under torchrun or srun (every rank parses
    the same config) only global rank 0 prints it; the other ranks return 2 quietly.
    """
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: flashdist {{{','.join(COMMANDS)}}} --config CONFIG.yaml [--section.key=value ...]", file=sys.stderr)
        return 2
    from flashdist.launching.checked import running_command

    with running_command(["flashdist", *argv]):  # the command a check before this process names (launching/checked.py)
        return _status(argv[0], lambda: build_cli(argv))


def check(argv: list[str]) -> int:
    """Every check ``flashdist fit`` runs before launch, and nothing else; the status ``run`` would end with.

    ``flashdist launch`` runs this (in a process of its own, in the topology torchrun will
    start) before starting torchrun, so a bad config is one message and no process.

    Example:
        >>> check(["fit", "--config", "configs/quickstart.yaml"])  # doctest: +SKIP
        0
    """
    def checked() -> None:
        from flashdist.cli.lightning_cli import ChecksPassed, FlashdistCLI

        try:  # parsed as the subcommand, so its own arguments (--ckpt_path=auto) are read as `fit` reads them
            FlashdistCLI(args=argv, check_only=True)
        except ChecksPassed:
            return

    return _status(argv[0], checked)


def _status(command: str, work: Any) -> int:
    from flashdist.errors import ConfigError
    from flashdist.runtime.said_once import CONFIG_ERROR_EXIT_STATUS, leave_quietly, says_it

    try:
        work()
    except ConfigError as err:
        if not says_it(err):
            leave_quietly()  # once the launcher stops this rank: rank 0 may still be on its way to saying it
        print(f"flashdist {command}: error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT_STATUS
    except SystemExit as exit_:  # --help, --print_config; a ConfigError on a rank other than 0 (runtime/said_once.py)
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
    from flashdist.compat.console import quiet_console

    quiet_console()
    if sys.argv[1:2] == ["--check-only"]:  # flashdist launch's check before torchrun
        sys.exit(check(sys.argv[2:]))
    sys.exit(run(sys.argv[1:]))


__all__ = ["HELP", "build_cli", "check", "run"]
