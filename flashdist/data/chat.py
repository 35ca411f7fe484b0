"""Conversations → tokens and which of them are learned, for any chat template.

A conversation is a list of ``{"role", "content"}`` messages (TRL's ``messages`` format). Its
tokens are exactly ``tokenizer.apply_chat_template(messages, tokenize=True)``. Which tokens
are learned does not rely on ``{% generation %}`` markers (most shipped templates have none):
for assistant turn ``i`` the template renders the conversation up to turn ``i`` with the
generation prompt (``messages[:i]``, ``add_generation_prompt=True``) and through turn ``i``
(``messages[:i + 1]``); the learned span is the tokens between the two, so it starts after the
generation prompt and ends with that turn's end-of-turn token. This needs the template to be
*prefix-stable*: each rendering a token prefix of the next and of the whole. A template that
is not (one that rewrites earlier turns, e.g. drops past reasoning) is refused with the turn.
A conversation that opens with an assistant turn has no rendering before it: its reply starts
after the generation prompt, found in its rendering (not at token 0, which would learn a BOS or
the system header some templates always write).

Everything here is a pure function of (tokenizer, template, messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from flashdist.errors import ConfigError

TrainOn = Literal["assistant", "last_assistant", "all"]
TRAIN_ON: tuple[str, ...] = ("assistant", "last_assistant", "all")
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool", "developer")
MESSAGE_COLUMNS: tuple[str, ...] = ("messages", "conversations")  # looked for, in this order, when no field is named
IGNORE = -100


def check_train_on(train_on: Any) -> str:
    if train_on not in TRAIN_ON:
        raise ConfigError(f"train_on={train_on!r} is not a known choice.", accepted=list(TRAIN_ON),
                          hint="'assistant' learns every assistant turn, 'last_assistant' the last one, 'all' every token.")
    return train_on


def read_chat_template(template: Any) -> str:
    """``chat_template=`` as a Jinja string: the string itself, or the contents of the file it names.

    Example:
        >>> read_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")[:6]
        '{% for'
    """
    if not isinstance(template, (str, Path)) or not str(template).strip():
        raise ConfigError(f"chat_template={template!r} must be a Jinja string or the path of a file holding one.")
    text = str(template)
    if "{{" in text or "{%" in text:
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"chat_template={text!r} is neither a Jinja template (no '{{{{' or '{{%') nor an existing file.",
                          hint="give the template text, or the path of a .jinja file.")
    return path.read_text(encoding="utf-8")


def check_conversation(value: Any, row: int, column: str) -> list[dict[str, Any]]:
    """``value`` as a list of messages, or a ConfigError naming the row and what it holds."""
    where = f"row {row} of column {column!r}"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where} holds {_shown(value)}, not a non-empty list of {{'role', 'content'}} messages.",
                          hint='each row: [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}].')
    for turn, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise ConfigError(f"{where}, message {turn} holds {_shown(message)}, not a {{'role', 'content'}} message.",
                              hint="ShareGPT's {'from', 'value'} rows must be converted to {'role', 'content'} first.")
        if message["role"] not in ROLES:
            raise ConfigError(f"{where}, message {turn} has the unknown role {message['role']!r}.", accepted=list(ROLES),
                              hint="rename the role to one the chat template knows.")
        if not isinstance(message["content"], str):
            raise ConfigError(f"{where}, message {turn} has content of type {type(message['content']).__name__}, not a string.")
    return list(value)


def encode_conversation(tokenizer: Any, template: str | None, messages: Sequence[dict[str, Any]], train_on: str,
                        where: str = "a conversation") -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one conversation; ``labels`` is ``IGNORE`` where nothing is learned.

    Example:
        >>> ids, labels = encode_conversation(tok, None, [{"role": "user", "content": "hi"},
        ...                                              {"role": "assistant", "content": "hello"}], "assistant")  # doctest: +SKIP
    """
    ids = render(tokenizer, template, messages, add_generation_prompt=False)
    if train_on == "all":
        return ids, list(ids)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last_assistant":
        turns = turns[-1:]
    labels = [IGNORE] * len(ids)
    for turn in turns:
        start, end = assistant_span(tokenizer, template, messages, turn, ids, where)
        labels[start:end] = ids[start:end]
    return ids, labels


