"""LanguageModelingDataModule on conversations: found, rendered, masked, packed, counted, and refused
before launch, on a tokenizer trained in the test; Lightning's standard flow on its own."""

from __future__ import annotations

import json

import pytest
import torch

from flashdist import ConfigError
from flashdist.data import LanguageModelingDataModule
from flashdist.text import CausalLM
from tests.data.chat_fixtures import CHATML, CONVERSATIONS, chat_tokenizer
from tests.text.lm_fixtures import save_tiny_llama


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    chat_tokenizer(root / "tok")
    chat_tokenizer(root / "plain-tok", template=None)
    return root


def _by_hand(data):
    """Lightning's standard flow without a Trainer: what a user does to look at a batch."""
    data.prepare_data()
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def test_a_messages_column_is_found_rendered_and_only_assistant_turns_learned(chat_dir, tmp_path):
    rows = [{"messages": c} for c in CONVERSATIONS] * 4  # 16 conversations, 4 with no assistant turn
    data = LanguageModelingDataModule(train_files=_jsonl(tmp_path / "c.jsonl", rows), tokenizer=str(chat_dir / "tok"),
                                      seq_length=16, batch_size=2, cache_dir=str(tmp_path / "cache"))
    assert (data.fields.form, data.messages_field, data.train_on) == ("messages", "messages", "assistant")
    batch = _by_hand(data)
    assert sorted(batch) == ["input_ids", "labels", "position_ids"] and batch["input_ids"].shape == (2, 16)
    tok = chat_tokenizer(tmp_path / "again")
    stream, learned = [], []
    for c in [c for c in CONVERSATIONS if any(m["role"] == "assistant" for m in c)] * 4:
        stream += tok.apply_chat_template(c, tokenize=True, return_dict=False)
    rows_out = data.train_set.rows
    assert [t for row in rows_out["input_ids"] for t in row.tolist()] == stream[:len(rows_out) * 16]
    for row in rows_out:  # a learned token is an assistant word or <|im_end|>, never a header, system or user word
        learned += [tok.convert_ids_to_tokens(int(t)) for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert set(learned) <= {"the", "cow", "says", "moo", "two", "three", "four", "APPLE", "RIVER", "<|im_end|>"}
    assert {"moo", "RIVER", "<|im_end|>"} <= set(learned)
    stats = data.stats["train"]
    assert (stats["documents"], stats["dropped_nothing_learned"], stats["rows"]) == (16, 4, len(rows_out))
    assert stats["learned_tokens"] == len(learned) == sum(int((r["labels"] != -100).sum()) for r in rows_out)
    assert data.describe() == [("train data", f"16 documents → {len(rows_out)} rows, {len(learned)} learned tokens; "
                                              "4 dropped (nothing learned)")]


def test_padded_conversations_are_cut_on_the_right_and_counted(chat_dir, tmp_path):
    rows = [{"messages": CONVERSATIONS[2]}, {"messages": CONVERSATIONS[0]}]  # 24 and 15 tokens
    data = LanguageModelingDataModule(train_files=_jsonl(tmp_path / "c.jsonl", rows), tokenizer=str(chat_dir / "tok"), seq_length=16,
                                      packing=False, batch_size=1, train_on="last_assistant", cache_dir=str(tmp_path / "cache"))
    batch = _by_hand(data)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    # The multi-turn one loses its last turn (tokens 21-23) to the cut: under last_assistant nothing is left.
    assert data.stats["train"] == {"documents": 2, "dropped_nothing_learned": 0, "truncated": 1, "dropped_cut_off": 1, "rows": 1,
                                   "learned_tokens": 5}  # 'the cow says moo <|im_end|>'
    assert batch["attention_mask"].sum() == 15 and int((batch["labels"] != -100).sum()) == 5


def test_trl_conversational_prompt_completion(chat_dir, tmp_path):
    rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in CONVERSATIONS[:3]]
    data = LanguageModelingDataModule(train_files=_jsonl(tmp_path / "pc.jsonl", rows), tokenizer=str(chat_dir / "tok"),
                                      prompt_field="prompt", completion_field="completion", seq_length=12, packing=False,
                                      batch_size=1, cache_dir=str(tmp_path / "cache"))
    batch = _by_hand(data)
    tok = chat_tokenizer(tmp_path / "again")
    first = tok.apply_chat_template(CONVERSATIONS[0], tokenize=True, return_dict=False)
    assert batch["input_ids"][0].tolist() == first[:12]
    assert tok.convert_ids_to_tokens([int(t) for t, l in zip(batch["input_ids"][0], batch["labels"][0]) if l != -100]) == [
        "the", "cow"]  # 'the cow says moo <|im_end|>' cut at 12 tokens
    assert data.stats["train"]["dropped_cut_off"] == 2  # the other two prompts are longer than 12 tokens


