"""CausalLM at construction: backbones, every spec form, LoRA through peft, FLOPs per token."""

from __future__ import annotations

import pytest
import torch

from flashdist import ConfigError
from flashdist.strategies.base import StrategyRoute
from flashdist.text import CausalLM
from tests.text.lm_fixtures import save_tiny_llama, train_word_tokenizer


def test_a_local_save_pretrained_directory_is_the_backbone_with_its_tokenizer_and_weights(tmp_path):
    model_dir = save_tiny_llama(tmp_path / "m", vocab_size=40)
    train_word_tokenizer(["a b c"], model_dir)
    from transformers import AutoModelForCausalLM

    lm = CausalLM(backbone=str(model_dir))
    saved = AutoModelForCausalLM.from_pretrained(model_dir)
    assert lm.tokenizer_source == str(model_dir)
    assert lm.backbone_info.max_positions == 64 and lm.backbone_info.embedding_rows == 40
    assert torch.equal(lm.model.model.embed_tokens.weight, saved.model.embed_tokens.weight)  # the saved weights, not a fresh init
    assert lm.model.training


def test_a_missing_or_wrong_directory_names_what_is_there(tmp_path):
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "weights.pt").write_text("")
    with pytest.raises(ConfigError, match=r"has no config\.json; it holds \['weights\.pt'\]"):
        CausalLM(backbone=str(tmp_path / "my-model"))
    with pytest.raises(ConfigError, match=r"neither a built-in config nor an existing directory \(.* holds \['my-model'\]\).*'tiny-llama'"):
        CausalLM(backbone=str(tmp_path / "my-modle"))


@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-gpt2"])
def test_built_in_tiny_configs_have_a_few_hundred_thousand_parameters(backbone):
    lm = CausalLM(backbone=backbone)
    assert 100_000 < sum(p.numel() for p in lm.model.parameters()) < 500_000
    assert lm.tokenizer_source == "byte-level"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"optimizer": "adam", "learning_rate": 1e-3},
        {"optimizer": ("adamw", {"betas": (0.9, 0.95)}), "weight_decay": 0.1},
        {"optimizer": torch.optim.SGD, "learning_rate": 0.1},
        {"lr_scheduler": ("cosine_schedule_with_warmup", {"num_warmup_steps": "2e4tok"})},
        {"lr_scheduler": ("reducelronplateau", {"mode": "min"}, {"monitor": "val_loss"})},
    ],
)
def test_every_spec_form_is_accepted_at_construction(kwargs):
    CausalLM(backbone="tiny-llama", **kwargs)


def test_specs_are_validated_at_construction():
    with pytest.raises(ConfigError, match="did you mean"):
        CausalLM(backbone="tiny-llama", optimizer="adamm")
    with pytest.raises(ConfigError, match="an exponent is accepted for token counts only"):
        CausalLM(backbone="tiny-llama", lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": "2e6"}))


def test_recipes_registered_on_causal_lm_are_usable_by_name():
    @CausalLM.lr_schedulers
    def lm_test_constant(optimizer):
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)

    assert "lm_test_constant" in CausalLM.available_lr_schedulers()
    CausalLM(backbone="tiny-llama", lr_scheduler="lm_test_constant")


def test_lora_trains_adapters_only_and_keeps_the_no_decay_rule():
    lm = CausalLM(backbone="tiny-llama", weight_decay=0.01, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    groups = StrategyRoute(strategy=None).param_groups(lm, 0.01)
    names = {id(p): n for n, p in lm.named_parameters()}
    grouped = [[names[id(p)] for p in g["params"]] for g in groups]
    assert all("lora_" in name for group in grouped for name in group)  # frozen base weights never reach the optimizer
    assert sum(len(g) for g in grouped) == 4 * 2 * 2  # 4 blocks × (q, v) × (A, B)
    assert [g["weight_decay"] for g in groups] == [0.01]  # LoRA matrices are 2-D: decayed, like the HF Trainer does
    assert lm.trainable_parameters() == 4 * 2 * (64 * 4 + 4 * 64) - 4 * (4 * 64 - 4 * 32)  # q: 64→64, v: 64→32 (2 kv heads)


def test_lora_target_modules_matching_nothing_lists_module_names():
    with pytest.raises(ConfigError, match=r"\['query'\] match no module.*'down_proj'.*'q_proj'"):
        CausalLM(backbone="tiny-llama", lora={"target_modules": ["q_proj", "query"]})
    with pytest.raises(ConfigError, match="unknown key"):
        CausalLM(backbone="tiny-llama", lora={"rank": 4})


def test_flops_per_token_is_six_times_parameters_plus_attention():
    lm = CausalLM(backbone="tiny-llama")
    params = sum(p.numel() for p in lm.model.parameters())  # tied embeddings: counted once
    layers, heads, head_dim, seq = 4, 4, 16, 128
    assert lm.flops_per_token(seq) == 6 * params + 12 * layers * heads * head_dim * seq
    lora = CausalLM(backbone="tiny-llama", lora={"target_modules": ["q_proj"]})
    assert lora.flops_per_token(seq) == lm.flops_per_token(seq)  # model FLOPs: adapters excluded


def test_lora_under_fsdp1_flattening_is_refused_before_launch():
    from lightning.pytorch.strategies import FSDPStrategy

    from flashdist.strategies.checks import check_fsdp1_groups

    lora = CausalLM(backbone="tiny-llama", lora={"target_modules": ["q_proj"]})
    with pytest.raises(ConfigError, match=r"frozen and trainable parameters.*use_orig_params=False.*HINT: use strategy='fsdp'"):
        check_fsdp1_groups(FSDPStrategy(use_orig_params=False), lora)
    check_fsdp1_groups(FSDPStrategy(), lora)  # use_orig_params=True (Lightning's default) keeps each parameter
