"""The strategy names flashdist accepts, as data: light enough for ``flashdist plan`` (no torch, no Lightning).

:mod:`flashdist.strategies.names` resolves them to Lightning strategy objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# name → DeepSpeedStrategy kwargs (Lightning's own registrations, same meaning).
DEEPSPEED_NAMES: Mapping[str, Mapping[str, Any]] = {
    "deepspeed": {},
    "deepspeed_stage_1": {"stage": 1},
    "deepspeed_stage_2": {"stage": 2},
    "deepspeed_stage_2_offload": {"stage": 2, "offload_optimizer": True},
    "deepspeed_stage_3": {"stage": 3},
    "deepspeed_stage_3_offload": {"stage": 3, "offload_optimizer": True, "offload_parameters": True},
}
FSDP_NAMES = ("fsdp",)
FLASHDIST_NAMES: tuple[str, ...] = ("ddp", *DEEPSPEED_NAMES, *FSDP_NAMES)
