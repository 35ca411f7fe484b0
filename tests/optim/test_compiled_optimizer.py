"""Trainer(compile_optimizer=True): the fast schedule's tensor LR never recompiles the compiled step.

A float LR that changes every step recompiles a compiled optimizer step (pytorch#107076,
#130467); the contrast runs in the same test. One optimizer, a Linear(2, 1), inductor on CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError, Task
from flashdist.compat.torch import dynamo_frame_compiles

STEPS = 1000


class CompileCounter(Callback):
    """The process's dynamo frame-compile count after the first step and at the end of the fit."""

    def __init__(self) -> None:
        self.after_first_step: int | None = None
        self.at_end: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.after_first_step is None:
            self.after_first_step = dynamo_frame_compiles()

    def on_train_end(self, trainer, pl_module) -> None:
        self.at_end = dynamo_frame_compiles()


@dataclass
class Fit:
    lrs: list[float]
    compiles_in_first_step: int
    recompiles_after_first_step: int
    params: list[torch.Tensor]
    optimizer: torch.optim.Optimizer


def _fit(root, steps: int, compile_optimizer, scheduler_kwargs=None, strategy: str = "auto") -> Fit:
    torch.compiler.reset()  # each fit compiles from nothing: no cache entries or limits left by another
    torch.manual_seed(0)
    inputs = torch.randn(4 * steps, 2)
    data = DataLoader(TensorDataset(inputs, inputs.sum(dim=1, keepdim=True)), batch_size=4)
    schedule = ("linear_schedule_with_warmup", {"num_warmup_steps": 0.1, **(scheduler_kwargs or {})})
    model = torch.nn.Sequential(torch.nn.Linear(2, 1)) if strategy == "fsdp" else torch.nn.Linear(2, 1)
    task = Task(model, loss_fn=torch.nn.functional.mse_loss, optimizer="adamw", learning_rate=0.01,
                lr_scheduler=schedule)
    counter = CompileCounter()
    trainer = flashdist.Trainer(max_epochs=1, accelerator="cpu", default_root_dir=root, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, compile_optimizer=compile_optimizer,
                                callbacks=[counter], strategy=strategy, devices=1)
    before = dynamo_frame_compiles()
    trainer.fit(task, data)
    lrs = [row[0] for row in trainer.ledger.lr_rows]
    assert len(lrs) == steps
    params = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in task.parameters()]  # FSDP2: DTensors
    return Fit(lrs, counter.after_first_step - before, counter.at_end - counter.after_first_step,
               [p.detach().clone() for p in params], trainer.optimizers[0])


@pytest.mark.timeout(600)
def test_compiled_optimizer_step_never_recompiles_over_1000_scheduled_steps(tmp_path):
    eager = _fit(tmp_path / "eager", STEPS, compile_optimizer=False)
    assert eager.compiles_in_first_step == 0 and eager.recompiles_after_first_step == 0

    compiled = _fit(tmp_path / "compiled", STEPS, compile_optimizer=True)  # inductor, torch.compile's default
    assert compiled.compiles_in_first_step > 0, "the optimizer step was compiled"
    assert compiled.recompiles_after_first_step == 0, "the tensor LR changed 1000 times without a recompile"
    assert max(abs(a - b) for a, b in zip(compiled.lrs, eager.lrs)) <= 1e-7
    assert len(set(compiled.lrs)) > STEPS // 2, "the schedule did move the LR"
    for got, want in zip(compiled.params, eager.params):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    # The contrast: the same fit with a float LR (lr_as_tensor=False) recompiles within 3 steps.
    with pytest.warns(UserWarning, match="recompiles the compiled optimizer step"):
        floating = _fit(tmp_path / "float", 3, compile_optimizer=True, scheduler_kwargs={"lr_as_tensor": False})
    assert floating.recompiles_after_first_step >= 1
    torch.compiler.reset()


FSDP2_STEPS = 200


def test_compiled_fused_adamw_over_fsdp2_dtensors_never_recompiles(tmp_path):
    # One-process FSDP2: the parameters are DTensors and flashdist's route picks fused AdamW, so the
    # compiled update is the fused kernel over DTensors, with the tensor LR read inside the graph.
    eager = _fit(tmp_path / "eager", FSDP2_STEPS, compile_optimizer=False, strategy="fsdp")
    compiled = _fit(tmp_path / "compiled", FSDP2_STEPS, compile_optimizer=True, strategy="fsdp")
    assert all(type(p).__name__ == "DTensor" for group in compiled.optimizer.param_groups for p in group["params"])
    assert compiled.optimizer.defaults.get("fused") is True
    assert isinstance(compiled.optimizer.param_groups[0]["lr"], torch.Tensor), "the compiled step reads a tensor LR"
    assert compiled.compiles_in_first_step > 0, "the optimizer step was compiled"
    assert compiled.recompiles_after_first_step == 0, f"the tensor LR changed {FSDP2_STEPS} times without a recompile"
    assert max(abs(a - b) for a, b in zip(compiled.lrs, eager.lrs)) <= 1e-7
    assert len(set(compiled.lrs)) > FSDP2_STEPS // 2, "the schedule did move the LR"
    for got, want in zip(compiled.params, eager.params):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.compiler.reset()


def _fused_fit(tmp_path, accelerator: str):
    task = Task(torch.nn.Linear(2, 1), loss_fn=torch.nn.functional.mse_loss, optimizer=("adamw", {"fused": True}),
                learning_rate=0.01, lr_scheduler=("cosine_schedule_with_warmup", {"num_warmup_steps": 2}))
    inputs = torch.randn(32, 2)
    trainer = flashdist.Trainer(max_epochs=1, accelerator=accelerator, devices=1, default_root_dir=tmp_path, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    before = dynamo_frame_compiles()
    trainer.fit(task, DataLoader(TensorDataset(inputs, inputs[:, :1]), batch_size=4))
    assert dynamo_frame_compiles() == before, "nothing compiled"
    return trainer, json.loads((tmp_path / "summary.json").read_text())


def test_a_fused_optimizer_on_the_cpu_keeps_exact_float_lrs(tmp_path):
    # the CPU kernel reads the LR on the host either way: a float32 tensor would only round it
    trainer, summary = _fused_fit(tmp_path, "cpu")
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert isinstance(lr, float) and lr == trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0]
    assert summary["lr"]["peak"] == 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="a fused optimizer on CUDA needs a CUDA device")
def test_a_fused_optimizer_on_cuda_gets_tensor_lrs_without_compiling(tmp_path):
    trainer, _ = _fused_fit(tmp_path, "gpu")
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dim() == 0
    assert float(lr) == pytest.approx(trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0], abs=1e-9)


@pytest.mark.parametrize(
    ("option", "strategy", "message"),
    [
        ("yes", "auto", "compile_optimizer='yes' has type str"),
        ({"bakend": "eager"}, "auto", r"has key\(s\) \['bakend'\]"),
        (True, "deepspeed_stage_2", "DeepSpeed's engine runs its own optimizer step"),
    ],
)
def test_a_bad_compile_option_is_refused_at_construction(option, strategy, message):
    with pytest.raises(ConfigError, match=message):
        flashdist.Trainer(accelerator="cpu", strategy=strategy, compile_optimizer=option, logger=False)
