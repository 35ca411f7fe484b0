"""The optimizer registry: every optimizer class in ``torch.optim``, DeepSpeed's, transformers' Adafactor,
and the optional providers of flashdist/optim/providers.py (torch_optimizer, schedulefree, bitsandbytes,
torchao) and third-party entry points.

Registered from explicit lists (no scraping of ``dir(torch.optim)``). DeepSpeed entries are
lazy strings, so ``import flashdist`` never imports DeepSpeed; building one imports it.
"""

from __future__ import annotations

import importlib.util
import inspect

import torch

from flashdist.optim.entries import OptimizerEntry
from flashdist.optim.providers import ENTRY_POINT_GROUPS, EntryPointSource, ProviderSource, default_providers
from flashdist.registry import Registry

OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer")

_TORCH_OPTIMIZERS = (
    torch.optim.Adadelta,
    torch.optim.Adafactor,
    torch.optim.Adagrad,
    torch.optim.Adam,
    torch.optim.Adamax,
    torch.optim.AdamW,
    torch.optim.ASGD,
    torch.optim.LBFGS,
    torch.optim.Muon,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Rprop,
    torch.optim.SGD,
    torch.optim.SparseAdam,
)

# DeepSpeed's optimizers that are plain torch optimizers over a param list.
_DEEPSPEED_OPTIMIZERS = (
    ("DeepSpeedCPUAdam", "deepspeed.ops.adam:DeepSpeedCPUAdam"),
    ("FusedAdam", "deepspeed.ops.adam:FusedAdam"),
    ("FusedLamb", "deepspeed.ops.lamb:FusedLamb"),
    ("DeepSpeedCPUAdagrad", "deepspeed.ops.adagrad:DeepSpeedCPUAdagrad"),
    ("DeepSpeedCPULion", "deepspeed.ops.lion:DeepSpeedCPULion"),
    ("FusedLion", "deepspeed.ops.lion:FusedLion"),
)

DEEPSPEED_AVAILABLE = importlib.util.find_spec("deepspeed") is not None

for _cls in _TORCH_OPTIMIZERS:
    _params = inspect.signature(_cls).parameters
    OPTIMIZERS.register(
        OptimizerEntry(_cls.__name__, _cls, "torch", supports_fused="fused" in _params, supports_foreach="foreach" in _params)
    )

# transformers' Adafactor (relative-step LRs), the optimizer `adafactor_schedule` is made for.
OPTIMIZERS.register(OptimizerEntry("hf:adafactor", "transformers.optimization:Adafactor", "transformers"))

if DEEPSPEED_AVAILABLE:
    for _name, _path in _DEEPSPEED_OPTIMIZERS:
        OPTIMIZERS.register(OptimizerEntry(_name, _path, "deepspeed"))

# Optional packages, listed when installed; third-party packages through their entry points.
OPTIMIZERS.add_source(ProviderSource(default_providers(cls.__name__ for cls in _TORCH_OPTIMIZERS)))
OPTIMIZERS.add_source(EntryPointSource(ENTRY_POINT_GROUPS["optimizer"], OptimizerEntry))
