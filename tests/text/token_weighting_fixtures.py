"""The token-weighting fits' shared parts: the data, each split's fit_lm config, and the reference fit computed by hand.

Used by tests/text/test_token_weighting.py (the 1-process splits, in-process) and
tests/text/test_lm_strategies.py (the 2-process split, in the LM torchrun launch).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.text.lm_fixtures import local_backbone

ROWS, SGD_LR, SEED = 20, 0.5, 0
SPLITS = {  # name: (devices, batch_size, accumulate_grad_batches) → optimizer steps in one epoch of ROWS
    "b8": (1, 8, 1),
    "b2xk4": (1, 2, 4),
    "2rx_b2xk2": (2, 2, 2),
}
STEPS = {"b8": 2, "b2xk4": 3, "2rx_b2xk2": 3}


def make_parts(root: Path) -> dict:
    """The tiny Llama, the pairs and one shared token cache for every split's fit."""
    root.mkdir(parents=True, exist_ok=True)
    model_dir, data_file = local_backbone(root, count=ROWS)
    return {"model_dir": str(model_dir), "data_file": str(data_file), "cache_dir": str(root / "cache")}


def split_config(parts: dict, name: str, root: Path, strategy: str = "auto") -> dict:
    devices, batch_size, accumulate = SPLITS[name]
    return {**parts, "root": str(root), "strategy": strategy, "devices": devices, "batch_size": batch_size,
            "accumulate_grad_batches": accumulate, "sgd_lr": SGD_LR, "packing": False, "max_epochs": 1,
            "csv_logger": True, "log_every_n_steps": 1}


def training_rows(cache_dir: Path) -> list[dict[str, torch.Tensor]]:
    """The padded rows of the cache, in the epoch's shuffled order (a DistributedSampler permutation of the run's seed)."""
    import datasets
    from torch.utils.data import DistributedSampler

    from flashdist.data.lm_tokenize import read_tokenize_log

    cache = cache_dir / read_tokenize_log(cache_dir)[0]["cache"]
    rows = datasets.load_from_disk(str(cache))["train"].with_format("torch")
    assert len(rows) == ROWS
    order = list(DistributedSampler(range(ROWS), num_replicas=1, rank=0, shuffle=True, seed=SEED))
    return [rows[i] for i in order]


def reference_fit(model_dir: str, cache_dir: Path, steps: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """(loss of each step, weights after ``steps``) of SGD on the mean over every learned token of each 8 rows, by hand."""
    from transformers import AutoModelForCausalLM

    rows = training_rows(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.train()
    losses = []
    for step in range(steps):
        batch = {key: torch.stack([row[key] for row in rows[8 * step: 8 * step + 8]]) for key in ("input_ids", "attention_mask", "labels")}
        model.zero_grad()
        loss = model(**batch).loss  # transformers' mean over the learned tokens of the whole step
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= SGD_LR * p.grad
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def logged_train_losses(root: Path) -> list[float]:
    with open(root / "csv" / "version_0" / "metrics.csv") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle) if row.get("train_loss")]


def exported_weights(root: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(root / "hf_model" / "model.safetensors"))


def assert_same_fit(root: Path, losses: list[float], weights: dict[str, torch.Tensor]) -> None:
    """The fit under ``root`` logged ``losses`` as its per-step train_loss and ended on ``weights``, to 1e-6."""
    assert logged_train_losses(root) == pytest.approx(losses, abs=1e-6, rel=0)
    got = exported_weights(root)
    assert set(got) <= set(weights) and "lm_head.weight" in got
    for name, value in got.items():
        torch.testing.assert_close(value, weights[name], atol=1e-6, rtol=0, msg=name)
