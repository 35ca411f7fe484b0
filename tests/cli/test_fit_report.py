"""The run report: nothing in the per-step hot path, and an LR plot from the ledger's rows."""

from __future__ import annotations

from lightning.pytorch import Callback

from flashdist.runtime.report import RunReport, draw_lr_curve

PER_STEP_HOOKS = [name for name in dir(Callback) if "batch" in name or name in ("on_before_optimizer_step", "on_before_backward",
                                                                               "on_after_backward", "on_before_zero_grad")]


def test_report_has_no_per_step_hooks():
    # The harness overhead target (<= 1.03x a plain Lightning fit) leaves no room for work per step.
    overridden = [name for name in PER_STEP_HOOKS if getattr(RunReport, name) is not getattr(Callback, name)]
    assert PER_STEP_HOOKS and overridden == []


def test_lr_plot_is_a_png_for_one_or_several_groups(tmp_path):
    summary = {"planned_total_steps": 4, "planned_warmup_steps": 1, "lr_scheduler_spec": "linear(num_warmup_steps=1)"}
    same = draw_lr_curve([[0.0, 0.0], [0.1, 0.1], [0.05, 0.05], [0.0, 0.0]], tmp_path / "same.png", summary)
    different = draw_lr_curve([[0.1, 0.2], [0.05, 0.1]], tmp_path / "sub" / "different.png")
    for path in (same, different):
        assert path.read_bytes()[:4] == b"\x89PNG"

