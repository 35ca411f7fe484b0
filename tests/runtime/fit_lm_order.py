"""One-process CausalLM fits that record every trained row, run as forked children of one launch.

``python tests/runtime/fit_lm_order.py FITS.json``: FITS.json is a list of fit configs, fitted one
after the other, each in a child process forked from this one (which has only imported: the
imports are paid once for the whole list). A child that is told to ``kill_after_micro_batches``
sends itself ``SIGKILL`` there, a real ``kill -9`` in the middle of an epoch; the next config,
``ckpt_path: "auto"`` on the same ``root``, is then a new process resuming from what the killed
one left on disk, as a restarted job is. Every child's end (exit code or signal) is appended to
``<root>/ends.jsonl``; a fit that raises writes ``<root>/error.txt``.

Config keys: root, model_dir, data_file, cache_dir (the tokenized cache, shared by the fits of one
data form), packing, batch_size, num_workers, accumulate_grad_batches, max_epochs, max_steps,
checkpoint_every_n_steps, ckpt_path, attempt (recorded with each row), kill_after_micro_batches
(count, on this fit), stream ({"num_workers": N}: the packed rows as an ``IterableDataset`` with
``state_dict`` read through torchdata's ``StatefulDataLoader``, endless, in a permutation per pass
drawn from (seed, pass)), stream_without_state (the same rows through a plain ``DataLoader`` and an
iterable without ``state_dict``).

Each trained micro-batch appends to ``<root>/rows.jsonl``: attempt, epoch, optimizer step, the rows
(a fingerprint of each row's tokens: the tokens themselves, padding left out) and the loss; at the
end the model's weights go to ``<root>/weights.pt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path

import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import flashdist  # noqa: E402
from flashdist.data import LanguageModelingDataModule  # noqa: E402
from flashdist.text import CausalLM  # noqa: E402


def fingerprints(batch: dict) -> list[str]:
    """One short hash per row of its tokens (without padding: a padded row's mask says which count)."""
    mask = batch.get("attention_mask")
    rows = []
    for i, ids in enumerate(batch["input_ids"]):
        kept = ids if mask is None else ids[mask[i].bool()]
        rows.append(hashlib.sha1(kept.numpy().tobytes()).hexdigest()[:12])
    return rows


class Record(Callback):
    def __init__(self, config: dict):
        self.config, self.root = config, Path(config["root"])
        self.micro_batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        line = {"attempt": self.config.get("attempt", 0), "epoch": trainer.current_epoch, "step": trainer.global_step,
                "rows": fingerprints(batch), "loss": float(loss)}
        with (self.root / "rows.jsonl").open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        self.micro_batches += 1
        if self.micro_batches == self.config.get("kill_after_micro_batches"):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, trainer, pl_module):
        torch.save({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}, self.root / "weights.pt")


class RowStream(IterableDataset):
    """The packed rows, endlessly, each pass in a permutation drawn from (seed, pass); its position is its state.

    Without a length (as a real stream): Lightning then prefetches a batch ahead of the one it trains.
    With workers, worker w reads positions w, w + W, ... of each pass.
    """

    def __init__(self, rows, seed: int = 0):
        self.rows, self.seed = rows, seed
        self.position = 0  # rows handed out by this copy (one per worker under workers)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n = len(self.rows)
        while True:
            index = self.position * workers + worker
            epoch, at = divmod(index, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
            self.position += 1
            yield self.rows[int(order[at])]

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


class RowStreamWithoutState(RowStream):
    """The same rows, starting over at every ``iter()`` as a generator does, and no ``state_dict``."""

    state_dict = None  # type: ignore[assignment]
    load_state_dict = None  # type: ignore[assignment]

    def __iter__(self):
        self.position = 0
        return super().__iter__()


def _data(config: dict) -> LanguageModelingDataModule:
    return LanguageModelingDataModule(
        train_files=config["data_file"], prompt_field="prompt", completion_field="completion", seq_length=32,
        packing=config.get("packing", True), batch_size=config.get("batch_size", 4), num_workers=config.get("num_workers", 0),
        cache_dir=config["cache_dir"], tokenizer=config["model_dir"],
    )


def _stream_loader(config: dict, data: LanguageModelingDataModule):
    data.prepare_data()
    data.setup("fit")
    if config.get("stream_without_state"):
        return DataLoader(RowStreamWithoutState(data.train_set), batch_size=config.get("batch_size", 4))
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(RowStream(data.train_set), batch_size=config.get("batch_size", 4),
                              num_workers=config["stream"].get("num_workers", 0))


def main(config: dict) -> None:
    seed_everything(0, workers=True)
    root = Path(config["root"])
    lm = CausalLM(backbone=config["model_dir"], learning_rate=5e-3, weight_decay=0.01, export=False,
                  lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 2}))
    every = config["checkpoint_every_n_steps"]
    callbacks = [Record(config), ModelCheckpoint(dirpath=str(root / "checkpoints"), every_n_train_steps=every, save_top_k=-1)]
    trainer = flashdist.Trainer(
        default_root_dir=str(root), accelerator="cpu", devices=1, max_epochs=config.get("max_epochs", -1),
        max_steps=config.get("max_steps", -1), accumulate_grad_batches=config.get("accumulate_grad_batches", 1),
        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, num_sanity_val_steps=0,
    )
    data = _data(config)
    if config.get("stream") or config.get("stream_without_state"):
        trainer.fit(lm, train_dataloaders=_stream_loader(config, data), ckpt_path=config.get("ckpt_path"))
    else:
        trainer.fit(lm, datamodule=data, ckpt_path=config.get("ckpt_path"))


def _in_child(config: dict) -> int:
    root = Path(config["root"])
    try:
        main(config)
        return 0
    except BaseException:  # noqa: BLE001 - recorded for the test to read
        (root / "error.txt").write_text(traceback.format_exc())
        return 1


def run_all(configs: list[dict]) -> None:
    for config in configs:
        root = Path(config["root"])
        root.mkdir(parents=True, exist_ok=True)
        print(f"fit_lm_order: {root.name} (attempt {config.get('attempt', 0)})", file=sys.stderr, flush=True)
        sys.stdout.flush()  # nothing buffered here is written again by the child
        pid = os.fork()  # this process ran no torch op yet: its child starts clean, as a new process would
        if pid == 0:  # the child: one fit, then out without the parent's exit handlers
            code = _in_child(config)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        end = {"attempt": config.get("attempt", 0), "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
               "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
        with (root / "ends.jsonl").open("a") as handle:
            handle.write(json.dumps(end) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One thread: on a loaded 2-core machine torch's second thread made a step 20 times slower
    # (0.4 s per backward of this 28k-parameter model, measured); the fits compare bitwise
    # against each other, all under the same setting.
    torch.set_num_threads(1)
    run_all(json.loads(Path(sys.argv[1]).read_text()))
