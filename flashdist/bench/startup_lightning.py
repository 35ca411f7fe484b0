"""Plain Lightning, the baseline of ``python -m flashdist.bench.startup``: the same model, data and strategy as a config.

What a Lightning user writes without flashdist, as one script per workload, started the way
``flashdist fit`` is (``python -m flashdist.bench.startup_lightning WORKLOAD --root DIR``;
Lightning's own launcher starts the second process):

- ``quickstart`` (``configs/quickstart.yaml``): transformers' ResNet (``resnet_tiny``'s sizes),
  2048 synthetic 16×16 images in 4 classes, AdamW + a cosine schedule with 10% warmup (torch
  ``LambdaLR``), torchmetrics accuracy, DDP on 2 processes, TensorBoard + CSV loggers.
- ``llm`` (``configs/llm_finetune.yaml``): transformers' Llama with ``tiny-llama``'s sizes,
  ``configs/data/pairs.jsonl`` tokenized one byte per token, the loss on the completions,
  packed into rows of 128, batch 8 per process, AdamW (0.9, 0.95) + linear warmup, ZeRO-2 on
  2 processes, a CSV logger.
- ``lora``: ``llm`` with peft's LoRA (r 8, alpha 16, q_proj and v_proj), as
  ``--model.init_args.lora`` gives the config.

Only the CPU checks of Lightning's ``DeepSpeedStrategy`` are lifted (flashdist's
``CPUDeepSpeedMixin``, as ``flashdist bench fit`` does): importing it brings part of flashdist
into the baseline's imports (measured and reported by ``flashdist.bench.startup``).
The stamps callback (``flashdist.bench.startup.FirstStepStamp``) is the same on both sides.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset, random_split

from flashdist.bench.startup import FirstStepStamp

PAIRS = Path(__file__).resolve().parents[2] / "configs" / "data" / "pairs.jsonl"
WORKLOADS = ("quickstart", "llm", "lora")


def warmup_then(total_steps: int, warmup_steps: int, cosine: bool) -> Any:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress)) if cosine else max(0.0, 1 - progress)

    return factor


class Images(LightningDataModule):
    def setup(self, stage: str) -> None:
        generator = torch.Generator().manual_seed(0)
        prototypes = torch.randn(4, 3, 16, 16, generator=generator)
        labels = torch.randint(0, 4, (2048,), generator=generator)
        images = prototypes[labels] + 3.0 * torch.randn(2048, 3, 16, 16, generator=generator)
        self.train, self.val = random_split(TensorDataset(images, labels), [1792, 256], generator=generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=32)


class ImageModule(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassAccuracy
        from transformers import ResNetConfig, ResNetForImageClassification

        config = ResNetConfig(num_labels=4, layer_type="basic", depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8)
        self.model = ResNetForImageClassification(config)
        self.accuracy = MulticlassAccuracy(num_classes=4)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self.model(pixel_values=images).logits, labels)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        self.accuracy(self.model(pixel_values=images).logits, labels)
        self.log("val_accuracy", self.accuracy, sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=0.01)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(total, math.ceil(0.1 * total), cosine=True))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def packed_pairs(seq_length: int = 128) -> TensorDataset:
    """pairs.jsonl, one token per byte (+3 past pad/bos/eos), the loss on completions, packed into rows."""
    ids: list[int] = []
    labels: list[int] = []
    for line in PAIRS.read_text().splitlines():
        row = json.loads(line)
        prompt = [1] + [b + 3 for b in row["prompt"].encode()]
        completion = [b + 3 for b in row["completion"].encode()] + [2]
        ids += prompt + completion
        labels += [-100] * len(prompt) + completion
    rows = len(ids) // seq_length
    shape = (rows, seq_length)
    return TensorDataset(torch.tensor(ids[: rows * seq_length]).view(shape), torch.tensor(labels[: rows * seq_length]).view(shape))


class Pairs(LightningDataModule):
    def setup(self, stage: str) -> None:
        data = packed_pairs()
        val = max(1, len(data) // 10)
        self.train, self.val = random_split(data, [len(data) - val, val], generator=torch.Generator().manual_seed(0))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=8, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=8)


class LanguageModule(LightningModule):
    def __init__(self, lora: bool) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
                             pad_token_id=0, bos_token_id=1, eos_token_id=2)
        self.model = LlamaForCausalLM(config)
        if lora:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        ids, labels = batch
        loss = self.model(input_ids=ids, labels=labels).loss
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        ids, labels = batch
        self.log("val_loss", self.model(input_ids=ids, labels=labels).loss, sync_dist=True)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(total, 8, cosine=False))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--root", required=True, help="default_root_dir (logs)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    common: dict[str, Any] = dict(accelerator="cpu", devices=2, default_root_dir=args.root, log_every_n_steps=5,
                                  enable_checkpointing=False, enable_model_summary=False, callbacks=[FirstStepStamp()])
    if args.workload == "quickstart":
        loggers = [TensorBoardLogger(args.root, name="tensorboard"), CSVLogger(args.root, name="csv")]
        Trainer(strategy="ddp", max_epochs=4, logger=loggers, **common).fit(ImageModule(), Images())
        return
    from flashdist.bench.harnesses import plain_cpu_deepspeed

    trainer = Trainer(strategy=plain_cpu_deepspeed(), max_epochs=8, check_val_every_n_epoch=4,
                      logger=CSVLogger(args.root, name="csv"), **common)
    trainer.fit(LanguageModule(lora=args.workload == "lora"), Pairs())


if __name__ == "__main__":
    main()
