"""Every harness ``flashdist bench fit`` compares, each training one workload for one epoch.

A harness is ``run(workload, samples, total_steps, world, root, stamp)``: it builds a fresh
model (seeded), trains one epoch, and calls ``stamp()`` at the end of every training step (after
the optimizer and scheduler). The hand-written loops are what a user writes without a harness:
the limit.

- ``torch``: model, AdamW, a LambdaLR linear warmup, ``loss.backward(); step(); zero_grad()``;
  under several processes the model is wrapped in ``DistributedDataParallel``.
- ``deepspeed``: ``deepspeed.initialize`` (ZeRO-2 with Lightning's default ZeRO settings),
  ``engine.backward``, ``engine.step``.
- ``fsdp2``: ``fully_shard`` on each transformer block, then the root, on a CPU device mesh;
  AdamW with the kernel flag flashdist's FSDP2 route picks (``fused=True`` on CPU).
- ``lightning``: a plain ``lightning.Trainer`` and the LightningModule a user writes (DDP at 2 processes).
- ``lightning_ds``: the same under Lightning's own ``DeepSpeedStrategy(stage=2)`` (CPU checks lifted only);
- ``lightning_fsdp2``: the same under Lightning's own ``ModelParallelStrategy`` (data-parallel over
  every rank), sharded in ``configure_model`` as Lightning's FSDP2 guide writes it, with the
  ``fsdp2`` loop's optimizer kernel;
- ``lightning_nolog`` / ``lightning_ds_nolog`` / ``lightning_fsdp2_nolog``: without ``self.log``.
- ``flashdist``: ``flashdist.Trainer`` and ``flashdist.Task`` (its fast linear warmup).
- ``hf``: the Hugging Face ``Trainer`` (with accelerate), its own linear schedule.

All use AdamW (lr 1e-3, weight decay 0, no clipping), batch ``workload.batch_size`` per rank, no
shuffling where the harness lets one choose, and the same linear warmup (10%, ceil) to zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from flashdist.bench.device import backend, lightning_accelerator, local_device
from flashdist.bench.workloads import LEARNING_RATE, PairDataset, Workload, linear_warmup_factor, warmup_steps_of

Stamp = Callable[[], None]
HarnessFn = Callable[[Workload, tuple[torch.Tensor, torch.Tensor], int, int, str, Stamp], None]

# Lightning's DeepSpeedStrategy defaults for ZeRO-2, so the hand-written engine runs the same ZeRO settings.
LIGHTNING_ZERO2 = {
    "stage": 2,
    "contiguous_gradients": True,
    "overlap_comm": True,
    "allgather_partitions": True,
    "reduce_scatter": True,
    "allgather_bucket_size": 200_000_000,
    "reduce_bucket_size": 200_000_000,
    "sub_group_size": 1_000_000_000_000,
}


def _loader(workload: Workload, samples: tuple[torch.Tensor, torch.Tensor], world: int) -> DataLoader:
    dataset = PairDataset(*samples)
    sampler = DistributedSampler(dataset, shuffle=False) if world > 1 else None
    return DataLoader(dataset, batch_size=workload.batch_size, shuffle=False, sampler=sampler,
                      pin_memory=workload.device == "cuda")


def _batches(loader: DataLoader, device: Any) -> Any:
    """The loader's batches on ``device`` (a hand-written loop moves them itself; on the CPU nothing moves)."""
    for inputs, targets in loader:
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def _init_process_group(world: int, device: str = "cpu") -> None:
    """What a hand-written multi-process loop starts with (a harness fit earlier in the process may have done it)."""
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend(device))


def _adamw(params: Any, **kernel: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0, **kernel)


def hand_torch(workload: Workload, samples: Any, total_steps: int, world: int, root: str, stamp: Stamp) -> None:
    """The limit: a plain loop (DistributedDataParallel when ``world > 1``)."""
    device = local_device(workload.device)
    _init_process_group(world, workload.device)
    model = workload.model().to(device)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=None if device == "cpu" else [torch.device(device).index])
    optimizer = _adamw(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_factor(total_steps))
    model.train()
    for inputs, targets in _batches(_loader(workload, samples, world), device):
        loss = workload.loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stamp()


