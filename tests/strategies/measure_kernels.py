"""Measure the optimizer kernels the FSDP route chooses between (not a test).

``python tests/strategies/measure_kernels.py [millions_of_params]``: AdamW step time on CPU for
torch's for-loop, foreach and fused implementations (and DeepSpeedCPUAdam when built), over
one flat set of 2-D parameters. Warm-up steps first; median of timed steps; ratios against
the foreach baseline measured in the same run.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch


def step_ms(make, params, warmup=3, timed=10) -> float:
    optimizer = make(params)
    for p in params:
        p.grad = torch.randn_like(p)
    for _ in range(warmup):
        optimizer.step()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        optimizer.step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(millions: float) -> None:
    torch.manual_seed(0)
    side = 1024
    count = max(1, round(millions * 1e6 / (side * side)))
    params = [torch.nn.Parameter(torch.randn(side, side)) for _ in range(count)]
    kernels = {
        "foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
        "for-loop": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=False),
        "fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
    }
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        kernels["DeepSpeedCPUAdam"] = lambda ps: DeepSpeedCPUAdam(ps, lr=1e-3, adamw_mode=True, weight_decay=0.01)
    except Exception as error:  # noqa: BLE001 - the measurement goes on without it
        print(f"DeepSpeedCPUAdam unavailable: {error}")
    print(f"AdamW step on {count * side * side / 1e6:.1f}M params, {torch.get_num_threads()} threads, median of 10 after 3 warm-up")
    results = {name: step_ms(make, params) for name, make in kernels.items()}
    for name, ms in results.items():
        print(f"  {name:18s} {ms:8.1f} ms/step  ({results['foreach'] / ms:.2f}x foreach)")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
