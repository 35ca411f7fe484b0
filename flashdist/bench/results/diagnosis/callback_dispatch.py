"""Diagnosis script (not part of the package API): Per-step cost of flashdist's extra callbacks in Lightning's hook dispatch, measured inside a real fit."""
import gc
import logging
import os
import random
import time
import warnings
warnings.filterwarnings("ignore")
import copy

import torch
torch.set_num_threads(1)
for n in ("lightning.pytorch","lightning.fabric","lightning"): logging.getLogger(n).setLevel(logging.ERROR)
from lightning.pytorch import Callback
from lightning.pytorch.trainer.call import _call_callback_hooks
from flashdist.bench import fit_worker as w
import flashdist

STEP_HOOKS = ["on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_train_batch_end"]

def lean(callback):
    """Set the per-step hooks a callback does not override to None: Lightning's dispatch skips non-callables."""
    for hook in STEP_HOOKS:
        if getattr(type(callback), hook) is getattr(Callback, hook):
            setattr(callback, hook, None)
    return callback

class Probe(Callback):
    def on_train_end(self, trainer, pl_module):
        ours = [c for c in trainer.callbacks if c is not self]
        opt = trainer.optimizers[0]
        batch = (torch.zeros(8, 16), torch.zeros(8, dtype=torch.long)); loss = torch.zeros(())
        args = {"on_train_batch_start": (batch, 0), "on_before_zero_grad": (opt,), "on_before_backward": (loss,), "on_after_backward": (),
                "on_before_optimizer_step": (opt,), "on_train_batch_end": (None, batch, 0)}
        def one_step():
            for hook in STEP_HOOKS:
                _call_callback_hooks(trainer, hook, *args[hook])
        lean_ours = [lean(copy.copy(c)) for c in ours]
        sets = {"none": [], "flashdist": ours, "flashdist_lean": lean_ours,
                "flashdist_no_preempt_allreduce": [c for c in ours if type(c).__name__ != "Preemption"]}
        rng = random.Random(0); res = {k: [] for k in sets}
        saved = list(trainer.callbacks)
        for r in range(int(os.environ.get("REPS", "40"))):
            order = list(sets); rng.shuffle(order)
            for k in order:
                trainer.callbacks[:] = sets[k]
                gc.disable(); t0 = time.thread_time_ns(); w0 = time.perf_counter_ns()
                for _ in range(300): one_step()
                t1 = time.thread_time_ns(); w1 = time.perf_counter_ns(); gc.enable()
                res[k].append(((t1 - t0) / 300 / 1e3, (w1 - w0) / 300 / 1e3))
        trainer.callbacks[:] = saved
        if trainer.is_global_zero:
            for k, v in res.items():
                cpu = sorted(a for a, _ in v); wall = sorted(b for _, b in v)
                print(f"DISPATCH world={trainer.world_size} {k:32s} cpu µs/step median {cpu[len(cpu)//2]:7.2f} (IQR {cpu[3*len(cpu)//4]-cpu[len(cpu)//4]:.2f})  wall median {wall[len(wall)//2]:7.2f}", flush=True)

world = int(os.environ.get("WORLD_SIZE", "1"))
cfg = dict(devices=world, strategy="auto" if world == 1 else "ddp", seed=0, hidden=32, warmup_steps=5, batch_size=8)
total = 30
x = torch.randn(total * 8 * world, 16); y = (x[:, :4].sum(1) > 0).long()
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
orig = flashdist.Trainer.__init__
def patched(self, *a, **k):
    orig(self, *a, **k); self.callbacks.append(Probe())
flashdist.Trainer.__init__ = patched
w.one_fit("flashdist:fast", cfg, loader, total)
