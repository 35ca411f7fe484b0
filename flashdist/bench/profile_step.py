"""Where a harness's training step goes: cProfile over one fit of a bench workload, per step.

    python -m flashdist.bench.profile_step lightning --steps 1000 [--workload mlp|gpt2] [--sort cumulative] [--top 40]
    python -m torch.distributed.run --standalone --nproc_per_node=2 -m flashdist.bench.profile_step lightning_ds --steps 300

Runs one harness of :mod:`flashdist.bench.harnesses` (``torch``, ``lightning``,
``lightning_nolog``, ``flashdist``, ``hf``; under torchrun also ``deepspeed``, ``lightning_ds``,
``lightning_ds_nolog``, ``fsdp2``, ``lightning_fsdp2``, ``lightning_fsdp2_nolog``, and ``flashdist``
under ``--strategy``) in this process, one
thread, after an untimed warm-up fit, with cProfile on, and prints (rank 0) the functions by
time with the calls and milliseconds *per training step*. cProfile charges every Python call, so Python-heavy code
looks slower than it is: read it for where the time goes, and take the size of an effect from
the paired ``flashdist bench fit`` (e.g. ``lightning_nolog`` against ``lightning``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import torch


def profile(harness_name: str, steps: int, workload_name: str = "mlp", strategy: str = "auto", clock: str = "wall") -> pstats.Stats:
    """Profile one ``steps``-step fit of ``harness_name`` on the workload (this rank); return the stats."""
    from flashdist.bench.fit_worker import _quiet
    from flashdist.bench.harnesses import harness
    from flashdist.bench.workloads import workload

    _quiet()
    # as in bench fit: one thread, and OMP_NUM_THREADS set so Lightning does not pick its own count
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    mlp = workload(workload_name)
    fit = harness(harness_name, strategy)
    fit(mlp, mlp.samples(50 * mlp.batch_size * world), 50, world, "/tmp/flashdist-profile-warmup", lambda: None)  # imports, caches
    # the process CPU clock: under load (or waiting in a collective) the wall clock charges time the step did not spend
    profiler = cProfile.Profile(time.process_time) if clock == "cpu" else cProfile.Profile()
    profiler.enable()
    fit(mlp, mlp.samples(steps * mlp.batch_size * world), steps, world, "/tmp/flashdist-profile", lambda: None)
    profiler.disable()
    return pstats.Stats(profiler)


def print_per_step(stats: pstats.Stats, steps: int, sort: str, top: int) -> None:
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((cumtime if sort == "cumulative" else tottime, calls, tottime, cumtime, f"{filename}:{line}({name})"))
    rows.sort(reverse=True)
    print(f"{'calls/step':>10} {'own ms/step':>11} {'cum ms/step':>11}  function")
    for _, calls, tottime, cumtime, where in rows[:top]:
        print(f"{calls / steps:10.1f} {1e3 * tottime / steps:11.3f} {1e3 * cumtime / steps:11.3f}  {where}")


# What a step is made of, by the function that owns it: (label, path suffix[:line], function name), cumulative.
# The DeepSpeed engine's three calls are the work every DeepSpeed harness does; the rest is the harness.
MECHANISMS: tuple[tuple[str, str, str], ...] = (
    ("DeepSpeed engine forward", "deepspeed/runtime/engine.py", "forward"),
    ("DeepSpeed engine backward", "deepspeed/runtime/engine.py", "backward"),
    ("DeepSpeed engine step", "deepspeed/runtime/engine.py", "step"),
    ("FSDP2: all-gather before forward", "fsdp/_fully_shard/_fsdp_state.py", "_pre_forward"),
    ("FSDP2: reduce-scatter after backward", "fsdp/_fully_shard/_fsdp_state.py", "_root_post_backward_final_callback"),
    ("autograd backward", "torch/autograd/__init__.py", "backward"),
    ("flashdist: preemption stop vote", "flashdist/runtime/preemption.py", "exchange"),
    ("flashdist: grad-norm monitor", "flashdist/runtime/grad_norm.py", "on_before_optimizer_step"),
    ("flashdist: grad-norm monitor, batch end", "flashdist/runtime/grad_norm.py", "on_train_batch_end"),
    ("flashdist: throughput, batch end", "flashdist/runtime/throughput.py", "on_train_batch_end"),
    ("Lightning: self.log", "lightning/pytorch/core/module.py", "log"),
    ("Lightning: logger connector, per batch", "logger_connector/logger_connector.py", "update_train_step_metrics"),
    ("Lightning: per-step SIGTERM broadcast", "loops/training_epoch_loop.py", "_broadcast_sigterm_tensor"),
    ("Lightning: callback hooks", "lightning/pytorch/trainer/call.py", "_call_callback_hooks"),
    ("Lightning: LightningModule hooks", "lightning/pytorch/trainer/call.py", "_call_lightning_module_hook"),
    ("Lightning: hook signature inspection", "lightning/pytorch/utilities/signature_utils.py", "is_param_in_hook_signature"),
    ("Lightning: nn.Module.__setattr__", "torch/nn/modules/module.py", "__setattr__"),
    ("Lightning: batch fetch (fetcher)", "lightning/pytorch/loops/fetchers.py:121", "__next__"),
    ("DataLoader iteration", "torch/utils/data/dataloader.py:720", "__next__"),
    ("Lightning: batch_to_device", "lightning/pytorch/strategies/strategy.py", "batch_to_device"),
    ("Lightning: progress/profiler contexts", "lightning/pytorch/profilers/profiler.py", "profile"),
    ("all of a step: Lightning's epoch-loop advance", "loops/training_epoch_loop.py", "advance"),
    ("all of a step: the hand-written DeepSpeed loop", "flashdist/bench/harnesses.py", "hand_deepspeed"),
    ("all of a step: the hand-written FSDP2 loop", "flashdist/bench/harnesses.py", "hand_fsdp2"),
)


def mechanism_table(stats: pstats.Stats, steps: int) -> list[tuple[str, float, float]]:
    """(label, calls per step, cumulative ms per step) for each of :data:`MECHANISMS` found in the stats."""
    rows = []
    for label, where, function in MECHANISMS:
        suffix, _, line = where.partition(":")
        calls, cumulative = 0, 0.0
        for (filename, lineno, name), (_, ncalls, _, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
            if name == function and filename.endswith(suffix) and (not line or int(line) == lineno):
                calls, cumulative = calls + ncalls, cumulative + cumtime
        if calls:
            rows.append((label, calls / steps, 1e3 * cumulative / steps))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashdist.bench.profile_step", description=__doc__.splitlines()[0])
    parser.add_argument("harness", choices=("torch", "lightning", "lightning_nolog", "flashdist", "hf", "deepspeed", "lightning_ds",
                                            "lightning_ds_nolog", "fsdp2", "lightning_fsdp2", "lightning_fsdp2_nolog"))
    parser.add_argument("--strategy", default="auto", help="flashdist's strategy under torchrun, e.g. deepspeed_stage_2")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workload", choices=("mlp", "gpt2"), default="mlp")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: charge process CPU time (cProfile's timer)")
    parser.add_argument("--dump", default=None, help="also write rank 0's pstats here (for pstats / snakeviz)")
    parser.add_argument("--sort", choices=("cumulative", "tottime"), default="cumulative")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    stats = profile(args.harness, args.steps, args.workload, args.strategy, args.clock)
    if os.environ.get("RANK", "0") == "0":
        print_per_step(stats, args.steps, args.sort, args.top)
        print(f"\n{'calls/step':>10} {'cum ms/step':>11}  mechanism (cumulative, overlapping)")
        for label, calls, cumulative in mechanism_table(stats, args.steps):
            print(f"{calls:10.1f} {cumulative:11.3f}  {label}")
        if args.dump:
            stats.dump_stats(args.dump)
    return 0


if __name__ == "__main__":
    sys.exit(main())
