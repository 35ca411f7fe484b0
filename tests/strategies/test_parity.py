"""Switching strategy= changes nothing else: grad norm, clipping, param groups and bf16 on every strategy.

One ``torchrun`` of 2 CPU processes runs every fit of this module one after the other
(tests/scripts/fit_matrix.py), so the imports and the process start are paid once.

- Parity fits (ddp, deepspeed_stage_1/2/3, fsdp), float32: the same seed, data and tiny
  model (an embedding, two blocks in an ``nn.ModuleList``, a norm, a head), SGD with
  ``gradient_clip_val`` below the gradient norm (clipping is active), ``weight_decay``, a
  ``param_groups`` rule for the head and ``layer_decay=0.5``. Step 1's pre-clip ``grad_norm``
  and the parameters after step 1 are compared with a one-process reference computed here in
  plain torch (groups, scales and decay written out by hand), and ``lr.csv``'s per-group
  columns with schedule × base LR × each group's scale at every step.
- bf16 fits: ``bf16-mixed`` and ``bf16-true`` on each strategy, 2 steps, exact ledger; and the
  stock Hugging Face ZeRO-2 / ZeRO-3 JSON files (unchanged: offloaded AdamW, WarmupLR, every
  value "auto") with ``bf16-mixed``.
- Clip by value (``gradient_clip_algorithm="value"``) on ddp and fsdp (DeepSpeed refuses it
  before launch): the parameters after step 1 equal a one-process ``clip_grad_value_`` reference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.fitting import run_in_one_torchrun

pytestmark = [pytest.mark.multiprocess, pytest.mark.usefixtures("deepspeed_ops_built")]

REPO = Path(__file__).resolve().parents[2]
STRATEGIES = ["ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp"]
PRECISIONS = ["bf16-mixed", "bf16-true"]
LEARNING_RATE, CLIP, WEIGHT_DECAY, TOTAL_STEPS, BATCH = 0.1, 0.05, 0.01, 3, 8
PARITY = dict(
    model="blocks", dataset_size=200, batch_size=BATCH, max_steps=TOTAL_STEPS, max_epochs=1, optimizer="sgd",
    lr_scheduler=["linear_schedule_with_warmup", {"num_warmup_steps": 0}], learning_rate=LEARNING_RATE,
    weight_decay=WEIGHT_DECAY, param_groups=[{"match": r"^model\.head\.", "lr_scale": 0.1, "weight_decay": 0.0}],
    layer_decay=0.5, dump_params_after_step=1, extra_trainer={"gradient_clip_val": CLIP},
)
BF16 = dict(model="blocks", dataset_size=64, batch_size=BATCH, max_steps=2, max_epochs=1, weight_decay=WEIGHT_DECAY, layer_decay=0.5)
HF_CONFIGS = ["hf_ds_config_zero2.json", "hf_ds_config_zero3.json"]
# 64 samples, batch 8, 2 ranks, accumulation 2: 4 micro-batches per rank, 2 optimizer steps.
HF_BF16 = dict(dataset_size=64, batch_size=BATCH, accumulate_grad_batches=2, max_epochs=1, optimizer=None, lr_scheduler=None,
               extra_trainer={"precision": "bf16-mixed"})
CLIP_VALUE = 0.002  # below most gradient entries at step 1: clamping is active
VALUE_STRATEGIES = ["ddp", "fsdp"]

# The groups as the rules define them, written out: (names, lr scale, weight decay), in the
# order their first parameter appears. Layers: embed 0, blocks.0 1, blocks.1 2, norm and head 3;
# scale 0.5 ** (3 - layer); the head rule multiplies by 0.1 and sets weight_decay 0.
GROUPS = [
    (["embed.weight"], 0.125, WEIGHT_DECAY), (["embed.bias"], 0.125, 0.0),
    (["blocks.0.weight"], 0.25, WEIGHT_DECAY), (["blocks.0.bias"], 0.25, 0.0),
    (["blocks.1.weight"], 0.5, WEIGHT_DECAY), (["blocks.1.bias"], 0.5, 0.0),
    (["norm.weight", "norm.bias"], 1.0, 0.0), (["head.weight", "head.bias"], 0.1, 0.0),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parity")
    configs = [dict(PARITY, strategy=s, root=str(root / s)) for s in STRATEGIES]
    configs += [dict(BF16, strategy=s, root=str(root / f"{s}-{p}"), extra_trainer={"precision": p}) for p in PRECISIONS for s in STRATEGIES]
    configs += [dict(HF_BF16, strategy=str(REPO / "tests" / "strategies" / name), root=str(root / f"{name}-bf16")) for name in HF_CONFIGS]
    by_value = {"gradient_clip_val": CLIP_VALUE, "gradient_clip_algorithm": "value"}
    configs += [dict(PARITY, strategy=s, root=str(root / f"{s}-value"), max_steps=1, extra_trainer=by_value) for s in VALUE_STRATEGIES]
    run_in_one_torchrun("fit_matrix.py", configs, timeout_s=600)
    return root


def _reference(clip: str = "norm") -> tuple[float, dict[str, torch.Tensor]]:
    """Step 1 in one process: the global batch (both ranks' first micro-batches), clip (by norm or value), SGD with the groups above."""
    from tests.scripts.fit_tiny import BlockNet

    torch.manual_seed(0)  # fit_tiny: seed_everything(0), then the model (the data has its own generator)
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(1234))
    y = (x[:, :4].sum(dim=1) > 0).long()
    model = BlockNet(32)
    # fit_tiny's loader does not shuffle, and flashdist keeps that order on every rank count
    # (data/sampler.py: rank r reads r, r + 2, ...), so both ranks' first micro-batches are the
    # first 2 × BATCH samples. (Lightning's own injected sampler would have shuffled them.)
    first = torch.arange(2 * BATCH)
    nn.functional.cross_entropy(model(x[first]), y[first]).backward()
    named = dict(model.named_parameters())
    norm = float(torch.nn.utils.get_total_norm([p.grad for p in named.values()]))
    if clip == "norm":
        torch.nn.utils.clip_grad_norm_(list(named.values()), CLIP)
    else:
        assert sum(int((p.grad.abs() > CLIP_VALUE).sum()) for p in named.values()) > 0  # clamping changes step 1
        torch.nn.utils.clip_grad_value_(list(named.values()), CLIP_VALUE)
    groups = [{"params": [named[n] for n in names], "lr": LEARNING_RATE * scale, "weight_decay": wd} for names, scale, wd in GROUPS]
    torch.optim.SGD(groups, lr=LEARNING_RATE).step()  # step 1 of linear decay without warmup: multiplier 1
    return norm, {f"model.{name}": p.detach().clone() for name, p in named.items()}


