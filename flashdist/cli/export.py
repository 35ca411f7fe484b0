"""``flashdist export --ckpt PATH --out DIR``: a Hugging Face model directory from a flashdist checkpoint.

Reads any checkpoint a ``CausalLM`` fit wrote — a Lightning ``.ckpt`` file (DDP, one device),
a DeepSpeed checkpoint directory (ZeRO shards, merged to fp32 with Lightning's
``convert_zero_checkpoint_to_fp32_state_dict``), or an FSDP2 distributed-checkpoint directory
(merged with torch's ``dcp_to_torch_save``) — and writes what a fit's export writes
(``save_pretrained``: safetensors, config, tokenizer; a LoRA adapter, or merged).

Example:
    $ flashdist export --ckpt runs/llm_finetune/checkpoints/last.ckpt --out runs/llm_finetune/exported
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

HELP = "write a Hugging Face model directory (save_pretrained) from a CausalLM checkpoint"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flashdist export", description=HELP)
    parser.add_argument("--ckpt", required=True, help="a .ckpt file, or a DeepSpeed / FSDP2 checkpoint directory")
    parser.add_argument("--out", required=True, help="the directory to write (created)")
    args = parser.parse_args(argv)
    from flashdist.errors import ConfigError

    try:
        out = export_checkpoint(Path(args.ckpt), Path(args.out))
    except ConfigError as error:
        print(f"flashdist export: error: {error}", file=sys.stderr)
        return 2
    print(f"flashdist export: wrote {out}")
    return 0


def export_checkpoint(ckpt: Path, out: Path) -> Path:
    """Load ``ckpt`` (any of the three layouts), then save the model as ``save_pretrained`` does."""
    from flashdist.errors import ConfigError
    from flashdist.text.causal_lm import CHECKPOINT_KEY
    from flashdist.text.export import save_hf_model

    state, metadata = load_checkpoint(ckpt)
    if CHECKPOINT_KEY not in metadata:
        raise ConfigError(f"{ckpt} was not written by a CausalLM fit (it has no {CHECKPOINT_KEY!r} entry).",
                          hint="export works for checkpoints of flashdist.text.CausalLM.")
    return save_hf_model(metadata[CHECKPOINT_KEY], state, out)


def load_checkpoint(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the LightningModule's full state dict, the rest of the checkpoint) from a file or a sharded directory."""
    import torch

    from flashdist.errors import ConfigError

    if ckpt.is_file():
        # weights_only: a checkpoint from elsewhere can carry a pickle; flashdist's hold tensors and plain data.
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
        return checkpoint["state_dict"], checkpoint
    if (ckpt / "checkpoint").is_dir() or (ckpt / "latest").is_file():
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        with tempfile.TemporaryDirectory() as tmp:
            merged = Path(tmp) / "merged.ckpt"
            convert_zero_checkpoint_to_fp32_state_dict(str(ckpt), str(merged))
            checkpoint = torch.load(merged, map_location="cpu", weights_only=False)  # written just now, by Lightning
        return checkpoint["state_dict"], checkpoint
    if (ckpt / ".metadata").is_file():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            merged = Path(tmp) / "merged.pt"
            dcp_to_torch_save(str(ckpt), str(merged))
            shards = torch.load(merged, map_location="cpu", weights_only=True)
        metadata = torch.load(ckpt / "meta.pt", map_location="cpu", weights_only=True) if (ckpt / "meta.pt").is_file() else {}
        return shards["state_dict"], metadata
    held = sorted(p.name for p in ckpt.iterdir())[:12] if ckpt.is_dir() else None
    raise ConfigError(f"--ckpt {str(ckpt)!r} is not a checkpoint" + (f" (the directory holds {held})." if held is not None else " (no such file)."),
                      accepted=["a .ckpt file", "a DeepSpeed checkpoint directory", "an FSDP2 distributed-checkpoint directory"])
