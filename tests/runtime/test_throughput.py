"""Throughput arithmetic: MFU and the peak table (the fit-level numbers are checked in the LM fits)."""

from __future__ import annotations

import pytest
import torch

from flashdist.runtime.throughput import mfu, peak_flops_for, peak_flops_for_name


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
     ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12), ("AMD Instinct MI300X", 1307e12), ("Tesla T4", None)],
)
def test_peak_table_matches_device_names(name, peak):
    assert peak_flops_for_name(name) == peak


def test_mfu_is_achieved_over_peak_flops_and_unknown_without_a_peak():
    # 8 devices at 989 TFLOP/s; 1e5 tokens/s of a model with 6e9 FLOPs per token → 6e14 / 7.912e15
    assert mfu(1e5, 6e9, 989e12, 8) == pytest.approx(6e14 / (8 * 989e12))
    assert mfu(1e5, 6e9, None, 8) is None
    assert peak_flops_for(torch.device("cpu")) is None
