"""The plan printout's parameters row, against peft's own count (a tiny Llama made in the test, LoRA on it)."""

from __future__ import annotations


def test_the_parameters_row_counts_what_peft_counts_as_trainable_and_total():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from flashdist.runtime.report import parameter_text

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainable, total = model.get_nb_trainable_parameters()
    assert 0 < trainable < total
    assert parameter_text(model) == f"{trainable:,} trainable / {total:,} total ({trainable / total:.2%})"
