"""``CausalLM``: fine-tune a Hugging Face causal language model (full or LoRA) as a flashdist Task.

Batches are dicts from :class:`~flashdist.data.LanguageModelingDataModule`: ``input_ids``,
``labels`` (``-100`` on prompt tokens and padding, so only completions and plain text are
learned) and, without packing, ``attention_mask``. The loss is the shifted next-token
cross-entropy of the model's logits, token-weighted (flashdist.text.token_weighting): an
optimizer step's loss, and its gradient, is the mean over every learned token of all its
micro-batches on all ranks, and ``train_loss`` is that per-token step loss. ``val_loss`` and
``val_perplexity`` are averaged over the learned tokens of the whole validation set on all ranks.
None of them depends on how the global batch is split into micro-batches and ranks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flashdist.errors import ConfigError
from flashdist.tasks.model import OptimizerArg, SchedulerArg, Task
from flashdist.text.backbones import Backbone, load_causal_lm
from flashdist.text.lora import LoraSettings, apply_lora
from flashdist.text.token_weighting import TokenWeightedLoss, learned_tokens, sum_over_ranks, token_loss_sum

CHECKPOINT_KEY = "flashdist_causal_lm"


class CausalLM(Task):
    """Next-token fine-tuning of ``AutoModelForCausalLM`` from a local directory or a tiny built-in config.

    Example:
        >>> lm = CausalLM(backbone="tiny-llama", learning_rate=1e-3, weight_decay=0.01,
        ...               lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": "4096tok"}))
        >>> lm.backbone_info.tokenizer
        'byte-level'
        >>> CausalLM(backbone="tiny-llama", lora={"r": 4, "target_modules": ["q_proj", "v_proj"]}).trainable_parameters()
        3584
    """

    def __init__(
        self,
        backbone: str = "tiny-llama",
        lora: dict[str, Any] | None = None,
        learning_rate: float | None = None,
        optimizer: OptimizerArg = "adamw",
        lr_scheduler: SchedulerArg = None,
        weight_decay: float | None = None,
        export: bool = True,
        activation_checkpointing: bool = False,
    ):
        if not isinstance(backbone, str):
            raise ConfigError(f"backbone={backbone!r} must be a string: a built-in name or a directory.")
        settings = LoraSettings.from_user(lora) if lora is not None else None
        if not isinstance(export, bool):
            raise ConfigError(f"export={export!r} must be true or false.")
        if not isinstance(activation_checkpointing, bool):
            raise ConfigError(f"activation_checkpointing={activation_checkpointing!r} must be true or false.",
                              hint="activation_checkpointing: true recomputes each decoder block in the backward.")
        model, info = load_causal_lm(backbone)
        model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode a module is in
        self.base_config = model.config  # before peft wraps it: what an export rebuilds
        if settings is not None:
            model = apply_lora(model, settings)
        if activation_checkpointing:
            enable_activation_checkpointing(model.get_base_model() if settings is not None else model)
        super().__init__(model=model, learning_rate=learning_rate, optimizer=optimizer, lr_scheduler=lr_scheduler,
                         weight_decay=weight_decay)
        self.backbone = backbone
        self.backbone_info: Backbone = info
        self.lora = settings
        self.export = export
        self.activation_checkpointing = activation_checkpointing
        self._eval_sums: list[torch.Tensor] = []  # (token loss sum, learned tokens) per validation or test batch
        self._token_weighting = TokenWeightedLoss()

    # ---- what the data module and the throughput meter read ---------------------------------
    @property
    def tokenizer_source(self) -> str:
        """The tokenizer this model was trained with: its directory, or ``"byte-level"`` (built-in)."""
        return self.backbone_info.tokenizer

    def use_tokenizer(self, source: str) -> None:
        """Record the tokenizer the data module encodes with (saved with the export)."""
        self.backbone_info = dataclasses.replace(self.backbone_info, tokenizer=source)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def flops_per_token(self, seq_length: int) -> float:
        """Training FLOPs per token: 6 × parameters + the attention term ``12·L·H·Q·T`` (PaLM, torchtitan).

        Parameters count every matmul weight once (tied embeddings once; an untied input
        embedding is a lookup, not a matmul, and is left out). The LoRA adapters are left out (a
        few percent at most): MFU counts the model's FLOPs, as for a full fine-tune.
        """
        config = self.base_config
        layers = _first_int(config, "num_hidden_layers", "n_layer")
        heads = _first_int(config, "num_attention_heads", "n_head")
        hidden = _first_int(config, "hidden_size", "n_embd")
        base = self.model.get_base_model() if self.lora is not None else self.model
        params = {id(p): p.numel() for name, p in base.named_parameters() if "lora_" not in name}
        embedding = base.get_input_embeddings().weight
        output = base.get_output_embeddings()
        tied = output is not None and output.weight is embedding
        total = sum(params.values()) - (0 if tied else embedding.numel())
        return 6.0 * total + 12.0 * layers * heads * (hidden // heads) * seq_length

    @staticmethod
    def count_tokens(batch: Mapping[str, torch.Tensor]) -> int | torch.Tensor:
        """Tokens the model processed in ``batch``: every position when packed, else the unpadded ones."""
        mask = batch.get("attention_mask")
        return batch["input_ids"].numel() if mask is None else mask.sum()

    # ---- the loop ---------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:  # type: ignore[override]
        # use_cache=False: with a KV cache transformers skips the packed-document mask it builds from
        # position_ids (flashdist.compat.transformers), and training never reads the cache.
        return self.model(**batch, use_cache=False)

    def next_token_logits(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The model's logits for every position of ``batch``."""
        # The model gets no labels: its own loss (a mean) would be computed and thrown away.
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return self.model(**inputs, use_cache=False).logits

    def summed_token_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sum of the next-token cross-entropies over the learned tokens of ``batch`` (float32)."""
        return token_loss_sum(self.next_token_logits(batch), batch["labels"])

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        trainer = self.trainer
        weighting = self._token_weighting
        loss = weighting.micro_batch_loss(trainer, batch, batch_idx, self.summed_token_loss(batch))
        part = weighting.step_loss_part(trainer)  # on the micro-batch that closes the window
        # The same decision on every rank, so the sum over ranks is a collective all join.
        if part is not None and self.step_metrics_are_due(batch_idx):
            self.log_step_metrics({"train_loss": sum_over_ranks(part)}, batch_idx)
        return loss

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._token_weighting.start_epoch()  # accumulation windows count from the epoch's first micro-batch

    # Validation and test: the mean token loss over every learned token of the loader on all ranks
    # (token sums and counts, reduced once at the epoch's end), and its perplexity.
    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_sums.append(torch.stack([self.summed_token_loss(batch).detach(), learned_tokens(batch["labels"]).float()]))

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """``trainer.predict``: the next-token logits of each row (for generation, export the model and use ``generate``)."""
        return self.next_token_logits(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = []

    def on_test_epoch_start(self) -> None:
        self._eval_sums = []

    def on_validation_epoch_end(self) -> None:
        self._log_eval_loss("val_")

    def on_test_epoch_end(self) -> None:
        self._log_eval_loss("test_")

    def _log_eval_loss(self, prefix: str) -> None:
        local = torch.stack(self._eval_sums).sum(0) if self._eval_sums else torch.zeros(2, device=self.device)
        total = self.trainer.strategy.reduce(local, reduce_op="sum")
        loss = (total[0] / total[1].clamp(min=1)).item()
        # Already reduced over ranks: every rank logs the same number, no second sync.
        self.log(f"{prefix}loss", loss, prog_bar=True, rank_zero_only=False)
        self.log(f"{prefix}perplexity", math.exp(min(loss, 80.0)), rank_zero_only=False)

    # ---- checkpoint and export -----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What `flashdist export --ckpt` needs to rebuild this model without the YAML.
        checkpoint[CHECKPOINT_KEY] = export_metadata(self)

    def save_hf(self, out_dir: str | Path, state_dict: Mapping[str, torch.Tensor]) -> Path:
        """Write ``out_dir`` with ``save_pretrained`` from a full (gathered) state dict of this Task."""
        from flashdist.text.export import save_hf_model

        return save_hf_model(export_metadata(self), state_dict, Path(out_dir))


def enable_activation_checkpointing(model: Any) -> None:
    """The HF model's own per-decoder-block checkpointing, non-reentrant.

    Each decoder layer (transformers' ``GradientCheckpointingLayer``) runs its ``forward`` under
    ``torch.utils.checkpoint``, its module hooks outside: under FSDP2, whose ``fully_shard`` is
    applied to those same blocks, a block's all-gather hooks wrap its checkpointed forward, the
    layout torchtitan gets from ``checkpoint_wrapper`` inside ``fully_shard``. Non-reentrant needs
    no input that requires grad, so a LoRA model (frozen embeddings) works without
    ``enable_input_require_grads``. Called on the base model after the LoRA wrap: peft then does not read the deprecated
    ``is_gradient_checkpointing`` to prepare the model a second time.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"activation_checkpointing=True: {type(model).__name__} does not support activation checkpointing.",
                          hint="set activation_checkpointing: false for this model.")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def export_metadata(task: CausalLM) -> dict[str, Any]:
    return {
        "backbone": task.backbone,
        "config": task.base_config.to_dict(),
        "tokenizer": task.tokenizer_source,
        "lora": task.lora.to_dict() if task.lora is not None else None,
    }


def _first_int(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"the model config ({type(config).__name__}) has none of {names}; FLOPs per token are unknown.")
