"""Declarative param groups and layer-wise LR decay, as tables (pure functions, no Trainer)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flashdist import ConfigError
from flashdist.optim.param_groups import (
    apply_lr_scales,
    layer_map,
    no_decay_names,
    normalize_grouping,
    param_groups_declarative,
)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)


def _assignment(model: nn.Module, rules, layer_decay=None, weight_decay=0.01) -> dict[str, tuple[str, float, float | None]]:
    named = list(model.named_parameters())
    grouping = normalize_grouping(rules, layer_decay)
    layers = layer_map(named, model) if layer_decay is not None else None
    groups = param_groups_declarative(named, weight_decay, no_decay_names(model), grouping, layers)
    by_id = {id(p): name for name, p in named}
    return {by_id[id(p)]: (g["name"], g["lr_scale"], g.get("weight_decay")) for g in groups for p in g["params"]}


# parameter → (group, lr scale, weight decay): first match wins, unmatched keep the defaults,
# biases/norms keep weight decay 0 unless the rule sets it.
RULES = [{"match": r"^head\.", "lr_scale": 10.0}, {"match": r"blocks\.[01]\.", "lr_scale": 0.1, "weight_decay": 0.0}, {"match": "head", "lr_scale": 99}]
EXPECTED = {
    "embed.weight": ("default", 1.0, 0.01),
    "embed.bias": ("default/no_decay", 1.0, 0.0),
    "blocks.0.weight": (r"blocks\.[01]\.", 0.1, 0.0),
    "blocks.1.bias": (r"blocks\.[01]\.", 0.1, 0.0),
    "blocks.2.weight": ("default", 1.0, 0.01),
    "norm.weight": ("default/no_decay", 1.0, 0.0),
    "head.weight": (r"^head\.", 10.0, 0.01),
    "head.bias": (r"^head\./no_decay", 10.0, 0.0),
}


@pytest.mark.parametrize(("name", "expected"), list(EXPECTED.items()))
def test_group_assignment_first_match_wins_and_composes_with_no_decay(name, expected):
    assert _assignment(Net(), RULES)[name] == expected


def test_without_a_task_weight_decay_groups_leave_the_optimizers_default():
    assignment = _assignment(Net(), [{"match": "head", "lr_scale": 2.0}], weight_decay=None)
    assert assignment["embed.weight"] == ("default", 1.0, None) and assignment["head.bias"] == ("head", 2.0, None)


# timm's param_groups_layer_decay semantics: stem 0, block i → i + 1, the rest (norm, head) last;
# scale = layer_decay ** (num_layers - 1 - layer).
@pytest.mark.parametrize(
    ("name", "layer", "scale"),
    [("embed.weight", 0, 0.5 ** 4), ("blocks.0.bias", 1, 0.5 ** 3), ("blocks.2.weight", 3, 0.5), ("norm.bias", 4, 1.0), ("head.weight", 4, 1.0)],
)
def test_layer_ids_and_scales(name, layer, scale):
    model = Net()
    layers = layer_map(list(model.named_parameters()), model)
    assert layers.num_layers == 5 and layers.blocks == "blocks"
    assert layers.ids[name] == layer and layers.scale(name, 0.5) == scale


def test_layer_decay_multiplies_a_matching_rules_scale():
    assignment = _assignment(Net(), [{"match": r"^head\.", "lr_scale": 0.1}], layer_decay=0.5)
    assert assignment["head.weight"] == (r"^head\./layer_4", 0.1, 0.01)
    assert assignment["blocks.1.weight"] == ("layer_2", 0.25, 0.01)


@pytest.mark.parametrize(
    ("build", "blocks", "first_block_param"),
    [
        pytest.param(lambda: _bert(), "bert.encoder.layer", "bert.encoder.layer.0.attention.self.query.weight", id="bert-encoder-layer"),
        pytest.param(lambda: _gpt2(), "transformer.h", "transformer.h.0.ln_1.weight", id="gpt2-h"),
    ],
)
def test_layer_ids_from_hugging_face_layer_lists(build, blocks, first_block_param):
    model = build()
    named = list(model.named_parameters())
    layers = layer_map(named, model)
    assert layers.blocks == blocks and layers.num_layers == 2 + 2
    assert layers.ids[named[0][0]] == 0  # the embeddings
    assert layers.ids[first_block_param] == 1
    assert layers.ids[named[-1][0]] == layers.num_layers - 1  # the classification head


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))


def _gpt2():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    return GPT2ForSequenceClassification(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32))


@pytest.mark.parametrize(
    ("rules", "layer_decay", "match"),
    [
        pytest.param([{"match": "x", "lr": 0.1}], None, r"unknown key\(s\) \['lr'\].*Accepted: 'match', 'lr_scale', 'weight_decay'", id="unknown-key"),
        pytest.param([{"lr_scale": 0.1}], None, "has no match", id="no-match-key"),
        pytest.param([{"match": "(", "lr_scale": 0.1}], None, "not a valid regex", id="bad-regex"),
        pytest.param([{"match": "x", "lr_scale": -1}], None, r"lr_scale=-1 must be a non-negative number", id="negative-scale"),
        pytest.param([{"match": "x", "weight_decay": "0.1"}], None, r"weight_decay='0.1' must be a non-negative number", id="string-decay"),
        pytest.param(["x"], None, "is not a mapping", id="not-a-mapping"),
        pytest.param(None, 1.5, r"layer_decay=1.5 must be in \(0, 1\]", id="layer-decay-above-1"),
    ],
)
def test_bad_group_specs_are_refused(rules, layer_decay, match):
    with pytest.raises(ConfigError, match=match):
        normalize_grouping(rules, layer_decay)


def test_a_regex_matching_no_parameter_is_refused_at_task_construction_listing_names():
    from flashdist import Task

    with pytest.raises(ConfigError, match=r"param_groups\[1\].match=.\^backbone. matches no trainable parameter.*'model.embed.weight'"):
        Task(Net(), learning_rate=0.1, param_groups=[{"match": "head", "lr_scale": 2}, {"match": "^backbone", "lr_scale": 0.1}])


def test_layer_decay_without_a_module_list_is_refused_at_task_construction():
    from flashdist import Task

    with pytest.raises(ConfigError, match="needs the model's blocks in an nn.ModuleList"):
        Task(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)), learning_rate=0.1, layer_decay=0.75)


@pytest.mark.parametrize("scheduler", ["linear_schedule_with_warmup", "hf:linear_schedule_with_warmup", "linearlr"])
def test_each_groups_lr_is_the_schedule_times_base_times_scale(scheduler):
    from flashdist.optim.build import build_lr_scheduler
    from flashdist.strategies.base import StrategyRoute

    model = Net()
    grouping = normalize_grouping([{"match": r"^head\.", "lr_scale": 10.0}], 0.5)
    optimizer = StrategyRoute(None).build_optimizer(model, __import__("flashdist").optim.specs.normalize_optimizer("sgd"), 0.1, 0.01, grouping)
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    spec = (scheduler, {"num_warmup_steps": 2}) if "warmup" in scheduler else (scheduler, {"start_factor": 0.5, "total_iters": 4})
    sched, _ = build_lr_scheduler(optimizer, spec, num_training_steps=6)
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref_sched, _ = build_lr_scheduler(reference, spec, num_training_steps=6)
    for _ in range(6):
        base = reference.param_groups[0]["lr"]
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([base * s for s in scales], rel=1e-12)
        optimizer.step(); sched.step(); reference.step(); ref_sched.step()


def test_apply_lr_scales_leaves_unscaled_groups_alone():
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))]}, {"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 0.25}], lr=0.4)
    apply_lr_scales(opt.param_groups)
    assert [g["lr"] for g in opt.param_groups] == [0.4, 0.1]
