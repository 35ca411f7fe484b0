"""A real multi-process CausalLM fine-tune, run as its own process (Lightning or torchrun starts the ranks).

``python tests/scripts/fit_lm.py '<json config>'``; keys: root, model_dir, data_file, strategy,
lora (dict or null), devices, batch_size, seq_length, accumulate_grad_batches, max_tokens,
warmup (a duration), checkpoint (bool: save last.ckpt at the end).
Writes what a fit writes (summary.json, lr.csv, hf_model/) and, on rank 0, lm_extra.json plus
the trained model's logits on a fixed input (logits.pt), computed by every rank together (a
sharded model's forward is a collective).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import seed_everything

import flashdist
from flashdist.data import LanguageModelingDataModule
from flashdist.text import CausalLM

PROBE_IDS = [[4, 9, 5, 7, 11, 6, 8, 10, 12, 5, 4, 13]]


def main(config: dict) -> None:
    seed_everything(0, workers=True)
    seq_length = config.get("seq_length", 32)
    lm = CausalLM(backbone=config["model_dir"], lora=config.get("lora"), learning_rate=5e-3, weight_decay=0.01,
                  lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": config["warmup"]}))
    data = LanguageModelingDataModule(train_files=config["data_file"], prompt_field="prompt", completion_field="completion",
                                      seq_length=seq_length, batch_size=config.get("batch_size", 2))
    callbacks = []
    if config.get("checkpoint"):
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=f"{config['root']}/checkpoints", save_last=True, save_top_k=0))
    trainer = flashdist.Trainer(
        default_root_dir=config["root"], accelerator="cpu", devices=config.get("devices", 2), strategy=config["strategy"],
        accumulate_grad_batches=config.get("accumulate_grad_batches", 1), max_tokens=config["max_tokens"],
        logger=False, enable_checkpointing=bool(callbacks), callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=2,
    )
    trainer.fit(lm, datamodule=data)
    model = trainer.lightning_module.model
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(PROBE_IDS)).logits
    if trainer.is_global_zero:
        torch.save(logits, Path(config["root"]) / "logits.pt")
        from torch.distributed.fsdp import FSDPModule

        extra = {"strategy_class": type(trainer.strategy).__name__,
                 "sharded_modules": [n for n, m in trainer.lightning_module.named_modules() if isinstance(m, FSDPModule)],
                 "trainable": lm.trainable_parameters()}
        Path(config["root"], "lm_extra.json").write_text(json.dumps(extra))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
