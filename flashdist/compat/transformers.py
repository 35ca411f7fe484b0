"""What flashdist relies on in transformers' handling of packed rows.

Assumption (transformers PR #39194, ``masking_utils.find_packed_sequence_indices``): called with
``position_ids`` that restart at 0 at each document and *without* ``attention_mask``, a model
builds a block-diagonal causal mask (eager, SDPA, flex), so a document attends to itself only.
An all-ones mask turns this off silently; a model that does not build its mask through
``create_causal_mask`` (or feeds positions differently) does not do it at all. So it is not
assumed: ``packed_attention_problem`` measures it on the model itself, on two short documents.
Flash-attention reads the same boundaries from ``cu_seq_lens_*`` (flashdist.data.packing).
"""

from __future__ import annotations

from typing import Any

FLASH = ("flash_attention_2", "flash_attention_3")


def attention_implementation(model: Any) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "eager")


def packed_attention_problem(model: Any, tolerance: float = 1e-4) -> str | None:
    """None if ``model`` keeps two packed documents apart; otherwise what it does wrong.

    The second of two documents packed in one row, positions restarting at 0, must give the
    logits it gives alone. Flash-attention is not probed here (it needs CUDA): it is given the
    varlen arguments, which define the documents outright.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> packed_attention_problem(LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
        ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))) is None
        True
    """
    import torch

    if attention_implementation(model) in FLASH:
        return None
    vocab = model.get_input_embeddings().num_embeddings
    first, second = torch.arange(1, 4) % vocab, torch.arange(4, 8) % vocab
    packed = torch.cat([first, second]).unsqueeze(0)
    positions = torch.cat([torch.arange(3), torch.arange(4)]).unsqueeze(0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            together = model(input_ids=packed.to(device), position_ids=positions.to(device), use_cache=False).logits[0, 3:]
            alone = model(input_ids=second.unsqueeze(0).to(device), use_cache=False).logits[0]
    except (TypeError, ValueError, RuntimeError) as error:
        return f"its forward does not take position_ids for packed rows ({type(error).__name__}: {error})"
    finally:
        model.train(was_training)
    gap = float((together.float() - alone.float()).abs().max())
    if gap > tolerance * max(1.0, float(alone.abs().max())):
        return (f"a document packed after another one gives other logits than alone (max difference {gap:.3g}): "
                f"{type(model).__name__} with attention {attention_implementation(model)!r} lets it attend across documents")
    return None


__all__ = ["FLASH", "attention_implementation", "packed_attention_problem"]