@pytest.fixture(scope="module")
def reference() -> tuple[float, dict[str, torch.Tensor]]:
    return _reference()


def _lr_rows(root: Path) -> tuple[list[str], list[list[float]]]:
    lines = (root / "lr.csv").read_text().splitlines()
    return lines[0].split(","), [[float(v) for v in line.split(",")[1:]] for line in lines[1:]]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_grad_norm_clipped_update_and_group_lrs_equal_the_one_process_reference(runs, reference, strategy):
    ref_norm, ref_params = reference
    root = runs / strategy
    summary = json.loads((root / "summary.json").read_text())
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == TOTAL_STEPS

    header, rows = _lr_rows(root)
    assert header == ["step", "lr", *[f"lr_group{i}" for i in range(1, len(GROUPS))], "grad_norm"]
    norms = [row[-1] for row in rows]
    assert ref_norm > CLIP  # clipping is active at step 1
    assert math.isclose(norms[0], ref_norm, rel_tol=1e-5), (norms[0], ref_norm)
    assert all(math.isfinite(n) and n > 0 for n in norms)

    # Each group's LR = linear schedule × base LR × its scale, at every step.
    for step, row in enumerate(rows):
        multiplier = (TOTAL_STEPS - step) / TOTAL_STEPS
        assert row[:-1] == pytest.approx([LEARNING_RATE * multiplier * scale for _, scale, _ in GROUPS], rel=1e-12)

    params = torch.load(root / "params_step1.pt")
    assert set(params) == set(ref_params)
    for name, value in params.items():
        torch.testing.assert_close(value, ref_params[name], rtol=1e-5, atol=1e-6, msg=f"{strategy}: {name} after step 1")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bf16_trains_on_every_strategy(runs, strategy, precision):
    root = runs / f"{strategy}-{precision}"
    summary = json.loads((root / "summary.json").read_text())
    extra = json.loads((root / "fit_extra.json").read_text())
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 2 and summary["completed"] is True
    assert extra["precision"] == precision
    assert all(math.isfinite(loss) for _, _, loss in extra["losses"])
    _, rows = _lr_rows(root)
    assert all(math.isfinite(row[-1]) for row in rows)  # grad_norm known under bf16 too
    if strategy.startswith("deepspeed"):
        assert extra["deepspeed_config"]["bf16"]["enabled"] is True
    if precision == "bf16-true" and not strategy.startswith("deepspeed"):
        assert extra["param_dtype"] == "torch.bfloat16"


@pytest.mark.parametrize("name", HF_CONFIGS)
def test_the_stock_hugging_face_configs_train_unchanged_in_bf16(runs, name):
    from tests.strategies.test_deepspeed_fits import _deepspeed_warmup_lrs

    root = runs / f"{name}-bf16"
    summary = json.loads((root / "summary.json").read_text())
    extra = json.loads((root / "fit_extra.json").read_text())
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 2
    assert extra["engine_global_steps"] == extra["global_step"] == 2
    filled = extra["deepspeed_config"]
    assert filled["bf16"]["enabled"] is True and filled["fp16"]["enabled"] is False  # "auto" from precision="bf16-mixed"
    assert extra["optimizer_class"] == "DeepSpeedCPUAdam" and extra["param_dtype"] == "torch.bfloat16"
    assert all(math.isfinite(loss) for _, _, loss in extra["losses"])
    _, rows = _lr_rows(root)
    assert [row[0] for row in rows] == _deepspeed_warmup_lrs(total=2, warmup=1, peak=0.01)
    assert all(math.isfinite(row[-1]) and row[-1] > 0 for row in rows)


@pytest.fixture(scope="module")
def value_reference() -> tuple[float, dict[str, torch.Tensor]]:
    return _reference(clip="value")


@pytest.mark.parametrize("strategy", VALUE_STRATEGIES)
def test_clip_by_value_gives_the_one_process_update_on_ddp_and_fsdp(runs, value_reference, strategy):
    ref_norm, ref_params = value_reference
    root = runs / f"{strategy}-value"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 1
    _, rows = _lr_rows(root)
    assert math.isclose(rows[0][-1], ref_norm, rel_tol=1e-5)  # grad_norm is the pre-clip norm
    params = torch.load(root / "params_step1.pt")
    for name, value in params.items():
        torch.testing.assert_close(value, ref_params[name], rtol=1e-5, atol=1e-6, msg=f"{strategy}: {name} after a clipped-by-value step 1")
    # And the two strategies against each other: the same clamped update, not only near a reference.
    other = torch.load(runs / f"{VALUE_STRATEGIES[0]}-value" / "params_step1.pt")
    for name, value in params.items():
        torch.testing.assert_close(value, other[name], rtol=1e-5, atol=1e-6)
