"""Write a trained ``CausalLM`` as a Hugging Face model directory (``save_pretrained``).

The input is a *full* state dict of the Task (keys ``model.…``), already gathered from
ZeRO-3 or FSDP2 shards by the strategy's route (``StrategyRoute.full_state_dict``) or read from
a checkpoint (``flashdist export``). The model is rebuilt on CPU from the config saved with
it, the weights loaded strictly (a missing or extra key is an error, never a silent partial
export), then saved as safetensors with its config and tokenizer:

- full fine-tuning: a model directory ``AutoModelForCausalLM.from_pretrained(DIR)`` loads;
- LoRA: an adapter directory (``adapter_config.json``, ``adapter_model.safetensors``), loaded
  with ``PeftModel.from_pretrained(base_model, DIR)``; with ``lora.merge_on_export: true``,
  the adapters merged into the base and saved as a plain model directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flashdist.data.byte_tokenizer import BYTE_LEVEL, byte_level_tokenizer
from flashdist.text.lora import LoraSettings, apply_lora


def rebuild_model(metadata: Mapping[str, Any]) -> torch.nn.Module:
    """The Task's ``model`` (peft-wrapped under LoRA), randomly initialized, from saved metadata."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict = dict(metadata["config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    if metadata.get("lora") and Path(metadata["backbone"]).is_dir():
        # peft writes this as the adapter's base_model_name_or_path, so from_pretrained(adapter dir) finds the base.
        config.name_or_path = str(Path(metadata["backbone"]).resolve())
    model = AutoModelForCausalLM.from_config(config)
    if metadata.get("lora"):
        model = apply_lora(model, LoraSettings.from_user(metadata["lora"]))
    return model


def save_hf_model(metadata: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], out_dir: Path) -> Path:
    """Rebuild, load ``state_dict`` (the Task's, ``model.`` prefix), and ``save_pretrained`` into ``out_dir``.

    Example:
        >>> save_hf_model(export_metadata(task), task.state_dict(), Path("runs/x/hf_model"))  # doctest: +SKIP
    """
    model = rebuild_model(metadata)
    weights = {key.removeprefix("model."): value for key, value in state_dict.items() if key.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    lora = metadata.get("lora")
    if lora and lora.get("merge_on_export"):
        model = model.merge_and_unload()
    from flashdist.compat.console import dependency_progress_bars_off

    with dependency_progress_bars_off():  # the fit's own line says where it went
        model.save_pretrained(out_dir, safe_serialization=True)
        _tokenizer(metadata["tokenizer"]).save_pretrained(out_dir)
    (out_dir / "flashdist_export.json").write_text(json.dumps(
        {"backbone": metadata["backbone"], "lora": lora, "kind": _kind(lora)}, indent=2) + "\n")
    return out_dir


def _kind(lora: Mapping[str, Any] | None) -> str:
    if not lora:
        return "model"
    return "merged-lora-model" if lora.get("merge_on_export") else "lora-adapter"


def _tokenizer(source: str) -> Any:
    if source == BYTE_LEVEL:
        return byte_level_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, local_files_only=True)
