"""A scheduler or optimizer spec written as command-line text, read the way a config reads it.

``flashdist fit --model.init_args.lr_scheduler='[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]'``
goes through YAML (jsonargparse); ``flashdist plan --lr-scheduler`` and ``flashdist bench
schedulers --scheduler`` read the same text here, so the three accept the same forms: a name,
or ``[name, {kwargs}]`` / ``[name, {kwargs}, {lightning_config}]`` in YAML flow or JSON
(``(...)`` is read as ``[...]`` too). No torch, no Lightning: ``flashdist plan`` stays fast.
"""

from __future__ import annotations

from typing import Any

from flashdist.errors import ConfigError

FORMS = "a name, or '[name, {kwargs}]' / '[name, {kwargs}, {lightning_config}]' as YAML or JSON"


def read_spec_text(text: str, option: str) -> str | tuple[Any, ...]:
    """``text`` as a spec: the name itself, or the ``(name, kwargs[, lightning_config])`` tuple.

    Example:
        >>> read_spec_text("[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]", "--lr-scheduler")
        ('cosine_schedule_with_warmup', {'num_warmup_steps': 0.1})
        >>> read_spec_text(' ["steplr", {"step_size": 10}] ', "--lr-scheduler")
        ('steplr', {'step_size': 10})
    """
    import yaml

    stripped = text.strip()
    if not stripped:
        raise ConfigError(f"{option} '' is empty.", accepted=FORMS)
    if stripped[0] not in "[(":
        return stripped
    body = "[" + stripped[1:-1] + "]" if stripped.startswith("(") and stripped.endswith(")") else stripped
    try:
        value = yaml.safe_load(body)  # YAML flow is a superset of JSON: both forms, as a config file reads them
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"{option} {text!r} is not valid YAML/JSON: {first}.", accepted=FORMS,
                          hint=f"quote it for the shell: {option} '[cosine_schedule_with_warmup, {{num_warmup_steps: 0.1}}]'.") from None
    if (not isinstance(value, list) or not 1 <= len(value) <= 3 or not isinstance(value[0], str)
            or any(not isinstance(part, dict) for part in value[1:])):
        raise ConfigError(f"{option} {text!r} is not [name, kwargs] or [name, kwargs, lightning_config].", accepted=FORMS,
                          hint="e.g. '[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]'.")
    return tuple(value)
