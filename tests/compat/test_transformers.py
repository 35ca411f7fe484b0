"""The transformers behaviour packed rows rely on (flashdist/compat/transformers.py), named."""

from __future__ import annotations

import torch

from flashdist.compat.transformers import packed_attention_problem


def _tiny_llama(cls=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=32)
    return (cls or LlamaForCausalLM)(config)


def test_position_ids_without_mask_or_cache_build_a_block_diagonal_mask():
    model = _tiny_llama()
    assert packed_attention_problem(model) is None
    # The two conditions of masking_utils: no attention_mask, no KV cache. Either one brings cross-document
    # attention back silently (which is why CausalLM.forward passes use_cache=False and packed rows carry no mask).
    ids, positions = torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([[0, 1, 2, 0, 1, 2]])
    with torch.no_grad():
        alone = model(input_ids=ids[:, 3:], use_cache=False).logits[0]
        masked = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, 3:]
        cached = model(input_ids=ids, position_ids=positions, use_cache=True).logits[0, 3:]
        ones = model(input_ids=ids, position_ids=positions, attention_mask=torch.ones_like(ids), use_cache=False).logits[0, 3:]
    torch.testing.assert_close(masked, alone, atol=1e-5, rtol=0)
    assert (cached - alone).abs().max() > 1e-3 and (ones - alone).abs().max() > 1e-3


def test_a_model_that_lets_packed_documents_see_each_other_is_named():
    from transformers import LlamaForCausalLM

    class AllOnesMask(LlamaForCausalLM):  # what a model that always builds its own padding mask does
        def forward(self, input_ids=None, **kwargs):
            kwargs["attention_mask"] = torch.ones_like(input_ids)
            return super().forward(input_ids=input_ids, **kwargs)

    problem = packed_attention_problem(_tiny_llama(AllOnesMask))
    assert problem is not None and "AllOnesMask with attention 'sdpa' lets it attend across documents" in problem
