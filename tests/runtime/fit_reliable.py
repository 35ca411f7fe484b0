"""A small real fit with the hooks the reliability tests need (crashes, hangs, sample ids).

``python tests/runtime/fit_reliable.py '<json config>'``; under torchrun the same line after
``torchrun --nproc-per-node 2 ...``. Config keys (all optional):
  root, dataset_size (128), batch_size (8), drop_last, devices (2), strategy ("ddp"),
  accumulate_grad_batches, max_epochs (2), max_steps, optimizer, lr_scheduler, learning_rate,
  resume_policy, ckpt_path, checkpoint_every_n_steps, checkpoint_every_n_epochs, monitor,
  iterable (an IterableDataset without length), collective_timeout_s (DDP process-group timeout),
  pause_at_step {"step", "rank"}: after that optimizer step, that rank writes
    ``reached-step-<step>`` and waits until the test writes ``go`` (the test signals meanwhile),
  record_samples (write the sample ids and the loss of every trained micro-batch to samples-rank<r>.jsonl,
    and the final weights: under DDP rank 0's whole to weights-attempt<a>.pt, under a sharded strategy
    each rank's part to weights-rank<r>-attempt<a>.pt), shuffle (the train DataLoader's), num_workers,
  stateful_loader: the train loader is torchdata's StatefulDataLoader (same arguments; Lightning saves its state),
  kill_at_step {"step", "rank"}: SIGKILL that rank after that optimizer step (first attempt only),
  kill_after_micro_batches {"count", "attempt"}: SIGKILL rank 0 after its count-th micro-batch (mid-window
    under accumulation), dropout (a Dropout layer of that p: the step draws from the global RNG),
  kill_in_save_at_step {"step", "rank"}: SIGKILL that rank while it writes that step's checkpoint
    (with async_checkpoint: on the background writer, once training has gone on past that save),
  async_checkpoint: Trainer(async_checkpoint=True),
  die_at_step {"step", "rank", "delay_s"}: that rank sleeps delay_s (the others wait in the next
    collective), then SIGKILLs itself,
  hang_at_step {"step", "rank"}: that rank stops participating (sleeps) after that step.
  pause_at {"moment", "rank", "step"}: at that moment (setup, sanity, train_step, validation, save)
    that rank writes <root>/at-<moment> and waits for <root>/signalled (the test signals first),
  val_batches: validate (and sanity-check) on that many batches of the training data.
  ckpt_path_when_requeued: the ckpt_path of a requeued SLURM job (SLURM_RESTART_COUNT > 0), as a user's
    script would write ``ckpt_path="hpc" if requeued else None``.
"Attempt" = TORCHELASTIC_RESTART_COUNT, SLURM_RESTART_COUNT, or FIT_ATTEMPT from the test; hooks fire on attempt 0 (the
*_at_step ones on their spec's "attempt", 0 by default).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import flashdist
from flashdist.tasks.classification import ClassificationTask


def attempt() -> int:
    for name in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT", "FIT_ATTEMPT"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


class DropIds(nn.Module):
    """The last input column is the sample id: recorded, never learned from."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :-1]


class KillWhilePickled:
    def __init__(self, after: threading.Event | None = None):
        self.after = after

    def __reduce__(self):
        # Asynchronous: the background writer is inside torch.save, and waits until training
        # went on past this save (a synchronous save would never get there: the wait times out).
        if self.after is not None and not self.after.wait(timeout=120):
            raise AssertionError("training never went on while the checkpoint was being written")
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)