def hand_deepspeed(workload: Workload, samples: Any, total_steps: int, world: int, root: str, stamp: Stamp) -> None:
    """A hand-written DeepSpeed engine loop, ZeRO-2 (on CPU: DeepSpeed's CPU accelerator, gloo)."""
    import deepspeed

    local_device(workload.device)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend(workload.device))
    model = workload.model()
    optimizer = _adamw(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_factor(total_steps))
    config = {
        "train_micro_batch_size_per_gpu": workload.batch_size,
        "gradient_accumulation_steps": 1,
        "zero_allow_untested_optimizer": True,
        "zero_optimization": dict(LIGHTNING_ZERO2),
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    engine.train()
    for inputs, targets in _batches(_loader(workload, samples, world), engine.device):
        loss = workload.loss_fn(engine(inputs), targets)
        engine.backward(loss)
        engine.step()  # the optimizer step, zero_grad and the scheduler step
        stamp()
    engine.destroy()


def hand_fsdp2(workload: Workload, samples: Any, total_steps: int, world: int, root: str, stamp: Stamp) -> None:
    """A hand-written FSDP2 loop: ``fully_shard`` per transformer block, then the root."""
    from torch.distributed.device_mesh import init_device_mesh

    device = local_device(workload.device)
    _init_process_group(world, workload.device)
    mesh = init_device_mesh(workload.device, (world,))
    model = workload.model().to(device)
    _fully_shard_blocks_then_root(model, mesh)
    optimizer = _adamw(model.parameters(), **fsdp2_kernel_flags(workload.device))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_factor(total_steps))
    model.train()
    for inputs, targets in _batches(_loader(workload, samples, world), device):
        loss = workload.loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stamp()


def _fully_shard_blocks_then_root(model: nn.Module, mesh: Any) -> None:
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):  # where transformer blocks live (flashdist's default too)
            for block in module:
                fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def fsdp2_kernel_flags(device_type: str = "cpu") -> dict[str, bool]:
    """The ``fused`` / ``foreach`` flag flashdist's FSDP2 route picks for AdamW, for the hand loop to use too.

    Example:
        >>> fsdp2_kernel_flags("cpu")
        {'fused': True}
    """
    from flashdist.optim.specs import normalize_optimizer
    from flashdist.strategies.fsdp import choose_kernel

    _, reason = choose_kernel(normalize_optimizer(("adamw", {"weight_decay": 0.0})), device_type)
    for flag in ("fused", "foreach"):
        if reason.startswith(f"{flag}=True"):
            return {flag: True}
    return {}


# Same optimizer kernel on both sides of flashdist ÷ fsdp2 (torch's default AdamW on CPU is the per-tensor loop).
FSDP2_KERNEL = fsdp2_kernel_flags("cpu")  # on the CPU; the harnesses ask for their workload.device


