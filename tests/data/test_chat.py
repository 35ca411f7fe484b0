"""Which tokens of a conversation are learned, against the chat template's own renderings, on a
tokenizer trained in the test and two ChatML-like templates (without and with generation markers)."""

from __future__ import annotations

import copy

import pytest

from flashdist import ConfigError
from flashdist.data.chat import check_conversation, encode_conversation, encode_prompt_completion, read_chat_template
from tests.data.chat_fixtures import CHATML, CHATML_MARKED, CONVERSATIONS, IM_END, IM_START, SYSTEM, chat_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return chat_tokenizer(tmp_path_factory.mktemp("chat-tokenizer"))


def _expected(tok, messages, learned_turns):
    """ChatML by hand: per message <|im_start|> role content <|im_end|> (the newlines are whitespace to this
    tokenizer); a learned assistant turn is its content and its <|im_end|>, not the 'assistant' header."""
    start, end = tok.convert_tokens_to_ids([IM_START, IM_END])
    ids, labels = [], []
    for turn, message in enumerate(messages):
        head = [start, *tok(message["role"], add_special_tokens=False)["input_ids"]]
        body = [*tok(message["content"], add_special_tokens=False)["input_ids"], end]
        ids += head + body
        labels += [-100] * len(head) + (body if turn in learned_turns else [-100] * len(body))
    return ids, labels


# A greeting before any prompt: its reply is learned, the generation prompt in front of it is not.
OPENS_WITH_ASSISTANT = [{"role": "assistant", "content": "the cow says moo"}, {"role": "user", "content": "shout apple"},
                        {"role": "assistant", "content": "APPLE"}]
# Llama 3's habit: a BOS and a system block (here a default one) at the top of every rendering.
HEADED = ("<s>{% if messages[0]['role'] != 'system' %}<|im_start|>system\nyou are terse<|im_end|>\n{% endif %}" + CHATML)

# (conversation, train_on, the turns learned)
CASES = [
    pytest.param(CONVERSATIONS[0], "assistant", {1}, id="user-assistant"),
    pytest.param(CONVERSATIONS[1], "assistant", {2}, id="system-user-assistant"),
    pytest.param(CONVERSATIONS[2], "assistant", {2, 4}, id="multi-turn-every-assistant"),
    pytest.param(CONVERSATIONS[2], "last_assistant", {4}, id="multi-turn-last-assistant"),
    pytest.param(CONVERSATIONS[3], "assistant", set(), id="no-assistant-nothing-learned"),
    pytest.param(OPENS_WITH_ASSISTANT, "assistant", {0, 2}, id="opens-with-assistant"),
]


@pytest.mark.parametrize(("messages", "train_on", "turns"), CASES)
@pytest.mark.parametrize("template", [CHATML, CHATML_MARKED], ids=["no-markers", "generation-markers"])
def test_learned_tokens_are_the_assistant_turns_of_the_templates_rendering(tok, messages, train_on, turns, template):
    ids, labels = encode_conversation(tok, template, messages, train_on)
    assert ids == tok.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=False)
    assert (ids, labels) == _expected(tok, messages, turns)


@pytest.mark.parametrize("messages", [c for c in CONVERSATIONS if any(m["role"] == "assistant" for m in c)])
def test_without_markers_the_mask_is_what_the_markers_give(tok, messages):
    marked = tok.apply_chat_template(messages, chat_template=CHATML_MARKED, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
    _, labels = encode_conversation(tok, CHATML, messages, "assistant")
    assert [int(label != -100) for label in labels] == marked["assistant_masks"]


@pytest.mark.parametrize("messages", [CONVERSATIONS[0], OPENS_WITH_ASSISTANT], ids=["user-first", "assistant-first"])
def test_a_header_in_every_rendering_is_never_learned(tok, messages):
    ids, labels = encode_conversation(tok, HEADED, messages, "assistant")
    header = [tok.convert_tokens_to_ids("<s>"), *_expected(tok, [SYSTEM], set())[0]]
    expected_ids, expected_labels = _expected(tok, messages, {i for i, m in enumerate(messages) if m["role"] == "assistant"})
    assert (ids, labels) == (header + expected_ids, [-100] * len(header) + expected_labels)


def test_train_on_all_learns_every_token(tok):
    ids, labels = encode_conversation(tok, CHATML, CONVERSATIONS[2], "all")
    assert labels == ids == tok.apply_chat_template(CONVERSATIONS[2], chat_template=CHATML, tokenize=True, return_dict=False)


def test_trl_conversational_prompt_completion_learns_the_completion(tok):
    prompt, completion = CONVERSATIONS[1][:2], CONVERSATIONS[1][2:]
    ids, labels = encode_prompt_completion(tok, CHATML, prompt, completion, "assistant", "row 0")
    assert (ids, labels) == _expected(tok, CONVERSATIONS[1], {2})


def test_the_users_messages_are_not_mutated(tok):
    messages = copy.deepcopy(CONVERSATIONS[2])
    encode_conversation(tok, CHATML, messages, "assistant")
    encode_prompt_completion(tok, CHATML, messages[:2], messages[2:3], "assistant", "row 0")
    assert messages == CONVERSATIONS[2]


def test_a_template_error_is_a_config_error_naming_the_roles(tok):
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('the first message must be the user') }}{% endif %}"
    with pytest.raises(ConfigError, match=r"refused 3 message\(s\) \(roles \['system', 'user', 'assistant'\]\): the first message"):
        encode_conversation(tok, strict, CONVERSATIONS[1], "assistant")


def test_a_template_that_rewrites_earlier_turns_is_refused(tok):
    # Renders only the last two messages: not prefix-stable, so a turn's tokens are not defined.
    window = "{% for m in messages[-2:] %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
    with pytest.raises(ConfigError, match=r"not a token prefix .* HINT: use a prefix-stable template"):
        encode_conversation(tok, window, CONVERSATIONS[2], "assistant")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("hello", r"row 3 of column 'messages' holds str 'hello', not a non-empty list"),
        ([], r"row 3 .* holds list \[\], not a non-empty list"),
        ([{"from": "human", "value": "hi"}], r"message 0 holds dict .*'from'.* not a \{'role', 'content'\} message.*ShareGPT"),
        ([{"role": "narrator", "content": "hi"}], r"unknown role 'narrator'.*Accepted: 'system', 'user', 'assistant'"),
        ([SYSTEM, {"role": "user", "content": 7}], r"message 1 has content of type int"),
    ],
)
def test_a_bad_conversation_row_is_named(value, match):
    with pytest.raises(ConfigError, match=match):
        check_conversation(value, 3, "messages")


def test_chat_template_is_a_jinja_string_or_a_file(tmp_path):
    (tmp_path / "t.jinja").write_text(CHATML)
    assert read_chat_template(str(tmp_path / "t.jinja")) == CHATML == read_chat_template(CHATML)
    with pytest.raises(ConfigError, match=r"neither a Jinja template .* nor an existing file"):
        read_chat_template(str(tmp_path / "missing.jinja"))
