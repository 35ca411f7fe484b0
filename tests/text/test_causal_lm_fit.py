"""One real 1-process fine-tune from a save_pretrained directory: the loss falls, the export reloads.

A tiny Llama and a WordLevel tokenizer trained here are saved with save_pretrained, then
CausalLM fine-tunes that directory on prompt/completion pairs. Checked from the user's side:
val_loss after training is below val_loss before it, summary.json's token count is the
plan's arithmetic, AutoModelForCausalLM.from_pretrained(hf_model/) gives the trained
model's logits, and `flashdist export --ckpt` writes the same model from the checkpoint.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import flashdist
from flashdist.data import LanguageModelingDataModule
from flashdist.text import CausalLM
from tests.text.lm_fixtures import SEQ_LENGTH, local_backbone


def _trainer(root, **kwargs):
    return flashdist.Trainer(default_root_dir=str(root), accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, **kwargs)


def test_fine_tune_lowers_val_loss_and_the_export_reloads_with_the_same_logits(tmp_path):
    model_dir, data_file = local_backbone(tmp_path)
    torch.manual_seed(0)
    lm = CausalLM(backbone=str(model_dir), learning_rate=1e-2, weight_decay=0.01,
                  lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": "1024tok"}))
    data = LanguageModelingDataModule(train_files=str(data_file), prompt_field="prompt", completion_field="completion",
                                      seq_length=SEQ_LENGTH, batch_size=8, val_fraction=0.2)
    root = tmp_path / "run"
    before = _trainer(root).validate(lm, datamodule=data, verbose=False)[0]["val_loss"]

    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=str(root / "checkpoints"), save_last=True)
    trainer = _trainer(root, max_tokens=40 * 8 * SEQ_LENGTH, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(lm, datamodule=data)
    after = trainer.validate(lm, datamodule=data, verbose=False)[0]["val_loss"]
    assert after < before - 0.5, (before, after)
    # trainer.test on the same rows says the same, as test_; trainer.predict gives each row's next-token logits
    tested = trainer.test(lm, dataloaders=data.val_dataloader(), verbose=False)[0]
    assert tested == pytest.approx({"test_loss": after, "test_perplexity": math.exp(after)})
    logits = trainer.predict(lm, dataloaders=data.val_dataloader())
    rows = sum(len(batch["input_ids"]) for batch in data.val_dataloader())
    assert sum(len(x) for x in logits) == rows and logits[0].shape[1:] == (SEQ_LENGTH, lm.model.config.vocab_size)

    summary = json.loads((root / "summary.json").read_text())
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 40  # max_tokens / (8 × 32) steps
    assert summary["tokens_seen"] == 40 * 8 * SEQ_LENGTH
    assert summary["planned_warmup_steps"] == 4  # ceil(1024 / 256)
    assert summary["mfu"] is None and summary["tokens_per_second"] > 0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = root / "hf_model"
    reloaded = AutoModelForCausalLM.from_pretrained(exported).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported)
    ids = torch.tensor([tokenizer("What does the cow say ? The cow says moo .")["input_ids"]])
    lm.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, lm.model(input_ids=ids).logits, atol=1e-5, rtol=0)

    from flashdist.cli.export import run as export_run

    out = tmp_path / "from_ckpt"
    assert export_run(["--ckpt", str(root / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, reloaded(ids).logits, atol=1e-5, rtol=0)