class Hooks(Callback):
    def __init__(self, config: dict):
        self.config = config
        self.root = Path(config["root"])
        self.training_went_on: threading.Event | None = None  # set once the kill's save has returned

    def _pause(self, moment: str, trainer) -> None:
        spec = self.config.get("pause_at")
        if not spec or attempt() != 0 or spec["moment"] != moment or trainer.global_rank != spec.get("rank", 0):
            return
        if getattr(self, "_paused", False) or (moment == "train_step" and trainer.global_step != spec.get("step", 1)):
            return
        self._paused = True
        (self.root / f"at-{moment}").write_text(str(trainer.global_step))
        deadline = time.monotonic() + 120
        while not (self.root / "signalled").exists():  # the test sent its signal, then wrote this file
            assert time.monotonic() < deadline, "the test never signalled"
            time.sleep(0.01)

    def setup(self, trainer, pl_module, stage):
        self._pause("setup", trainer)

    def on_sanity_check_start(self, trainer, pl_module):
        self._pause("sanity", trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._pause("validation", trainer)

    def _hits(self, key: str, trainer) -> bool:
        spec = self.config.get(key)
        return (bool(spec) and attempt() == spec.get("attempt", 0) and trainer.global_step == spec["step"]
                and trainer.global_rank == spec.get("rank", 0))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._pause("train_step", trainer)
        if self.training_went_on is not None:
            self.training_went_on.set()
        if self.config.get("record_samples"):
            ids = batch[0][:, -1].long().tolist()
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            line = {"attempt": attempt(), "epoch": trainer.current_epoch, "step": trainer.global_step, "ids": ids,
                    "loss": float(loss) if loss is not None else None}
            with (self.root / f"samples-rank{trainer.global_rank}.jsonl").open("a") as handle:
                handle.write(json.dumps(line) + "\n")
        if self._hits("pause_at_step", trainer):
            (self.root / f"reached-step-{trainer.global_step}").write_text(str(os.getpid()))
            deadline = time.monotonic() + 300
            while not (self.root / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # polling a file the test writes; signal handlers run in between
        kill = self.config.get("kill_after_micro_batches")
        self._micro_batches = getattr(self, "_micro_batches", 0) + 1
        if kill and attempt() == kill.get("attempt", 0) and trainer.global_rank == 0 and self._micro_batches == kill["count"]:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._hits("kill_at_step", trainer):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._hits("die_at_step", trainer):
            time.sleep(self.config["die_at_step"].get("delay_s", 0))  # the other rank is waiting in a collective
            print(f"rank {trainer.global_rank} dies at step {trainer.global_step}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if self._hits("hang_at_step", trainer):
            print(f"rank {trainer.global_rank} hangs at step {trainer.global_step}", file=sys.stderr, flush=True)
            time.sleep(3600)

    def on_train_end(self, trainer, pl_module):
        if not self.config.get("record_samples"):
            return
        # Whole weights on rank 0 under DDP and on one process; a sharded strategy's are not whole
        # here, so each rank writes the part it holds (equal parts on every rank = equal weights).
        if self.config.get("strategy", "ddp") == "ddp":
            if trainer.global_rank == 0:
                torch.save({k: v.detach().clone() for k, v in pl_module.state_dict().items()}, self.root / f"weights-attempt{attempt()}.pt")
            return
        torch.save(local_parameters(pl_module), self.root / f"weights-rank{trainer.global_rank}-attempt{attempt()}.pt")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._pause("save", trainer)
        if self.training_went_on is None and self._hits("kill_in_save_at_step", trainer):
            self.training_went_on = threading.Event() if self.config.get("async_checkpoint") else None
            checkpoint["kill_while_pickled"] = KillWhilePickled(self.training_went_on)
            if self.training_went_on is not None:
                # A next save in the same step (last.ckpt) waits for this one, and says so first: the
                # kill comes once it has said it (setting the event at this hook instead raced the kill
                # against the message). Otherwise the next step's end sets it.
                from flashdist.runtime.async_checkpoint import background_writer

                writer, went_on = background_writer(trainer.strategy), self.training_went_on
                say = writer._say

                def say_then_go_on(line: str) -> None:
                    say(line)
                    went_on.set()

                writer._say = say_then_go_on


def local_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """This rank's part of each parameter: ZeRO-3's partition (``ds_tensor``), FSDP2's local shard, else the whole."""
    out = {}
    for name, param in module.named_parameters():
        local = getattr(param, "ds_tensor", None)
        if local is None:
            local = param.to_local() if hasattr(param, "to_local") else param
        out[name] = local.detach().clone()
    return out


class Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def main(config: dict) -> None:
    seed_everything(config.get("seed", 0), workers=True)
    n = config.get("dataset_size", 128)
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 16, generator=generator)
    y = (x[:, :4].sum(dim=1) > 0).long()
    x = torch.cat([x, torch.arange(n, dtype=torch.float32)[:, None]], dim=1)
    dropout = [nn.Dropout(config["dropout"])] if config.get("dropout") else []
    model = nn.Sequential(DropIds(), nn.Linear(16, 32), nn.ReLU(), *dropout, nn.Linear(32, 2))
    task = ClassificationTask(
        model,
        num_classes=2,
        optimizer=config.get("optimizer", "adamw"),
        lr_scheduler=tuple(config.get("lr_scheduler", ["linear_schedule_with_warmup", {"num_warmup_steps": 0.1}])),
        learning_rate=config.get("learning_rate", 0.01),
    )
    root = config["root"]
    callbacks: list = [Hooks(config)]
    if config.get("checkpoint_every_n_steps"):
        callbacks.append(ModelCheckpoint(dirpath=f"{root}/checkpoints", every_n_train_steps=config["checkpoint_every_n_steps"], save_top_k=-1, save_last=True))
    if config.get("checkpoint_every_n_epochs"):
        callbacks.append(ModelCheckpoint(dirpath=f"{root}/checkpoints", every_n_epochs=config["checkpoint_every_n_epochs"], save_top_k=-1, save_on_train_epoch_end=True))
    if config.get("monitor"):
        callbacks.append(ModelCheckpoint(dirpath=f"{root}/checkpoints", monitor=config["monitor"]))
    strategy = config.get("strategy", "ddp")
    if config.get("collective_timeout_s") and strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(timeout=timedelta(seconds=config["collective_timeout_s"]))
    trainer = flashdist.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=config.get("devices", 2),
        strategy=strategy,
        accumulate_grad_batches=config.get("accumulate_grad_batches", 1),
        max_epochs=config.get("max_epochs", 2),
        max_steps=config.get("max_steps", -1),
        limit_val_batches=config.get("val_batches", 0),
        num_sanity_val_steps=config.get("val_batches", 0),
        logger=False,
        enable_checkpointing=len(callbacks) > 1,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        resume_policy=config.get("resume_policy", "strict"),
        async_checkpoint=config.get("async_checkpoint", False),
    )
    dataset = Stream(x, y) if config.get("iterable") else TensorDataset(x, y)
    loader_class = DataLoader
    if config.get("stateful_loader"):
        from torchdata.stateful_dataloader import StatefulDataLoader as loader_class
    loader = loader_class(dataset, batch_size=config.get("batch_size", 8), drop_last=config.get("drop_last", False),
                          shuffle=config.get("shuffle", False), num_workers=config.get("num_workers", 0))
    val_loader = DataLoader(dataset, batch_size=config.get("batch_size", 8)) if config.get("val_batches") else None
    ckpt_path = config.get("ckpt_path")
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and "ckpt_path_when_requeued" in config:
        ckpt_path = config["ckpt_path_when_requeued"]
    trainer.fit(task, loader, val_loader, ckpt_path=ckpt_path)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
