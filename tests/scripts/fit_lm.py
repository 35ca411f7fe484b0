"""Real multi-process CausalLM fine-tunes, run as their own processes (torchrun or Lightning starts the ranks).

``python tests/scripts/fit_lm.py '<json config>'``, or a JSON list of configs, fitted one after
the other in the same processes (``torchrun --nproc-per-node 2 tests/scripts/fit_lm.py '[...]'``:
the imports, the process start and the process group are paid once for the whole list, as
tests/scripts/fit_matrix.py does). Keys: root, model_dir, data_file, strategy, lora (dict or
null), devices, batch_size, seq_length, accumulate_grad_batches, max_tokens, warmup (a
duration), checkpoint (bool: save last.ckpt at the end), ckpt_path (e.g. "auto"),
data_fields (the data module's field options; default prompt_field/completion_field, e.g.
{"messages_field": "messages"} for conversations), activation_checkpointing (bool), val_check_interval, signal_at_step (rank 0 sends itself SIGUSR1 after that optimizer step: a real preemption, whose
exit 75 is recorded in exit-rank<R>.json instead of ending the list), cache_dir_per_rank (bool: each rank
reads and writes ``<root>/local-disk-rank<R>/cache``, as a node-local disk would give it, so
rank 1 cannot see the cache rank 0 built), sgd_lr (plain SGD at that LR, no weight decay and no
schedule, instead of AdamW with warmup: an update that is the gradient itself), packing (default true),
max_epochs (instead of max_tokens), cache_dir, log_every_n_steps (default 2), csv_logger (bool:
metrics.csv under <root>/csv).
Writes what a fit writes (summary.json, lr.csv, hf_model/) and, on rank 0, lm_extra.json plus
the trained model's logits on a fixed input (logits.pt), computed by every rank together (a
sharded model's forward is a collective).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, seed_everything

import flashdist
from flashdist.data import LanguageModelingDataModule
from flashdist.text import CausalLM

PROBE_IDS = [[4, 9, 5, 7, 11, 6, 8, 10, 12, 5, 4, 13]]


class SignalAtStep(Callback):
    """Rank 0 sends itself SIGUSR1 once optimizer step ``step`` is done (what SLURM or a user does)."""

    def __init__(self, step: int):
        self.step, self.sent = step, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step and trainer.is_global_zero and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGUSR1)


def main(config: dict) -> None:
    seed_everything(0, workers=True)
    seq_length = config.get("seq_length", 32)
    if config.get("sgd_lr"):
        optimization = dict(optimizer="sgd", learning_rate=config["sgd_lr"])
    else:
        optimization = dict(learning_rate=5e-3, weight_decay=0.01, lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": config["warmup"]}))
    lm = CausalLM(backbone=config["model_dir"], lora=config.get("lora"), activation_checkpointing=config.get("activation_checkpointing", False),
                  **optimization)
    cache_dir = f"{config['root']}/local-disk-rank{os.environ['RANK']}/cache" if config.get("cache_dir_per_rank") else config.get("cache_dir")
    fields = config.get("data_fields", {"prompt_field": "prompt", "completion_field": "completion"})
    data = LanguageModelingDataModule(train_files=config["data_file"], **fields, seq_length=seq_length, batch_size=config.get("batch_size", 2),
                                      cache_dir=cache_dir, packing=config.get("packing", True))
    callbacks = [SignalAtStep(config["signal_at_step"])] if config.get("signal_at_step") else []
    if config.get("checkpoint"):
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=f"{config['root']}/checkpoints", save_last=True, save_top_k=0))
    if config.get("csv_logger"):
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(config["root"], name="csv", version=0)
    else:
        logger = False
    duration = {"max_epochs": config["max_epochs"]} if "max_epochs" in config else {"max_tokens": config["max_tokens"]}
    trainer = flashdist.Trainer(
        default_root_dir=config["root"], accelerator="cpu", devices=config.get("devices", 2), strategy=config["strategy"],
        accumulate_grad_batches=config.get("accumulate_grad_batches", 1), **duration,
        logger=logger, enable_checkpointing=bool(config.get("checkpoint")), callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=config.get("log_every_n_steps", 2), val_check_interval=config.get("val_check_interval"),
    )
    try:
        trainer.fit(lm, datamodule=data, ckpt_path=config.get("ckpt_path"))
    except SystemExit as stop:  # flashdist's preemption exit (75); a process running one fit would end here
        if stop.code == 0 or not config.get("signal_at_step"):
            raise
        Path(config["root"], f"exit-rank{trainer.global_rank}.json").write_text(json.dumps({"code": stop.code}))
        return
    model = trainer.lightning_module.model
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(PROBE_IDS)).logits
    if trainer.is_global_zero:
        torch.save(logits, Path(config["root"]) / "logits.pt")
        from torch.distributed.fsdp import FSDPModule

        extra = {"strategy_class": type(trainer.strategy).__name__,
                 "sharded_modules": [n for n, m in trainer.lightning_module.named_modules() if isinstance(m, FSDPModule)],
                 "trainable": lm.trainable_parameters(),
                 "val_loss": float(trainer.callback_metrics["val_loss"]) if "val_loss" in trainer.callback_metrics else None}
        Path(config["root"], "lm_extra.json").write_text(json.dumps(extra))


if __name__ == "__main__":
    configs = json.loads(sys.argv[1])
    for one in configs if isinstance(configs, list) else [configs]:
        main(one)
