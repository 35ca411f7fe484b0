"""``FlashdistCLI``: LightningCLI with flashdist's Trainer, its Task and DataModules, and early errors.

The parse → check → instantiate → run order is LightningCLI's; flashdist hooks in at each
step so that every refusal happens in the launching process and reads as a ``ConfigError``
with the key path: each section against its class's signature before jsonargparse parses
(``cli/config_validation.py``), what jsonargparse still refuses in its own words
(``parse_arguments``), optimizer/scheduler specs (``before_instantiate_classes``),
constructor refusals (``instantiate_classes``) and model/data mismatches
(``after_instantiate_classes``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from argparse import ArgumentError
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from flashdist.cli.checks import check_model_matches_data, check_task_specs, section_of_failure
from flashdist.cli.config_layers import read_run_config
from flashdist.cli.config_validation import Section, validate_run_config
from flashdist.cli.signatures import method_parameters
from flashdist.launching.checked import this_command, was_checked
from flashdist.tasks.model import Task
from flashdist.runtime.trainer import Trainer, check_fit_before_launch, check_strategy_before_launch
from flashdist.errors import ConfigError

# Raise instead of exit, so errors become ConfigErrors; no abbreviations, so a misspelt
# --trainer.max_epoch is an error rather than silently --trainer.max_epochs.
_PARSER_KWARGS: dict[str, Any] = {"exit_on_error": False, "allow_abbrev": False}
SUBCOMMANDS = ("fit", "validate")
SECTIONS = (
    Section("trainer", target=Trainer),
    Section("model", base=Task, required=True),
    Section("data", base=LightningDataModule, required=True),
)


class ChecksPassed(Exception):
    """Raised by ``FlashdistCLI(check_only=True)`` once every pre-launch check passed, instead of running the subcommand."""


class FlashdistCLI(LightningCLI):
    """``flashdist fit|validate --config run.yaml``; see ``flashdist.cli.fit``.

    ``check_only``: parse ``args`` as the subcommand would (so ``--ckpt_path`` and the other
    arguments of ``Trainer.fit`` are read as ``fit`` reads them), build the classes, run every
    pre-launch check, then raise ``ChecksPassed`` where the subcommand would start. LightningCLI
    has no public "parse as fit but do not run"; ``run=False`` parses without the subcommand and
    so refuses its arguments, and ``after_instantiate_classes`` is the last public hook before
    the run.

    Example:
        >>> cli = FlashdistCLI(args=["--config", "configs/quickstart.yaml"], run=False)  # doctest: +SKIP
    """

    def __init__(self, args: list[str], run: bool = True, check_only: bool = False):
        self._args = list(args)
        self._check_only = check_only
        run = run or check_only
        subcommand = self._args[0] if run and self._args and self._args[0] in SUBCOMMANDS else None
        run_config = read_run_config(self._args[1:] if subcommand else self._args)
        if run_config is not None:  # None: --help, or a form only jsonargparse reads
            loggers = logs_under_root_dir(run_config.values)
            if loggers is not None:  # last on the command line: jsonargparse reads the filled list
                args = [*args, f"--trainer.logger={json.dumps(loggers)}"]
            keys, more_keys = top_level_keys(subcommand)
            validate_run_config(run_config, SECTIONS, keys, other_keys_possible=more_keys)
        super().__init__(
            model_class=Task,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=Trainer,
            # One config.yaml per log dir, replaced on a re-run rather than refusing to start.
            save_config_kwargs={"overwrite": True},
            parser_kwargs={**_PARSER_KWARGS, **{name: dict(_PARSER_KWARGS) for name in SUBCOMMANDS}},
            # The Task builds its own optimizer and scheduler from model.init_args.
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # LightningCLI's own version warns whenever args= is given and sys.argv is not empty,
        # which is always true for a console script; the parse itself is the same.
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as err:
            # What flashdist's own checks let through, in jsonargparse's words (never re-parsed).
            files = _config_files(self._args)
            where = f" (from {', '.join(files)})" if files else ""
            raise ConfigError(
                f"jsonargparse refused the config{where}:\n{err.message}",
                hint="`flashdist fit --help` lists every key; --print_config shows the merged config.",
            ) from None

    def before_instantiate_classes(self) -> None:
        config = self._section_config()
        if config.get("model") is not None:
            check_task_specs(config["model"])

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ConfigError, ValueError) as raised:
            # jsonargparse re-raises a constructor's error inside a union ValueError; find ours.
            err = _config_error_in_chain(raised)
            if err is None:
                raise
            section = section_of_failure(err.__traceback__)
            class_path = self._section_config().get(f"{section}.class_path") if section in ("model", "data") else None
            where = f"{section}.init_args ({class_path})" if class_path else section
            raise ConfigError(f"{where}: {err}") from None

    def after_instantiate_classes(self) -> None:
        check_model_matches_data(self.model, self.datamodule)
        if self._check_only:
            check_fit_before_launch(self.trainer, self.model, self.datamodule)
            raise ChecksPassed
        # Trainer.fit repeats it; here it runs before LightningCLI's own set-up. A rank whose starter
        # checked this command already skips both (launching/checked.py).
        if self.subcommand == "fit" and not was_checked(os.environ, this_command()):
            check_strategy_before_launch(self.trainer, self.model, self.datamodule)

    # ---- helpers ---------------------------------------------------------------------------
    def _section_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config



def logs_under_root_dir(config: dict[str, Any]) -> list[Any] | None:
    """Fill ``save_dir`` of each logger given without one (whose class requires it) with
    ``trainer.default_root_dir`` (the working directory when unset, as Lightning's own default
    logger has it), so ``--trainer.default_root_dir=runs/x`` moves the example configs' logs.

    Returns the filled logger list, or None when nothing was filled. ``config`` is flashdist's
    merged copy of the user's files and flags (never the user's own objects).
    """
    trainer = config.get("trainer")
    loggers = trainer.get("logger") if isinstance(trainer, dict) else None
    if not isinstance(loggers, list):
        loggers = [loggers]
    filled = False
    for logger in loggers:
        if not isinstance(logger, dict) or not isinstance(logger.get("class_path"), str):
            continue
        init_args = logger.setdefault("init_args", {})
        if isinstance(init_args, dict) and "save_dir" not in init_args and _requires_save_dir(logger["class_path"]):
            init_args["save_dir"] = str(trainer.get("default_root_dir") or os.getcwd())
            filled = True
    return loggers if filled else None


def _requires_save_dir(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        parameter = inspect.signature(getattr(importlib.import_module(module), name)).parameters.get("save_dir")
    except Exception:  # a class that does not import: jsonargparse names the problem
        return False
    return parameter is not None and parameter.default is parameter.empty


def top_level_keys(subcommand: str | None) -> tuple[dict[str, Any], bool]:
    """The keys a run config takes at its top, with their types (None: a section, checked on its own).

    LightningCLI's: the sections, ``seed_everything``, and the arguments of the subcommand's
    Trainer method that are not built from the sections (``ckpt_path`` for ``fit``). The flag:
    whether that method's signature leaves other keys possible (a ``**kwargs`` not followed).
    """
    keys: dict[str, Any] = {"seed_everything": bool | int, **{section.name: None for section in SECTIONS}}
    if subcommand is not None:
        built = LightningCLI.subcommands()[subcommand]
        method = method_parameters(Trainer, subcommand)
        keys.update({name: p.annotation for name, p in method.parameters.items() if name not in built})
        return keys, method.open
    return keys, False


def _config_error_in_chain(error: BaseException) -> ConfigError | None:
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 16:
        if isinstance(current, ConfigError):
            return current
        current, seen = current.__cause__ or current.__context__, seen + 1
    return None


def _config_files(args: list[str]) -> list[str]:
    """Where the values came from, for the error message: the config files, then "the command line"."""
    files, overrides = [], False
    for index, arg in enumerate(args):
        if arg in ("-c", "--config") and index + 1 < len(args):
            files.append(args[index + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        elif arg.startswith("--") and (index == 0 or args[index - 1] not in ("-c", "--config")):
            overrides = True
    return files + (["the command line"] if overrides else [])


__all__ = ["ChecksPassed", "FlashdistCLI", "SUBCOMMANDS"]
