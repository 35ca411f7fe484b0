"""What ``CausalLM(activation_checkpointing=True)`` saves and costs: memory and step time, on CPU.

``python -m flashdist.bench.activation_checkpointing [BATCH] [SEQ]`` (default 8 × 256 tokens) builds
the built-in ``tiny-llama`` twice with the same weights, checks both give the same loss, then
measures in this one process:

- the bytes autograd saves for the backward (saved-tensor hooks over one forward);
- the peak of the live bytes one step adds (torch profiler, ``profile_memory=True``: each op's own
  allocations minus its frees, in time order);
- the step time, paired: both models in every round, the order alternating, 15 rounds; the
  median of the per-round ratio on ÷ off with its interquartile range.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

ROUNDS = 15


def _step(lm: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    lm.zero_grad(set_to_none=True)
    loss = lm(batch).loss
    loss.backward()
    return loss.detach()


def peak_step_bytes(lm: Any, batch: dict[str, torch.Tensor]) -> int:
    """The most bytes one steady-state step holds above what it started with."""
    from torch.profiler import ProfilerActivity, profile

    _step(lm, batch)  # gradients allocated once before, as in a steady-state step
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        lm.zero_grad(set_to_none=False)
        lm(batch).loss.backward()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def saved_for_backward_bytes(lm: Any, batch: dict[str, torch.Tensor]) -> int:
    """What autograd keeps from the forward for the backward."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = lm(batch).loss
    loss.backward()
    return total


def main(batch_size: int = 8, seq_length: int = 256) -> None:
    from flashdist.bench.stats import load_average
    from flashdist.text import CausalLM

    torch.manual_seed(0)
    models = {False: CausalLM(backbone="tiny-llama"), True: CausalLM(backbone="tiny-llama", activation_checkpointing=True)}
    models[True].load_state_dict(models[False].state_dict())
    ids = torch.randint(4, 200, (batch_size, seq_length))
    batch = {"input_ids": ids, "labels": ids}
    torch.testing.assert_close(_step(models[True], batch), _step(models[False], batch), atol=1e-6, rtol=0)
    print(f"tiny-llama, batch {batch_size} x {seq_length} tokens, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load {load_average()}")
    for on in (False, True):
        print(f"activation_checkpointing={on}: saved for backward {saved_for_backward_bytes(models[on], batch) / 2**20:.1f} MiB, "
              f"step peak {peak_step_bytes(models[on], batch) / 2**20:.1f} MiB")
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_index in range(ROUNDS):
        for on in (False, True) if round_index % 2 else (True, False):
            start = time.perf_counter()
            _step(models[on], batch)
            times[on].append(time.perf_counter() - start)
    ratios = sorted(on / off for on, off in zip(times[True], times[False]))
    print(f"step time median: off {statistics.median(times[False]) * 1e3:.1f} ms, on {statistics.median(times[True]) * 1e3:.1f} ms; "
          f"paired ratio on/off {statistics.median(ratios):.2f} [{ratios[ROUNDS // 4]:.2f}, {ratios[3 * ROUNDS // 4]:.2f}] ({ROUNDS} rounds)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
