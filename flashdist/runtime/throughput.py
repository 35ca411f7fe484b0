"""Tokens per second and MFU for language-model fits: in the progress bar, the logs and summary.json.

Active when the LightningModule can count the tokens of a batch (``count_tokens(batch)``,
as :class:`~flashdist.text.CausalLM` does); a no-op otherwise. Nothing is communicated per
step: each rank counts its own tokens; the progress bar's global rate is the local rate ×
the data-parallel size (exact with packed data, where every rank's batch has the same
shape), and at the end of training one all-reduce gives the exact ``tokens_seen``.

MFU = tokens/s × FLOPs per token ÷ (peak FLOP/s per device × devices), with FLOPs per token
from the model (``flops_per_token(seq_length)``: 6 × parameters + the attention term, as
PaLM's appendix B and torchtitan count it) and the peak from ``peak_flops=`` or the table
below (dense bf16, from the vendors' datasheets). Unknown peak (any CPU): ``mfu`` is null.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import Callback

from flashdist.runtime.fit_run import FitRun
from flashdist.runtime.planning import data_parallel_size

# (substring of torch.cuda.get_device_name(), dense bf16 FLOP/s per device); first match wins,
# so the more specific names come first ("H100 PCIe" before "H100", "L40S" before "L4").
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("MI300X", 1307e12),
    ("MI250X", 383e12),
)


def peak_flops_for(device: torch.device) -> float | None:
    """The dense bf16 peak of ``device`` from the table, or None (CPU, or a GPU not listed).

    Example:
        >>> peak_flops_for(torch.device("cpu")) is None
        True
    """
    if device.type != "cuda":
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))


def peak_flops_for_name(name: str) -> float | None:
    """Example:
    >>> peak_flops_for_name("NVIDIA H100 80GB HBM3"), peak_flops_for_name("NVIDIA L40S")
    (989000000000000.0, 362000000000000.0)
    """
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops_per_device: float | None, devices: int) -> float | None:
    """Model FLOPs utilization, or None without a peak.

    Example:
        >>> round(mfu(1e5, 6e9, 989e12, 8), 4)
        0.0758
    """
    if peak_flops_per_device is None or peak_flops_per_device <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak_flops_per_device * devices)


class Throughput(Callback):
    """Counts tokens, shows ``tokens_per_second`` (and ``mfu``) while training, reports them at the end."""

    def __init__(self, run: FitRun, peak_flops: float | None = None):
        if peak_flops is not None and (isinstance(peak_flops, bool) or not isinstance(peak_flops, (int, float)) or peak_flops <= 0):
            from flashdist.errors import ConfigError

            raise ConfigError(f"peak_flops={peak_flops!r} must be a positive number (FLOP/s per device).", hint="peak_flops: 989.0e12")
        self.peak_flops = float(peak_flops) if peak_flops is not None else None
        self._reset()
        run.summary_sources.append(self.summary_fields)  # summary.json's throughput fields, read by the ledger

    def _reset(self) -> None:
        self.active = False
        self.tokens_seen: int | None = None
        self.tokens_per_second: float | None = None
        self.flops_per_token: float | None = None
        self.peak: float | None = None
        self.mfu: float | None = None
        self._local: Any = 0
        self._restored_local = 0
        self._resumed_with = 0
        self._window_tokens: Any = 0
        self._window_started = 0.0
        self._started = 0.0
        self._scale = 1
        self._devices = 1

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.__dict__.pop("on_train_batch_end", None)  # re-armed for every fit

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        restored = self._restored_local
        self._reset()
        self.active = callable(getattr(pl_module, "count_tokens", None))
        if not self.active:
            self.on_train_batch_end = None  # Lightning's dispatch skips a hook that is not callable
            return
        self._local = self._resumed_with = restored
        self._scale = data_parallel_size(trainer)
        self._devices = trainer.world_size
        self.peak = self.peak_flops if self.peak_flops is not None else peak_flops_for(pl_module.device)
        self._started = self._window_started = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        tokens = pl_module.count_tokens(batch)
        self._local = self._local + tokens
        self._window_tokens = self._window_tokens + tokens
        if self.flops_per_token is None and hasattr(pl_module, "flops_per_token"):
            self.flops_per_token = float(pl_module.flops_per_token(int(batch["input_ids"].shape[-1])))
        if (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0:
            now = time.perf_counter()
            rate = float(self._window_tokens) * self._scale / max(now - self._window_started, 1e-9)
            self._window_tokens, self._window_started = 0, now
            pl_module.log("tokens_per_second", rate, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)
            value = mfu(rate, self.flops_per_token or 0.0, self.peak, self._devices)
            if value is not None:
                pl_module.log("mfu", value, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.active:
            return
        elapsed = time.perf_counter() - self._started
        # [all tokens, tokens restored from a checkpoint]: the rate counts this run's tokens only
        # (a resumed run trained the restored ones before elapsed started).
        local = torch.tensor([float(self._local), float(self._resumed_with)], dtype=torch.float64, device=pl_module.device)
        total, restored = trainer.strategy.reduce(local, reduce_op="sum").tolist()  # every rank is here: train end
        self.tokens_seen = int(round(total))
        self.tokens_per_second = (total - restored) / elapsed if elapsed > 0 else None
        if self.tokens_per_second is not None and self.flops_per_token is not None:
            self.mfu = mfu(self.tokens_per_second, self.flops_per_token, self.peak, self._devices)

    def summary_fields(self) -> dict[str, Any]:
        """summary.json's throughput fields (null where unknown); no communication."""
        return {
            "tokens_seen": self.tokens_seen,
            "tokens_per_second": round(self.tokens_per_second, 1) if self.tokens_per_second is not None else None,
            "mfu": self.mfu,
            "flops_per_token": self.flops_per_token,
            "peak_flops_per_device": self.peak,
        }

    # A resumed run keeps counting from the checkpoint (this rank's count; with packing every rank's is equal).
    def state_dict(self) -> dict[str, Any]:
        return {"local_tokens": int(self._local)} if self.active else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_local = int(state.get("local_tokens", 0))
