"""Which columns a language-modeling dataset is read from, and as what: one pure decision at ``__init__``.

Four forms, decided from the options and the columns' value types (the first record, or the
schema), so that a column is never trained on as the Python repr of a list:

- ``text``: ``text_field`` (default ``text``), strings, every token learned;
- ``prompt_completion``: ``prompt_field`` + ``completion_field`` (found as ``prompt`` + ``completion``
  when nothing is named and there is no ``text`` column), strings, the completion learned;
- ``messages``: ``messages_field`` (found as ``messages`` or ``conversations`` when nothing is named),
  lists of ``{role, content}`` rendered with the chat template;
- ``conversational``: ``prompt_field`` + ``completion_field`` whose values are message lists (TRL; found as above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flashdist.data.chat import MESSAGE_COLUMNS, check_train_on
from flashdist.errors import ConfigError

Form = Literal["text", "prompt_completion", "messages", "conversational"]


@dataclass(frozen=True)
class Fields:
    form: Form
    text_field: str | None = None
    prompt_field: str | None = None
    completion_field: str | None = None
    messages_field: str | None = None
    train_on: str = "assistant"

    @property
    def chat(self) -> bool:
        """Rendered with a chat template."""
        return self.form in ("messages", "conversational")


def resolve_fields(kinds: dict[str, str], text_field: str | None = None, prompt_field: str | None = None,
                   completion_field: str | None = None, messages_field: str | None = None, train_on: str | None = None,
                   where: str = "") -> Fields:
    """The form of the data, from the options and ``kinds`` (column → value type of the first file, named by ``where``).

    Example:
        >>> resolve_fields({"messages": "list"}).form
        'messages'
        >>> resolve_fields({"prompt": "list", "completion": "list"}, prompt_field="prompt", completion_field="completion").form
        'conversational'
    """
    for name, value in (("text_field", text_field), ("prompt_field", prompt_field), ("completion_field", completion_field),
                        ("messages_field", messages_field)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{name}={value!r} must be a column name.")
    if (prompt_field is None) != (completion_field is None):
        raise ConfigError(f"prompt_field={prompt_field!r} and completion_field={completion_field!r}: give both or neither.",
                          hint="prompt_field + completion_field learn the completion only; text_field learns all text.")
    given = [name for name, value in (("text_field", text_field), ("prompt_field", prompt_field),
                                      ("messages_field", messages_field)) if value is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} were both given.", hint="name one form of data: text, prompt/completion or messages.")
    if train_on is not None:
        check_train_on(train_on)
    if not given:
        # TRL's column names, when no field is named and there is no "text" column to read.
        found = next((column for column in MESSAGE_COLUMNS if column in kinds), None)
        if found is not None and "text" not in kinds:
            messages_field = found
        elif "prompt" in kinds and "completion" in kinds and "text" not in kinds:
            prompt_field, completion_field = "prompt", "completion"
        else:
            text_field = "text"
    for name, column in (("text_field", text_field), ("prompt_field", prompt_field), ("completion_field", completion_field),
                         ("messages_field", messages_field)):
        if column is not None and column not in kinds:
            raise ConfigError(f"{name}={column!r} is not a column{where}.", accepted=list(kinds), hint=f"set {name} to one of the columns above.")
    if messages_field is not None:
        _require_kind(kinds, messages_field, "list", "messages_field", "a list of {role, content} messages per row")
        return Fields("messages", messages_field=messages_field, train_on=train_on or "assistant")
    if prompt_field is not None:
        prompt_kind, completion_kind = kinds[prompt_field], kinds[completion_field]
        if prompt_kind == completion_kind == "list":
            _only(train_on, ("assistant", "all"), "TRL's conversational prompt/completion learns the completion ('assistant') or 'all'")
            return Fields("conversational", prompt_field=prompt_field, completion_field=completion_field, train_on=train_on or "assistant")
        for name, column in (("prompt_field", prompt_field), ("completion_field", completion_field)):
            _require_kind(kinds, column, "str", name, "strings, or message lists in both prompt and completion (TRL's conversational form)")
        _only(train_on, ("assistant", "all"), "string prompt/completion learns the completion ('assistant') or 'all'")
        return Fields("prompt_completion", prompt_field=prompt_field, completion_field=completion_field, train_on=train_on or "assistant")
    if kinds[text_field] == "list":
        raise ConfigError(f"text_field={text_field!r} holds list values, not strings: training on them would train on their Python repr.",
                          hint=f"a column of conversations (lists of {{role, content}}) is read by messages_field: {text_field}.")
    _require_kind(kinds, text_field, "str", "text_field", "strings")
    _only(train_on, ("all",), "plain text learns every token ('all')")
    return Fields("text", text_field=text_field, train_on="all")


def _require_kind(kinds: dict[str, str], column: str, kind: str, option: str, accepted: str) -> None:
    if kinds[column] != kind:
        hint = (f"a column of conversations is read by messages_field: {column}." if kinds[column] == "list"
                else "convert the column, or name another one.")
        raise ConfigError(f"{option}={column!r} holds {kinds[column]} values; {option} reads {accepted}.", hint=hint)


def _only(train_on: str | None, allowed: tuple[str, ...], why: str) -> None:
    if train_on is not None and train_on not in allowed:
        raise ConfigError(f"train_on={train_on!r} does not apply to this data: {why}.", accepted=list(allowed))


__all__ = ["Fields", "resolve_fields"]
