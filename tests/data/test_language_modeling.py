"""LanguageModelingDataModule on real `datasets` and real tokenizers: formats, masking, packing,
the cache, and every refusal before launch (``before_launch`` is what ``flashdist.Trainer.fit``
calls in the launching process)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from flashdist import ConfigError
from flashdist.data import LanguageModelingDataModule
from flashdist.data.byte_tokenizer import byte_level_tokenizer
from flashdist.data.lm_tokenize import read_tokenize_log
from flashdist.text import CausalLM
from tests.text.lm_fixtures import save_tiny_llama, train_word_tokenizer

DOCS = [{"prompt": "ab", "completion": "cd"}, {"prompt": "xyz", "completion": "w"}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ready(data, root):
    """What a fit does: bind to a model, tokenize before launch, read the cache (no Trainer needed)."""
    lm = CausalLM(backbone="tiny-llama")
    data.before_launch(lm, root)
    data.cache_dir = data.cache_dir or (root / "data_cache")
    data.setup("fit")
    return data


def _byte_ids(text):
    return byte_level_tokenizer()(text)["input_ids"]


def test_prompt_tokens_and_padding_are_masked_and_each_document_ends_with_eos(tmp_path):
    data = _ready(LanguageModelingDataModule(train_files=str(_jsonl(tmp_path / "d.jsonl", DOCS)), prompt_field="prompt",
                                             completion_field="completion", seq_length=8, packing=False, batch_size=2), tmp_path)
    eos = byte_level_tokenizer().eos_token_id
    first = data.train_set[0]
    assert first["input_ids"].tolist() == _byte_ids("ab") + _byte_ids("cd") + [eos] + [0, 0, 0]
    assert first["labels"].tolist() == [-100, -100] + _byte_ids("cd") + [eos] + [-100] * 3
    assert first["attention_mask"].tolist() == [1] * 5 + [0] * 3
    assert data.train_set.tokens_per_sample is None  # padded: no fixed token count per sample


def test_packing_concatenates_documents_into_full_blocks_with_positions_restarting_per_document(tmp_path):
    rows = [{"text": "hello"}, {"text": "world!"}, {"text": "abc"}]  # 6 + 7 + 4 = 17 tokens with EOS
    data = _ready(LanguageModelingDataModule(train_files=str(_jsonl(tmp_path / "t.jsonl", rows)), seq_length=8, batch_size=1), tmp_path)
    eos = byte_level_tokenizer().eos_token_id
    stream = _byte_ids("hello") + [eos] + _byte_ids("world!") + [eos] + _byte_ids("abc") + [eos]
    assert len(data.train_set) == 2  # 17 // 8
    assert [data.train_set[i]["input_ids"].tolist() for i in range(2)] == [stream[:8], stream[8:16]]
    # Positions restart at each document and at a row start (the cut "world!" goes on as a new piece).
    assert [data.train_set[i]["position_ids"].tolist() for i in range(2)] == [[0, 1, 2, 3, 4, 5, 0, 1], [0, 1, 2, 3, 4, 0, 1, 2]]
    # Plain text learns every token but the first of each piece (it would be predicted from another document).
    assert data.train_set[0]["labels"].tolist() == [-100] + stream[1:6] + [-100] + stream[7:8]
    assert data.train_set[1]["labels"].tolist() == [-100] + stream[9:13] + [-100] + stream[14:16]
    assert "attention_mask" not in data.train_set[0]
    assert data.train_set.tokens_per_sample == 8
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape == (1, 8) and data.train_dataloader().drop_last


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet", "txt", "disk"])
def test_every_file_format_reads_the_same_documents(tmp_path, suffix):
    texts = ["one two", "three four five", "six"]
    path = tmp_path / f"docs.{suffix}"
    if suffix in ("jsonl", "json"):
        _jsonl(path, [{"text": t} for t in texts])
    elif suffix == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text"])
            writer.writerows([[t] for t in texts])
    elif suffix == "txt":
        path.write_text("\n".join(texts) + "\n")
    else:
        import datasets

        table = datasets.Dataset.from_dict({"text": texts})
        table.to_parquet(str(path)) if suffix == "parquet" else table.save_to_disk(str(path))
    data = _ready(LanguageModelingDataModule(train_files=str(path), seq_length=4, batch_size=1), tmp_path)
    eos = byte_level_tokenizer().eos_token_id
    stream = [token for t in texts for token in _byte_ids(t) + [eos]]
    assert [data.train_set[i]["input_ids"].tolist() for i in range(len(data.train_set))] == [
        stream[i * 4:(i + 1) * 4] for i in range(len(stream) // 4)]


def test_tokenized_once_then_read_from_the_cache_until_an_input_changes(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "some words here"}] * 20)
    kwargs = dict(train_files=str(path), seq_length=8, batch_size=2, cache_dir=str(tmp_path / "cache"))
    _ready(LanguageModelingDataModule(**kwargs), tmp_path)
    _ready(LanguageModelingDataModule(**kwargs), tmp_path)  # a second run: same inputs
    assert len(read_tokenize_log(tmp_path / "cache")) == 1
    _ready(LanguageModelingDataModule(**{**kwargs, "seq_length": 16}), tmp_path)
    log = read_tokenize_log(tmp_path / "cache")
    assert len(log) == 2 and log[0]["cache"] != log[1]["cache"] and {r["rank"] for r in log} == {0}


# ---- refusals, before any process starts --------------------------------------------------------
def test_a_missing_file_names_what_the_directory_holds(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"trian\.jsonl.*does not exist.*train\.jsonl"):
        LanguageModelingDataModule(train_files=str(tmp_path / "trian.jsonl"), seq_length=8)


def test_a_field_not_in_the_dataset_lists_its_columns(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", DOCS)
    with pytest.raises(ConfigError, match=r"prompt_field='question'.*Accepted: 'prompt', 'completion'"):
        LanguageModelingDataModule(train_files=str(path), prompt_field="question", completion_field="completion", seq_length=8)
    other = _jsonl(tmp_path / "qa.jsonl", [{"question": "ab", "answer": "cd"}])  # prompt/completion are found by name
    with pytest.raises(ConfigError, match=r"text_field='text'.*Accepted: 'question', 'answer'"):
        LanguageModelingDataModule(train_files=str(other), seq_length=8)


def test_a_tokenizer_directory_that_is_missing_or_not_a_tokenizer(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    with pytest.raises(ConfigError, match="is not a directory"):
        LanguageModelingDataModule(train_files=str(path), tokenizer=str(tmp_path / "nope"), seq_length=8)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    with pytest.raises(ConfigError, match=r"not a tokenizer directory \(it holds \['notes.txt'\]\)"):
        LanguageModelingDataModule(train_files=str(path), tokenizer=str(tmp_path / "junk"), seq_length=8)


def test_seq_length_above_the_models_positions_and_a_vocabulary_above_its_embeddings(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a b c d e f"}] * 4)
    with pytest.raises(ConfigError, match=r"seq_length=1024 is above the model's 512 positions"):
        LanguageModelingDataModule(train_files=str(path), seq_length=1024).before_launch(CausalLM("tiny-llama"), tmp_path)
    big = train_word_tokenizer([f"w{i}" for i in range(600)], tmp_path / "big-tokenizer")
    with pytest.raises(ConfigError, match=r"has 604 tokens but the model has 512 embedding rows"):
        LanguageModelingDataModule(train_files=str(path), tokenizer=str(big), seq_length=8).before_launch(CausalLM("tiny-llama"), tmp_path)


def test_a_backbone_directory_without_tokenizer_needs_data_tokenizer(tmp_path):
    model_dir = save_tiny_llama(tmp_path / "bare", vocab_size=300)
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    with pytest.raises(ConfigError, match="has no tokenizer files"):
        LanguageModelingDataModule(train_files=str(path), seq_length=8).before_launch(CausalLM(str(model_dir)), tmp_path)


def test_data_without_one_full_sequence_is_refused_before_launch(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "tiny"}])
    with pytest.raises(ConfigError, match=r"yields no sequence of 64 tokens.*HINT"):
        LanguageModelingDataModule(train_files=str(path), seq_length=64).before_launch(CausalLM("tiny-llama"), tmp_path)


def test_the_users_lists_are_not_mutated(tmp_path):
    files = [str(_jsonl(tmp_path / "d.jsonl", [{"text": "x"}]))]
    lora = {"r": 2, "target_modules": ["q_proj"]}
    LanguageModelingDataModule(train_files=files, seq_length=8)
    CausalLM("tiny-llama", lora=lora)
    assert files == [str(tmp_path / "d.jsonl")] and lora == {"r": 2, "target_modules": ["q_proj"]}


def test_a_token_duration_or_budget_without_packing_is_refused_before_launch(tmp_path):
    import flashdist

    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a b c d e f g h"}] * 4)
    data = LanguageModelingDataModule(train_files=str(path), seq_length=8, packing=False)
    lm = CausalLM("tiny-llama", lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": "4096tok"}))
    with pytest.raises(ConfigError, match=r"num_warmup_steps='4096tok' is a token count, but data.packing is false"):
        data.before_launch(lm, tmp_path)
    trainer = flashdist.Trainer(default_root_dir=str(tmp_path), accelerator="cpu", devices=1, max_tokens=4096, logger=False)
    with pytest.raises(ConfigError, match=r"max_tokens=4096 is a token budget, but .* \(packing is off\)"):
        trainer.fit(CausalLM("tiny-llama"), datamodule=data)


def test_the_step_plan_is_known_before_launch_once_before_launch_tokenized(tmp_path):
    import flashdist
    from flashdist.runtime.planning import plan_before_launch

    rows = [{"text": "hello world " * 8}] * 6  # 97 tokens each with EOS: 582 // 8 = 72 packed sequences
    data = LanguageModelingDataModule(train_files=str(_jsonl(tmp_path / "t.jsonl", rows)), seq_length=8, batch_size=4)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False)
    assert plan_before_launch(trainer, data) == (None, None)  # nothing tokenized yet
    data.before_launch(CausalLM(backbone="tiny-llama"), tmp_path)
    plan, batch_size = plan_before_launch(trainer, data)
    assert len(data.train_set) == 72 and batch_size == 4
    assert (plan.micro_batches_per_epoch_per_rank, plan.planned_total_steps, plan.tokens_per_step) == (9, 9, 2 * 4 * 8)
