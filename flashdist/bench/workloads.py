"""The benchmarks' two workloads, built in code (nothing downloaded), identical for every harness.

``mlp``: a 32-64-4 MLP, batch 16, cross-entropy: about 1 ms per step on one CPU thread.
``gpt2``: a tiny GPT-2 causal LM (2 layers, width 64, vocabulary 256) from a config, batch 8
of 32 tokens: about 20 ms per step. Both train with AdamW and a linear warmup (10%) to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

WorkloadName = Literal["mlp", "gpt2"]
WORKLOADS: tuple[WorkloadName, ...] = ("mlp", "gpt2")
LEARNING_RATE = 1e-3
WARMUP_FRACTION = 0.1
MLP_FEATURES, MLP_HIDDEN, MLP_CLASSES, MLP_BATCH = 32, 64, 4, 16
GPT2_VOCAB, GPT2_TOKENS, GPT2_BATCH = 256, 32, 8


@dataclass(frozen=True)
class Workload:
    """What every harness trains: a model factory, the samples, the batch size, and the device.

    ``device`` (``"cpu"`` or ``"cuda"``, :mod:`flashdist.bench.device`) is the only thing the CUDA
    run changes: every harness reads it here, and the samples stay on the CPU until a batch moves.
    """

    name: WorkloadName
    batch_size: int
    device: str = "cpu"

    def model(self) -> nn.Module:
        """A fresh model (seed first for the same weights in every harness)."""
        if self.name == "mlp":
            return nn.Sequential(nn.Linear(MLP_FEATURES, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, MLP_CLASSES))
        return TinyCausalLM()

    def samples(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` (input, target) pairs, the same on every rank and in every harness."""
        generator = torch.Generator().manual_seed(1234)
        if self.name == "mlp":
            x = torch.randn(count, MLP_FEATURES, generator=generator)
            return x, (x[:, :MLP_CLASSES].argmax(dim=1))
        ids = torch.randint(0, GPT2_VOCAB, (count, GPT2_TOKENS), generator=generator)
        return ids, ids.clone()

    @property
    def loss_fn(self) -> Any:
        """``loss_fn(outputs, targets)``: the same function in every harness."""
        return nn.functional.cross_entropy if self.name == "mlp" else causal_lm_loss


class TinyCausalLM(nn.Module):
    """A 2-layer GPT-2 from a config (nothing downloaded); ``forward(input_ids)`` returns the logits."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=GPT2_VOCAB, n_positions=64, bos_token_id=0,
                            eos_token_id=0, pad_token_id=0)
        self.gpt = GPT2LMHeadModel(config)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt(input_ids=input_ids).logits


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts token t + 1 (transformers' causal-LM loss)."""
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1))


def workload(name: str, device: str = "cpu") -> Workload:
    """The named workload, trained on ``device``.

    Example:
        >>> workload("mlp").batch_size, workload("mlp", "cuda").device
        (16, 'cuda')
    """
    if name == "mlp":
        return Workload("mlp", MLP_BATCH, device)
    if name == "gpt2":
        return Workload("gpt2", GPT2_BATCH, device)
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


def warmup_steps_of(total_steps: int) -> int:
    return math.ceil(WARMUP_FRACTION * total_steps)


def linear_warmup_factor(total_steps: int) -> Any:
    """The schedule every hand-written loop uses, as the LambdaLR a user writes (transformers' formula)."""
    warmup = warmup_steps_of(total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


class PairDataset(Dataset):
    """``(input, target)`` tuples for torch/Lightning, or ``{"input_ids"|"x", "labels"}`` dicts for the HF Trainer."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, as_dict: bool = False, input_key: str = "x"):
        self.inputs, self.targets, self.as_dict, self.input_key = inputs, targets, as_dict, input_key

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> Any:
        if self.as_dict:
            return {self.input_key: self.inputs[index], "labels": self.targets[index]}
        return self.inputs[index], self.targets[index]
