"""Training tokens per second on packed rows: SDPA (``position_ids`` mask) against flash-attention varlen.

    python -m flashdist.bench.packed_attention --device cuda --json packed.json

The two ways flashdist trains a causal LM on packed rows (flashdist/data/packing.py): a batch
``[B, L]`` with ``position_ids`` and no ``attention_mask``, from which transformers builds a
block-diagonal causal mask for SDPA; or the same batch flattened to one row with flash
attention's ``cu_seq_lens`` (``flatten_for_flash``), which needs ``flash-attn`` and a GPU.

Method: a Llama built from a config (``--hidden``, ``--layers``; seeded, the same weights for
both), bf16 on CUDA (fp32 on the CPU, SDPA only), AdamW; the same packed batch of documents of
random lengths. Per round, each attention in a shuffled order runs ``--steps`` training steps
(forward, backward, optimizer step), bracketed by ``torch.cuda.synchronize()``, after untimed
warm-up steps; tokens/s = tokens in the batch × steps ÷ seconds. The ratio flash ÷ SDPA is per
round; median and bootstrap 95% CI over rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flashdist.bench.device import check_device, device_name
from flashdist.bench.stats import bootstrap_ci, environment, median
from flashdist.data.packing import flatten_for_flash, pack_rows
from flashdist.errors import ConfigError

ATTENTIONS = ("sdpa", "flash_attention_2")


def _model(attention: str, hidden: int, layers: int, vocab: int, device: str) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
                         max_position_embeddings=8192, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention, dtype=dtype).to(device)


def packed_batch(rows: int, seq_length: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``rows`` packed rows of documents with random lengths (16 to ``seq_length // 2`` tokens).

    Example:
        >>> packed_batch(2, 64, 100)["position_ids"].shape
        torch.Size([2, 64])
    """
    rng = random.Random(seed)
    docs: list[list[int]] = []
    while sum(map(len, docs)) < (rows + 1) * seq_length:
        docs.append([rng.randrange(3, vocab) for _ in range(rng.randint(16, max(16, seq_length // 2)))])
    packed = pack_rows(docs, docs, seq_length)
    return {key: torch.tensor(value[:rows]) for key, value in packed.items()}


def _inputs(batch: dict[str, torch.Tensor], attention: str, device: str) -> dict[str, Any]:
    # SDPA: no attention_mask, so transformers masks by position_ids (an all-ones mask would let documents mix)
    given = flatten_for_flash(batch) if attention.startswith("flash") else batch
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in given.items()}


def run(device: str = "cuda", attentions: tuple[str, ...] = ATTENTIONS, rows: int = 8, seq_length: int = 2048,
        hidden: int = 512, layers: int = 8, vocab: int = 8192, steps: int = 10, warmup_steps: int = 3, rounds: int = 5) -> dict[str, Any]:
    """Tokens/s per attention implementation, paired by round; refuses flash without a GPU or ``flash-attn``."""
    device = check_device(device)
    if any(a.startswith("flash") for a in attentions):
        from transformers.utils import is_flash_attn_2_available

        if device != "cuda" or not is_flash_attn_2_available():
            raise ConfigError("flash_attention_2 needs a CUDA device and the flash-attn package.",
                              hint="measure --attentions sdpa alone, or install flash-attn on a GPU machine.")
    batch = packed_batch(rows, seq_length, vocab)
    tokens = batch["input_ids"].numel()
    steps_by_attention = {}
    for attention in attentions:
        model = _model(attention, hidden, layers, vocab, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        inputs = _inputs(batch, attention, device)

        def step(model: Any = model, optimizer: Any = optimizer, inputs: dict[str, Any] = inputs) -> None:
            model(**inputs, use_cache=False).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(warmup_steps):
            step()
        steps_by_attention[attention] = step
    rng = random.Random(0)
    per_round: dict[str, list[float]] = {a: [] for a in attentions}
    for _ in range(rounds):
        order = list(attentions)
        rng.shuffle(order)
        for attention in order:
            per_round[attention].append(tokens * steps / _seconds(steps_by_attention[attention], steps, device))
    result: dict[str, Any] = {
        "method": __doc__.split("\n\n", 2)[2].strip() if __doc__ else "",
        "environment": {**environment(), "device": device_name(device)},
        "settings": {"rows": rows, "seq_length": seq_length, "hidden": hidden, "layers": layers, "vocab": vocab, "steps": steps,
                     "rounds": rounds, "tokens_per_step": tokens},
        "tokens_per_s": {a: median(v) for a, v in per_round.items()},
        "per_round": per_round,
    }
    if set(ATTENTIONS) <= set(attentions):
        ratios = [f / s for f, s in zip(per_round["flash_attention_2"], per_round["sdpa"])]
        result["flash_over_sdpa"] = {"median": median(ratios), "ci95": list(bootstrap_ci(ratios)), "per_round": ratios}
    return result


def _seconds(step: Any, steps: int, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flashdist.bench.packed_attention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (SDPA only)")
    parser.add_argument("--attentions", default=",".join(ATTENTIONS), help=f"comma-separated, of {', '.join(ATTENTIONS)}")
    for name, default in (("rows", 8), ("seq-length", 2048), ("hidden", 512), ("layers", 8), ("steps", 10), ("warmup-steps", 3),
                          ("rounds", 5)):
        parser.add_argument(f"--{name}", type=int, default=default, help=f"(default {default})")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    attentions = tuple(a for a in args.attentions.split(",") if a)
    unknown = sorted(set(attentions) - set(ATTENTIONS))
    try:
        if unknown:
            raise ConfigError(f"--attentions {unknown} unknown.", accepted=ATTENTIONS)
        result = run(args.device, attentions, args.rows, args.seq_length, args.hidden, args.layers, steps=args.steps,
                     warmup_steps=args.warmup_steps, rounds=args.rounds)
    except ConfigError as error:
        print(f"packed_attention: {error}", file=sys.stderr)
        return 2
    for attention, value in result["tokens_per_s"].items():
        print(f"{attention:18} {value:12,.0f} tokens/s")
    if "flash_over_sdpa" in result:
        ratio = result["flash_over_sdpa"]
        print(f"flash ÷ sdpa tokens/s: {ratio['median']:.3f} [95% CI {ratio['ci95'][0]:.3f}, {ratio['ci95'][1]:.3f}]")
    print(f"on {result['environment']['device']}, {result['settings']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
