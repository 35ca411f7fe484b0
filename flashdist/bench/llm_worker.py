"""One rank of ``flashdist bench llm``: CausalLM fine-tunes under every strategy, interleaved, timed per step.

Run by :mod:`flashdist.bench.llm_strategies` under ``torchrun --nproc_per_node 2``: every rank
runs the same sequence of fits (each fit's collectives need both), rank 0 writes the timings.
The first round is untimed (imports, DeepSpeed's op build, the tokenized cache); in it, each
variant's collectives are also counted over a few steady steps with torch's profiler, which is
what explains the gaps between strategies on gloo (each collective is a blocking call there).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parents[2] / "configs" / "data" / "pairs.jsonl"
LEARNING_RATE = 1e-3
LORA = {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
# What torch's profiler names a collective (c10d's ops, e.g. "c10d::allgather_", and gloo's own
# records); each is a blocking call on gloo, so its time is training time lost.
COLLECTIVE_KINDS = {"all_gather": ("allgather", "all_gather"), "reduce_scatter": ("reduce_scatter",),
                    "all_reduce": ("allreduce", "all_reduce"), "broadcast": ("broadcast",)}


@dataclass(frozen=True)
class Variant:
    """One fit's configuration: a flashdist strategy name, LoRA on or off, FSDP2's reshard switch."""

    strategy: str
    lora: bool = False
    reshard_after_forward: bool = True

    @property
    def name(self) -> str:
        """``ddp``, ``fsdp+lora``, ``fsdp+lora/keep-gathered`` (reshard_after_forward=False)."""
        keep = "" if self.reshard_after_forward else "/keep-gathered"
        return f"{self.strategy}{'+lora' if self.lora else ''}{keep}"


VARIANTS: tuple[Variant, ...] = (
    Variant("ddp"), Variant("ddp", lora=True),
    Variant("deepspeed_stage_2"), Variant("deepspeed_stage_2", lora=True),
    Variant("deepspeed_stage_3"), Variant("deepspeed_stage_3", lora=True),
    Variant("fsdp"), Variant("fsdp", reshard_after_forward=False),
    Variant("fsdp", lora=True), Variant("fsdp", lora=True, reshard_after_forward=False),
)
BY_NAME = {v.name: v for v in VARIANTS}
BASELINE = "ddp"


def strategy_for(variant: Variant) -> Any:
    """The ``strategy=`` a user would pass for ``variant``: the registry name, or an FSDP2Strategy instance.

    Example:
        >>> strategy_for(BY_NAME["ddp+lora"])
        'ddp'
        >>> strategy_for(BY_NAME["fsdp/keep-gathered"]).reshard_after_forward
        False
    """
    if variant.strategy == "fsdp" and not variant.reshard_after_forward:
        from flashdist.strategies.fsdp import FSDP2Strategy

        return FSDP2Strategy(reshard_after_forward=False)
    return variant.strategy


def collective_kind(event_name: str) -> str | None:
    """Which collective a profiler event is (``None`` for everything else).

    Example:
        >>> collective_kind("c10d::allgather_"), collective_kind("c10d::_reduce_scatter_base_"), collective_kind("aten::mm")
        ('all_gather', 'reduce_scatter', None)
    """
    lowered = event_name.lower()
    if not lowered.startswith(("c10d::", "gloo:")):
        return None
    return next((kind for kind, keys in COLLECTIVE_KINDS.items() if any(k in lowered for k in keys)), None)


class StepCallbacks:
    """Lightning callbacks of one fit: a stamp after every optimizer step, and an optional profile window."""

    def __init__(self, profile_from_step: int | None, profile_steps: int):
        from lightning.pytorch import Callback

        self.wall_ns: list[int] = []
        self.cpu_ns: list[int] = []
        self.collectives: dict[str, dict[str, float]] = {}
        self.top_ops: list[tuple[str, float]] = []
        owner = self

        class Stamp(Callback):
            profiler: Any = None

            def on_train_batch_end(self, *args: Any) -> None:
                owner.wall_ns.append(time.perf_counter_ns())
                owner.cpu_ns.append(time.process_time_ns())  # the process's CPU time, gloo's threads included
                step = len(owner.wall_ns)
                if profile_from_step is None:
                    return
                if step == profile_from_step:
                    self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    self.profiler.__enter__()
                elif step == profile_from_step + profile_steps and self.profiler is not None:
                    self.profiler.__exit__(None, None, None)
                    owner.collectives = count_collectives(self.profiler.events(), profile_steps)
                    owner.top_ops = top_ops(self.profiler.key_averages(), profile_steps)
                    self.profiler = None

        self.callback = Stamp()


def count_collectives(events: Any, steps: int) -> dict[str, dict[str, float]]:
    """Per collective kind: calls per step and ms per step (the outermost c10d record of each call)."""
    totals: dict[str, dict[str, float]] = {}
    for event in events:
        kind = collective_kind(event.name)
        if kind is None or not event.name.lower().startswith("c10d::"):
            continue
        entry = totals.setdefault(kind, {"calls_per_step": 0.0, "ms_per_step": 0.0})
        entry["calls_per_step"] += 1 / steps
        entry["ms_per_step"] += event.cpu_time_total / 1e3 / steps
    return {k: {key: round(value, 2) for key, value in v.items()} for k, v in sorted(totals.items())}


def top_ops(averages: Any, steps: int, count: int = 8) -> list[tuple[str, float]]:
    """The ops with the most self CPU time, as (name, ms per step): where a variant's time goes besides its collectives."""
    ranked = sorted(averages, key=lambda a: a.self_cpu_time_total, reverse=True)[:count]
    return [(a.key, round(a.self_cpu_time_total / 1e3 / steps, 2)) for a in ranked]