def test_a_plain_lightning_trainer_fits_on_it(chat_dir, tmp_path):
    import lightning
    import torch
    from transformers import AutoModelForCausalLM

    tok = chat_tokenizer(tmp_path / "model")
    save_tiny_llama(tmp_path / "model", vocab_size=len(tok))

    class Plain(lightning.LightningModule):  # a user's own module: no flashdist Task
        def __init__(self):
            super().__init__()
            self.model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
            self.seen: list[set[str]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append(set(batch))
            return self.model(**batch, use_cache=False).loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = LanguageModelingDataModule(train_files=_jsonl(tmp_path / "c.jsonl", [{"messages": CONVERSATIONS[2]}] * 8),
                                      tokenizer=str(tmp_path / "model"), seq_length=16, batch_size=2)
    module = Plain()
    trainer = lightning.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=2, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2 and module.seen == [{"input_ids", "labels", "position_ids"}] * 2
    assert (tmp_path / "data_cache").is_dir()  # the Trainer's default_root_dir


# ---- refusals before launch ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "kwargs", "match"),
    [
        pytest.param([{"messages": CONVERSATIONS[0]}], {"text_field": "messages"},
                     r"text_field='messages' holds list values, not strings.*HINT: .*messages_field: messages", id="list-as-text"),
        pytest.param([{"p": CONVERSATIONS[0][:1], "c": "moo"}], {"prompt_field": "p", "completion_field": "c"},
                     r"prompt_field='p' holds list values; prompt_field reads strings, or message lists in both", id="mixed-pair"),
        pytest.param([{"text": 3}], {}, r"text_field='text' holds int values", id="number-as-text"),
        pytest.param([{"m": "hello"}], {"messages_field": "m"}, r"messages_field='m' holds str values", id="string-as-messages"),
        pytest.param([{"messages": CONVERSATIONS[0]}], {"train_on": "assistants"}, r"train_on='assistants' is not a known choice",
                     id="bad-train-on"),
        pytest.param([{"text": "x"}], {"train_on": "assistant"}, r"train_on='assistant' does not apply to this data: plain text",
                     id="train-on-for-text"),
        pytest.param([{"text": "x"}], {"chat_template": CHATML}, r"chat_template was given but the data is 'text'", id="template-for-text"),
        pytest.param([{"messages": CONVERSATIONS[0], "text": "x"}], {"messages_field": "messages", "text_field": "text"},
                     r"text_field and messages_field were both given", id="two-forms"),
    ],
)
def test_refused_at_construction(tmp_path, rows, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LanguageModelingDataModule(train_files=_jsonl(tmp_path / "d.jsonl", rows), seq_length=8, **kwargs)


def test_a_validation_file_of_another_layout_is_refused(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"messages": CONVERSATIONS[0]}])
    val = _jsonl(tmp_path / "val.jsonl", [{"messages": "user: hi"}])
    with pytest.raises(ConfigError, match=r"column 'messages' holds str values in .*val.jsonl' but list values in .*train.jsonl'"):
        LanguageModelingDataModule(train_files=train, val_files=val, seq_length=8)


@pytest.mark.parametrize(
    ("rows", "tokenizer", "match"),
    [
        pytest.param([{"messages": CONVERSATIONS[0]}], "plain-tok", r"has no chat template.*HINT: pass data.init_args.chat_template",
                     id="no-chat-template"),
        pytest.param([{"messages": CONVERSATIONS[0]}, {"messages": [{"role": "robot", "content": "x"}]}], "tok",
                     r"row 1 of column 'messages', message 0 has the unknown role 'robot'", id="unknown-role"),
        pytest.param([{"messages": CONVERSATIONS[0]}, {"messages": "oops"}], "tok", r"row 1 of column 'messages' holds str 'oops'",
                     id="bad-row"),
        pytest.param([{"messages": CONVERSATIONS[3]}] * 3, "tok", r"has no learned token: every one of its 3 documents", id="nothing-learned"),
        pytest.param([{"text": "a b"}, {"text": None}], "tok", r"row 1 of column 'text' holds NoneType None, not a string", id="null-text"),
    ],
)
def test_refused_before_launch(chat_dir, tmp_path, rows, tokenizer, match):
    data = LanguageModelingDataModule(train_files=_jsonl(tmp_path / "d.jsonl", rows), tokenizer=str(chat_dir / tokenizer), seq_length=8,
                                      packing=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=match):
        data.prepare_data()


def test_a_bad_row_is_named_by_its_place_in_the_file_after_the_val_fraction_shuffle(chat_dir, tmp_path):
    rows = [{"messages": CONVERSATIONS[0]}] * 30 + [{"messages": [{"role": "robot", "content": "x"}]}] + [{"messages": CONVERSATIONS[1]}] * 9
    data = LanguageModelingDataModule(train_files=_jsonl(tmp_path / "d.jsonl", rows), tokenizer=str(chat_dir / "tok"), seq_length=32,
                                      packing=False, val_fraction=0.5, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"row 30 of column 'messages', message 0 has the unknown role 'robot'"):
        data.prepare_data()


def test_a_model_that_lets_packed_documents_see_each_other_is_refused_before_launch(chat_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    class AllOnesMask(LlamaForCausalLM):  # a model that always builds its own padding mask
        def forward(self, input_ids=None, **kwargs):
            return super().forward(input_ids=input_ids, **{**kwargs, "attention_mask": torch.ones_like(input_ids)})

    class Task:  # what the data module reads of a model: its Hugging Face network
        model = AllOnesMask(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))

    data = LanguageModelingDataModule(train_files=_jsonl(tmp_path / "d.jsonl", [{"messages": CONVERSATIONS[0]}]),
                                      tokenizer=str(chat_dir / "tok"), seq_length=8)
    with pytest.raises(ConfigError, match=r"packing=True needs a model that keeps packed documents apart; .*AllOnesMask.*HINT: .*packing: false"):
        data.bind_model(Task())
    LanguageModelingDataModule(train_files=_jsonl(tmp_path / "d.jsonl", [{"messages": CONVERSATIONS[0]}]),
                               tokenizer=str(chat_dir / "tok"), seq_length=8, packing=False).bind_model(Task())  # padded: no question
