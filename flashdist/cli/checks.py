"""Checks on a parsed config that jsonargparse's types cannot express, each naming its key path.

All of them run in the launching process, before ``trainer.fit`` starts any other rank.
"""

from __future__ import annotations

import warnings
from types import TracebackType
from typing import Any

from flashdist.errors import ConfigError
from flashdist.optim.specs import normalize_optimizer, normalize_scheduler


def check_task_specs(model_config: Any, section: str = "model") -> None:
    """Normalize ``optimizer`` / ``lr_scheduler`` as the Task will, but name the key path on failure.

    Example:
        >>> check_task_specs(Namespace(class_path="flashdist.image.ImageClassifier",
        ...                            init_args=Namespace(optimizer="adamm")))  # doctest: +SKIP
        Traceback (most recent call last):
        flashdist.errors.ConfigError: model.init_args.optimizer='adamm': unknown optimizer 'adamm' ...
    """
    from flashdist.compat.jsonargparse import import_object

    class_path = getattr(model_config, "class_path", None)
    init_args = getattr(model_config, "init_args", None)
    if class_path is None or init_args is None:
        return
    task_class = import_object(class_path)
    for key, normalize, registry_name in (
        ("optimizer", normalize_optimizer, "optimizers"),
        ("lr_scheduler", normalize_scheduler, "lr_schedulers"),
    ):
        if key not in init_args or not hasattr(task_class, registry_name):
            continue
        value = init_args[key]
        if value is None:  # optimizer=None: the Task's default; lr_scheduler=None: none
            continue
        path = f"{section}.init_args.{key}"
        try:  # numbers written as strings (YAML's 1e-3) included: optim/specs.py refuses them
            with warnings.catch_warnings():
                # Only errors are this check's: the Task is built from the same value right after and
                # gives its warnings (StepLR's interval note) itself. Python's once-per-place memory
                # would not hide the repeat: any filter a library adds in between resets it.
                warnings.simplefilter("ignore")
                normalize(value, getattr(task_class, registry_name))
        except ConfigError as err:
            raise ConfigError(f"{path}={_yaml(value)}: {err}") from None


def check_model_matches_data(model: Any, datamodule: Any) -> None:
    """The model's ``num_classes`` and vocabulary must fit what the DataModule produces."""
    if datamodule is None:
        return
    model_classes = getattr(model, "num_classes", None)
    data_classes = _safe_attr(datamodule, "num_classes")
    if isinstance(model_classes, int) and isinstance(data_classes, int) and model_classes != data_classes:
        raise ConfigError(
            f"model.init_args.num_classes={model_classes} but the data ({type(datamodule).__name__}) has {data_classes} classes.",
            hint=f"set model.init_args.num_classes: {data_classes} (or --model.init_args.num_classes={data_classes}).",
        )
    max_token_id = _safe_attr(datamodule, "max_token_id")
    model_vocab = getattr(getattr(getattr(model, "model", None), "config", None), "vocab_size", None)
    if isinstance(max_token_id, int) and isinstance(model_vocab, int) and max_token_id >= model_vocab:
        raise ConfigError(
            f"the data produces token ids up to {max_token_id}, but the model's vocabulary has {model_vocab} entries.",
            hint=f"set data.init_args.vocab_size to at most {model_vocab}.",
        )


def section_of_failure(traceback: TracebackType | None) -> str:
    """Which config section was being built when an error was raised: model, data or trainer."""
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer

    kinds = ((LightningModule, "model"), (LightningDataModule, "data"), (Trainer, "trainer"))
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        for kind, section in kinds:
            if isinstance(owner, kind):
                return section
        traceback = traceback.tb_next
    return "config"


def _safe_attr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except (NotImplementedError, ConfigError):
        return None


def _yaml(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return repr(value)
