"""Real parts for the chat tests, made in the test: a WordLevel tokenizer trained with ``tokenizers``
whose ChatML markers are special tokens, and two ChatML-like templates, one without and one with
``{% generation %}`` markers."""

from __future__ import annotations

from pathlib import Path

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# ChatML as most shipped templates write it: no generation markers.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The same rendering, with the assistant's reply and end-of-turn inside {% generation %}.
CHATML_MARKED = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|im_end|>{% endgeneration %}\n"
    "{% else %}{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SYSTEM = {"role": "system", "content": "you are terse"}
CONVERSATIONS = [
    [{"role": "user", "content": "what does the cow say"}, {"role": "assistant", "content": "the cow says moo"}],
    [SYSTEM, {"role": "user", "content": "count from one"}, {"role": "assistant", "content": "two three four"}],
    [SYSTEM, {"role": "user", "content": "shout apple"}, {"role": "assistant", "content": "APPLE"},
     {"role": "user", "content": "shout river"}, {"role": "assistant", "content": "RIVER"}],
    [{"role": "user", "content": "nobody answers this"}],
]
WORDS = " ".join(m["content"] for c in CONVERSATIONS for m in c) + " system user assistant tool moo oink pig the says"


def chat_tokenizer(out_dir: Path, template: str | None = CHATML, words: str = WORDS) -> object:
    """A PreTrainedTokenizerFast (saved to ``out_dir``) with ChatML markers as atomic special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator([words], trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>", IM_START, IM_END]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def chat_backbone(root: Path, count: int = 80) -> tuple[Path, Path]:
    """(a tiny Llama directory whose tokenizer has the ChatML template, a messages JSONL) under ``root``:
    the conversations of configs/data/make_chats.py."""
    import json
    import runpy
    import sys

    from tests.text.lm_fixtures import save_tiny_llama

    scripts = str(Path(__file__).parents[2] / "configs" / "data")
    sys.path.insert(0, scripts)  # make_chats imports make_pairs as a sibling script
    try:
        rows = runpy.run_path(str(Path(scripts) / "make_chats.py"))["conversations"](count)
    finally:
        sys.path.remove(scripts)
    root.mkdir(parents=True, exist_ok=True)
    data = root / "chats.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    model_dir = root / "tiny-chat-llama"
    words = " ".join(m["content"] for row in rows for m in row["messages"]) + " system user assistant"
    tokenizer = chat_tokenizer(model_dir, words=words)
    save_tiny_llama(model_dir, vocab_size=len(tokenizer))
    return model_dir, data