def one_fit(variant: Variant, config: dict[str, Any], cache: str, profile: bool) -> dict[str, Any]:
    import flashdist
    from flashdist.data import LanguageModelingDataModule
    from flashdist.text import CausalLM

    torch.manual_seed(config["seed"])
    random.seed(config["seed"])
    profile_from = config["warmup_steps"] if profile else None
    steps = config["warmup_steps"] + config["steps"] + 1
    callbacks = StepCallbacks(profile_from, min(config["profile_steps"], config["steps"]))
    lm = CausalLM(backbone="tiny-llama", lora=LORA if variant.lora else None, learning_rate=LEARNING_RATE,
                  optimizer=("adamw", {"weight_decay": 0.0}), export=False,
                  lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
    data = LanguageModelingDataModule(train_files=str(DATA), prompt_field="prompt", completion_field="completion",
                                      seq_length=config["seq_length"], batch_size=config["batch_size"], cache_dir=cache)
    with tempfile.TemporaryDirectory(prefix="flashdist-bench-llm-") as root:
        trainer = flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=int(os.environ.get("WORLD_SIZE", "1")),
                                    strategy=strategy_for(variant), max_steps=steps, logger=False, enable_checkpointing=False,
                                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                                    callbacks=[callbacks.callback])
        started = time.perf_counter()
        trainer.fit(lm, datamodule=data)
        fit_wall_s = time.perf_counter() - started
    warmup = config["warmup_steps"]
    timed = slice(warmup, None)
    return {
        "variant": variant.name,
        "steps_taken": len(callbacks.wall_ns),
        "median_ms": _median_interval_ms(callbacks.wall_ns[timed]),
        "cpu_median_ms": _median_interval_ms(callbacks.cpu_ns[timed]),
        "fit_wall_s": fit_wall_s,
        "trainable_parameters": sum(p.numel() for p in lm.parameters() if p.requires_grad),
        "collectives": callbacks.collectives,
        "top_ops": callbacks.top_ops,
    }


def _median_interval_ms(stamps_ns: list[int]) -> float:
    gaps = sorted((b - a) / 1e6 for a, b in zip(stamps_ns, stamps_ns[1:]))
    mid = len(gaps) // 2
    return gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    torch.set_num_threads(1)  # one thread per rank: 2 ranks on the 2 cores
    from flashdist.bench.fit_worker import quiet_flashdist_fits

    quiet_flashdist_fits()  # ten fits a round: no per-fit plan
    rank = int(os.environ.get("RANK", "0"))
    variants = [BY_NAME[name] for name in config["variants"]]
    order_rng = random.Random(config["seed"])  # the same seed on every rank: the same order everywhere
    fits: list[dict[str, Any]] = []
    for round_index in range(-1, config["rounds"]):
        order = list(variants)
        order_rng.shuffle(order)
        for variant in order:
            record = one_fit(variant, config, str(Path(config["scratch"]) / "cache"), profile=round_index < 0)
            if rank == 0:
                fits.append({**record, "round": round_index})  # round -1: untimed, kept for its profile
        if rank == 0:
            print(f"[bench llm] round {round_index + 1}/{config['rounds']} done (load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
    if rank == 0:
        Path(config["out"]).write_text(json.dumps({"fits": fits}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
