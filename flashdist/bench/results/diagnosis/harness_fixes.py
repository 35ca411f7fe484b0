"""Diagnosis script (not part of the package API): Does the harness overhead go away with (1) lean per-step hooks and (2) the preemption vote every 50 steps? (monkeypatched here, not in the package)"""
import logging
import os
import random
import sys
import warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
for n in ("lightning.pytorch","lightning.fabric","lightning"): logging.getLogger(n).setLevel(logging.ERROR)
from lightning.pytorch import Callback
from flashdist.bench import fit_worker as w
import flashdist
from flashdist.core import preemption as pre
STEP_HOOKS = ["on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_train_batch_end"]
world = int(os.environ.get("WORLD_SIZE","1")); rank = int(os.environ.get("RANK","0"))
cfg = dict(devices=world, strategy="auto" if world == 1 else "ddp", seed=0, hidden=32, warmup_steps=50, batch_size=8)
N = 451
x = torch.randn(N*8*world, 16); y = (x[:, :4].sum(1) > 0).long()
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
orig_init = flashdist.Trainer.__init__
orig_end = pre.Preemption.on_train_batch_end
mode = {"fixed": False}
def every_50(self, trainer, pl_module, outputs, batch, batch_idx):
    if trainer.global_step % 50 == 0:
        orig_end(self, trainer, pl_module, outputs, batch, batch_idx)
def patched(self, *a, **k):
    orig_init(self, *a, **k)
    if mode["fixed"]:
        for c in self.callbacks:
            if type(c).__module__.startswith("flashdist"):
                for hook in STEP_HOOKS:
                    if getattr(type(c), hook) is getattr(Callback, hook):
                        setattr(c, hook, None)
flashdist.Trainer.__init__ = patched
variants = ["lightning:none", "flashdist:none", "flashdist:none+fixes"]
rng = random.Random(0); res = {}
for r in range(int(sys.argv[1])):
    order = list(variants); rng.shuffle(order)
    for v in order:
        mode["fixed"] = v.endswith("+fixes")
        pre.Preemption.on_train_batch_end = every_50 if mode["fixed"] else orig_end
        rec = w.one_fit(v.split("+")[0], cfg, loader, N)
        if r > 0: res.setdefault(v, []).append((rec["median_us"], rec["cpu_median_us"]))
if rank == 0:
    base = res["lightning:none"]
    for v, vals in res.items():
        for i, lab in ((0, "wall"), (1, "cpu")):
            ratios = sorted(a[i] / b[i] for a, b in zip(vals, base)); m = len(ratios) // 2
            print(f"FIX world={world} {v:22s} {lab} median µs {sorted(a[i] for a in vals)[m]:8.1f} paired ratio median {ratios[m]:.3f} range [{ratios[0]:.3f}, {ratios[-1]:.3f}]", flush=True)