def _lightning_kwargs(world: int, root: str, stamp: Stamp, strategy: Any, extras: dict[str, Any] | None = None,
                      device: str = "cpu") -> dict[str, Any]:
    """The Trainer arguments every Lightning-based harness shares; ``extras`` (bench syncs: clipping, a
    logger, the progress bar) replace or add to them."""
    from lightning.pytorch import Callback

    class StepStamp(Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            stamp()

    return dict(
        default_root_dir=root, accelerator=lightning_accelerator(device), devices=world, strategy=strategy, max_epochs=1, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[StepStamp()],
    ) | dict(extras or {})


def plain_lightning(workload: Workload, samples: Any, total_steps: int, world: int, root: str, stamp: Stamp,
                    log: bool = True, strategy: str = "ddp", extras: dict[str, Any] | None = None) -> None:
    """Plain Lightning: the LightningModule a user writes, with the hand-written loop's schedule.

    ``strategy="deepspeed"``: Lightning's own ``DeepSpeedStrategy(stage=2)`` with only the CPU
    checks lifted (flashdist's :class:`CPUDeepSpeedMixin`), none of flashdist's training changes.
    ``strategy="fsdp2"``: Lightning's own ``ModelParallelStrategy``, the module sharded in
    ``configure_model`` the way the ``fsdp2`` loop shards it, the same AdamW kernel.
    """
    from lightning.pytorch import LightningModule, Trainer

    class PlainModule(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = workload.model()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            inputs, targets = batch
            loss = workload.loss_fn(self.model(inputs), targets)
            if log:
                self.log("train_loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self) -> Any:
            optimizer = _adamw(self.parameters(), **(fsdp2_kernel_flags(workload.device) if strategy == "fsdp2" else {}))
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_factor(total_steps))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    class ShardedModule(PlainModule):  # Lightning's FSDP2 guide: shard in configure_model
        def configure_model(self) -> None:
            _fully_shard_blocks_then_root(self.model, self.device_mesh["data_parallel"])

    chosen: Any = "ddp" if world > 1 else "auto"
    module = ShardedModule() if strategy == "fsdp2" else PlainModule()
    if strategy == "deepspeed":
        chosen = plain_cpu_deepspeed() if workload.device == "cpu" else "deepspeed_stage_2"
    elif strategy == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        # Its defaults (data-parallel = nodes, tensor-parallel = devices) would shard nothing on one host.
        chosen = ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1)
    Trainer(**_lightning_kwargs(world, root, stamp, chosen, extras, workload.device)).fit(module, _loader(workload, samples, 1))


def plain_cpu_deepspeed() -> Any:
    """Lightning's ``DeepSpeedStrategy(stage=2)`` (what ``strategy="deepspeed_stage_2"`` builds) runnable on CPU."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from flashdist.strategies.deepspeed import CPUDeepSpeedMixin

    class PlainCPUDeepSpeedStrategy(CPUDeepSpeedMixin, DeepSpeedStrategy):
        pass

    return PlainCPUDeepSpeedStrategy(stage=2)


def flashdist_fit(strategy: str, one_process_strategy: str = "auto", extras: dict[str, Any] | None = None) -> HarnessFn:
    """flashdist's Trainer and Task under ``strategy`` (``one_process_strategy`` in one process): what a flashdist user writes."""

    def fit(workload: Workload, samples: Any, total_steps: int, world: int, root: str, stamp: Stamp) -> None:
        import flashdist

        task = flashdist.Task(
            workload.model(), loss_fn=workload.loss_fn, optimizer=("adamw", {"weight_decay": 0.0}),
            learning_rate=LEARNING_RATE, lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}),
        )
        chosen = strategy if world > 1 else one_process_strategy
        kwargs = _lightning_kwargs(world, root, stamp, chosen, extras, workload.device)
        flashdist.Trainer(**kwargs).fit(task, _loader(workload, samples, 1))

    return fit


def hf_trainer(workload: Workload, samples: Any, total_steps: int, world: int, root: str, stamp: Stamp) -> None:
    """The Hugging Face Trainer (accelerate underneath), DDP over gloo when ``world > 1``."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class StepStamp(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamp()

    class WithLoss(nn.Module):  # the HF Trainer reads the loss from the model's output
        def __init__(self) -> None:
            super().__init__()
            self.model = workload.model()

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": workload.loss_fn(self.model(x), labels)}

    args = TrainingArguments(
        output_dir=root, per_device_train_batch_size=workload.batch_size, num_train_epochs=1, learning_rate=LEARNING_RATE,
        weight_decay=0.0, max_grad_norm=0.0, lr_scheduler_type="linear", warmup_steps=warmup_steps_of(total_steps),
        logging_strategy="no", save_strategy="no", report_to="none", use_cpu=workload.device == "cpu", disable_tqdm=True,
        seed=0, optim="adamw_torch", dataloader_num_workers=0, ddp_backend=backend(workload.device) if world > 1 else None,
    )
    trainer = Trainer(model=WithLoss(), args=args, train_dataset=PairDataset(*samples, as_dict=True),
                      callbacks=[StepStamp()])
    trainer.train()


def harness(name: str, strategy: str) -> HarnessFn:
    """The harness function for a variant ``<strategy>/<name>``."""
    table: dict[str, HarnessFn] = {
        "torch": hand_torch, "deepspeed": hand_deepspeed, "fsdp2": hand_fsdp2, "lightning": plain_lightning,
        "hf": hf_trainer, "flashdist": flashdist_fit(strategy),
        "lightning_nolog": lambda *args: plain_lightning(*args, log=False),
        "lightning_ds": lambda *args: plain_lightning(*args, strategy="deepspeed"),
        "lightning_ds_nolog": lambda *args: plain_lightning(*args, log=False, strategy="deepspeed"),
        "lightning_fsdp2": lambda *args: plain_lightning(*args, strategy="fsdp2"),
        "lightning_fsdp2_nolog": lambda *args: plain_lightning(*args, log=False, strategy="fsdp2"),
    }
    return table[name]
