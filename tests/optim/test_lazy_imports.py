"""What a flashdist process imports before it builds anything: transformers' schedules (and, through
transformers.trainer_utils, peft) only when one is built. Every rank of every fit paid for them
at start-up (0.15 s of CPU per process on the CI machine), schedule used or not."""

from __future__ import annotations

import subprocess
import sys

from flashdist.optim import LR_SCHEDULERS, build_lr_scheduler


def test_the_cli_and_the_registries_import_no_transformers_schedules_until_one_is_built():
    code = ("import sys, flashdist.cli.lightning_cli, flashdist.optim, flashdist.image, flashdist.data; "
            "print(sorted(m for m in ('transformers.optimization', 'transformers.trainer_utils', 'peft') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_transformers_schedule_still_builds_from_its_lazy_target():
    import torch
    from transformers.optimization import get_cosine_schedule_with_warmup

    entry = LR_SCHEDULERS.get("hf:cosine_schedule_with_warmup")
    assert entry.target == "transformers.optimization:get_cosine_schedule_with_warmup"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler, _ = build_lr_scheduler(optimizer, ("hf:cosine_schedule_with_warmup", {"num_warmup_steps": 2}), 10)
    reference = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 2, 10)
    lrs, expected = [], []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        expected.append(reference.get_last_lr()[0])
        optimizer.step(), scheduler.step(), reference.optimizer.step(), reference.step()
    assert lrs == expected