def encode_prompt_completion(tokenizer: Any, template: str | None, prompt: Sequence[dict[str, Any]],
                             completion: Sequence[dict[str, Any]], train_on: str, where: str) -> tuple[list[int], list[int]]:
    """TRL's conversational prompt/completion: the prompt rendered with the generation prompt, the completion learned."""
    ids = render(tokenizer, template, [*prompt, *completion], add_generation_prompt=False)
    if train_on == "all":
        return ids, list(ids)
    head = render(tokenizer, template, prompt, add_generation_prompt=True)
    _require_prefix(head, ids, f"{where}: the prompt rendered with the generation prompt")
    return ids, [IGNORE] * len(head) + ids[len(head):]


def assistant_span(tokenizer: Any, template: str | None, messages: Sequence[dict[str, Any]], turn: int,
                   whole: list[int], where: str) -> tuple[int, int]:
    """Token positions ``[start, end)`` of assistant turn ``turn`` inside ``whole`` (the full rendering)."""
    through = render(tokenizer, template, messages[:turn + 1], add_generation_prompt=False)
    _require_prefix(through, whole, f"{where}: the rendering through message {turn}")
    if turn == 0:
        return _opening_turn_start(tokenizer, template, through, where), len(through)
    before = render(tokenizer, template, messages[:turn], add_generation_prompt=True)
    _require_prefix(before, through, f"{where}: the rendering up to message {turn} (with the generation prompt)")
    return len(before), len(through)


def _opening_turn_start(tokenizer: Any, template: str | None, through: list[int], where: str) -> int:
    """Where the reply of a conversation that opens with an assistant turn starts: after the generation prompt.

    There is no earlier message to render (transformers refuses an empty conversation), and what
    precedes the reply is more than the generation prompt for templates that always write a
    header (a BOS, Llama 3's system block with its date, a default system prompt). So the
    generation prompt is read off a one-message probe (what ``add_generation_prompt`` appends)
    and found in the rendering of the opening turn; the reply starts after its first occurrence.
    """
    probe = [{"role": "user", "content": "x"}]
    closed = render(tokenizer, template, probe, add_generation_prompt=False)
    opened = render(tokenizer, template, probe, add_generation_prompt=True)
    prompt = opened[len(closed):] if opened[:len(closed)] == closed else []
    for start in range(len(through) - len(prompt) + 1) if prompt else ():
        if through[start:start + len(prompt)] == prompt:
            return start + len(prompt)
    raise ConfigError(
        f"{where} opens with an assistant turn, and the template's generation prompt ({len(prompt)} token(s)) is not found in "
        "its rendering, so where the reply starts (after the header the template writes first) is not known.",
        hint="start the conversation with a system or user message, or train_on: all.",
    )


def render(tokenizer: Any, template: str | None, messages: Sequence[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    # Copies: a template may not mutate what the user passed, and never sees a shared dict.
    from jinja2.exceptions import TemplateError

    copied = [dict(m) for m in messages]
    try:
        return list(tokenizer.apply_chat_template(copied, chat_template=template, tokenize=True, return_dict=False,
                                                  add_generation_prompt=add_generation_prompt))
    except TemplateError as error:
        raise ConfigError(f"the chat template refused {len(copied)} message(s) (roles {[m['role'] for m in copied]}): {error}",
                          hint="check the conversation's roles and order against what the template accepts.") from None


def _require_prefix(part: list[int], whole: list[int], what: str) -> None:
    if whole[:len(part)] != part:
        at = next((i for i, (a, b) in enumerate(zip(part, whole)) if a != b), min(len(part), len(whole)))
        raise ConfigError(
            f"{what} is not a token prefix of the longer rendering (they differ at token {at}): the chat template "
            "renders earlier turns differently once later turns follow, so which tokens each assistant turn adds is not defined.",
            hint="use a prefix-stable template (chat_template=), or train_on: all.",
        )


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '…' if len(text) > 80 else text}"


__all__ = ["MESSAGE_COLUMNS", "ROLES", "TRAIN_ON", "check_conversation", "check_train_on", "encode_conversation",
           "encode_prompt_completion", "read_chat_template", "render"]
