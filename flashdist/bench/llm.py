"""``flashdist bench llm``: per-step time of a CausalLM fine-tune under flashdist against the HF Trainer.

Both train the same model (the built-in ``tiny-llama``, same seed), on the same packed
sequences (``configs/data/pairs.jsonl`` through ``LanguageModelingDataModule``, tokenized once),
with the same global batch, AdamW (lr 1e-3, weight decay 0, no clipping) and a linear warmup
(10%) to zero, in one process on CPU:

- flashdist: ``CausalLM`` + ``LanguageModelingDataModule`` + ``flashdist.Trainer`` (what a
  flashdist user writes; export off, no validation, no logger);
- HF: ``transformers.Trainer`` (accelerate underneath) on ``AutoModelForCausalLM`` and the same
  packed ``datasets.Dataset``.

Method: each round runs both fits back to back in a shuffled order (paired in time); a fit's
figure is the median of its step-to-step times (stamped after the optimizer step) with the
first ``warmup_steps`` dropped, on two clocks: wall time and the process's CPU time (which
leaves out time spent waiting for a core on a shared machine); the ratio is per round
(flashdist ÷ HF), reported as the median with a 95% bootstrap CI over rounds
(flashdist/bench/stats.py).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flashdist.bench.stats import bootstrap_ci, environment, load_average, median

DATA = Path(__file__).resolve().parents[2] / "configs" / "data" / "pairs.jsonl"
LEARNING_RATE = 1e-3


def _data(cache: Path, seq_length: int, batch_size: int) -> Any:
    from flashdist.data import LanguageModelingDataModule

    return LanguageModelingDataModule(train_files=str(DATA), prompt_field="prompt", completion_field="completion",
                                      seq_length=seq_length, batch_size=batch_size, cache_dir=str(cache))


def flashdist_fit(root: Path, cache: Path, steps: int, seq_length: int, batch_size: int) -> list[tuple[float, float]]:
    import torch
    from lightning.pytorch import Callback

    import flashdist
    from flashdist.text import CausalLM

    stamps: list[tuple[float, float]] = []

    class Stamp(Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            stamps.append((time.perf_counter(), time.process_time()))

    torch.manual_seed(0)
    lm = CausalLM(backbone="tiny-llama", learning_rate=LEARNING_RATE, optimizer=("adamw", {"weight_decay": 0.0}), export=False,
                  lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
    trainer = flashdist.Trainer(default_root_dir=str(root / "flashdist"), accelerator="cpu", devices=1, max_steps=steps, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                limit_val_batches=0, callbacks=[Stamp()])
    trainer.fit(lm, datamodule=_data(cache, seq_length, batch_size))
    return stamps


def hf_fit(root: Path, cache: Path, steps: int, seq_length: int, batch_size: int) -> list[tuple[float, float]]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from flashdist.data.lm_tokenize import cache_path
    from flashdist.text.backbones import TINY_CAUSAL_LM

    stamps: list[tuple[float, float]] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            stamps.append((time.perf_counter(), time.process_time()))

    data = _data(cache, seq_length, batch_size)
    data.bind_model(_tiny())
    packed = datasets.load_from_disk(str(cache_path(cache, data.recipe())))["train"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_CAUSAL_LM["tiny-llama"]())
    # As CausalLM.forward calls it: without a KV cache the packed rows' position_ids mask documents in both harnesses.
    model.config.use_cache = False
    args = TrainingArguments(
        output_dir=str(root / "hf"), per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=LEARNING_RATE,
        weight_decay=0.0, max_grad_norm=0.0, lr_scheduler_type="linear", warmup_steps=max(1, -(-steps // 10)),
        logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        optim="adamw_torch", dataloader_num_workers=0, dataloader_drop_last=True,
    )
    Trainer(model=model, args=args, train_dataset=packed, callbacks=[Stamp()]).train()
    return stamps


def step_median_ms(stamps: list[tuple[float, float]], warmup_steps: int, clock: int = 0) -> float:
    """Median ms between consecutive optimizer steps after ``warmup_steps``; clock 0 = wall, 1 = process CPU."""
    gaps = [b[clock] - a[clock] for a, b in zip(stamps, stamps[1:])][warmup_steps:]
    return 1000.0 * median(gaps)


def run(rounds: int = 8, steps: int = 60, warmup_steps: int = 10, seq_length: int = 128, batch_size: int = 8,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Paired rounds of both fits; the per-round ratio's median and CI (see the module docstring)."""
    import torch

    torch.set_num_threads(1)  # both harnesses in one thread: the machine's other core stays for the OS and neighbours
    harnesses = {"flashdist": flashdist_fit, "hf": hf_fit}
    per_round: list[dict[str, float]] = []
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        _data(cache, seq_length, batch_size).before_launch(_tiny(), root)  # tokenize once, untimed
        for index in range(rounds + 1):  # round 0 warms caches and lazy imports: untimed
            order = list(harnesses)
            rng.shuffle(order)
            times = {}
            for name in order:
                stamps = harnesses[name](root / f"r{index}", cache, steps, seq_length, batch_size)
                times[name], times[f"{name}_cpu"] = step_median_ms(stamps, warmup_steps, 0), step_median_ms(stamps, warmup_steps, 1)
            if index:
                times["load_1min"] = (load_average() or (float("nan"),))[0]  # the neighbours' share of the cores, per round
                per_round.append(times)
                progress(f"round {index}/{rounds}: flashdist {times['flashdist']:.2f} ms, HF {times['hf']:.2f} ms per step "
                         f"(CPU {times['flashdist_cpu']:.2f}, {times['hf_cpu']:.2f})")
    ratios = [r["flashdist"] / r["hf"] for r in per_round]
    cpu_ratios = [r["flashdist_cpu"] / r["hf_cpu"] for r in per_round]
    low, high = bootstrap_ci(ratios, median)
    return {
        "method": __doc__.split("Method: ", 1)[1].strip(),
        "settings": {"rounds": rounds, "steps": steps, "warmup_steps": warmup_steps, "seq_length": seq_length, "batch_size": batch_size,
                     "tokens_per_step": seq_length * batch_size, "threads": 1},
        "rounds": per_round,
        "flashdist_ms": median([r["flashdist"] for r in per_round]),
        "hf_ms": median([r["hf"] for r in per_round]),
        "ratio_median": median(ratios),
        "ratio_ci95": [low, high],
        "flashdist_cpu_ms": median([r["flashdist_cpu"] for r in per_round]),
        "hf_cpu_ms": median([r["hf_cpu"] for r in per_round]),
        "cpu_ratio_median": median(cpu_ratios),
        "cpu_ratio_ci95": list(bootstrap_ci(cpu_ratios, median)),
        "load_1min_range": [min(r["load_1min"] for r in per_round), max(r["load_1min"] for r in per_round)],
        "environment": environment(),
    }


def _tiny() -> Any:
    from flashdist.text import CausalLM

    return CausalLM(backbone="tiny-llama")
