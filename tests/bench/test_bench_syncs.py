"""flashdist adds no host sync per training step over plain Lightning, on ddp, deepspeed_stage_2 and fsdp.

Counted by ``flashdist bench syncs``'s own machinery (torch's profiler, ``aten::_local_scalar_dense``),
at 1 process and at 2 (each count in one torchrun launch, every strategy's fits in it).
"""

from __future__ import annotations

import pytest

from flashdist.bench import syncs


@pytest.mark.parametrize("devices", [1, 2])
def test_flashdist_adds_no_host_sync_per_step(devices):
    result = syncs.run(devices=[devices], steps=4, warmup_steps=3, options=["plain"], hand=False, timeout_s=600)
    rows = result["excess"]
    assert sorted(row["strategy"] for row in rows) == sorted(syncs.STRATEGIES)
    for row in rows:
        assert row["lightning"] > 0, row  # the counter sees syncs (torch's AdamW reads its step count)
        assert row["excess"] <= 0, row
    for record in result["records"]:
        if record["harness"] == "flashdist":
            ours = [where for where in record["sources"] if where.split(" <- ")[0].startswith("flashdist/")]
            assert not ours, (record["strategy"], ours)


def test_source_line_names_the_reader_and_its_caller():
    stack = ["aten::item", "<built-in method item of Tensor object>", "torch/_tensor.py(1100): __float__",
             "/x/site-packages/lightning_utilities/core/apply_func.py(29): apply_to_collection",
             "/work/flashdist/runtime/x.py(12): f", "/x/site-packages/lightning/y.py(3): g"]
    assert syncs.source_line(stack) == "lightning_utilities/core/apply_func.py(29): apply_to_collection <- flashdist/runtime/x.py(12): f"


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_flashdist_adds_no_sync_and_the_sync_debug_mode_agrees():
    result = syncs.run(devices=[1], strategies=["ddp"], steps=4, warmup_steps=3, options=["plain"], timeout_s=600, device="cuda")
    (row,) = result["excess"]
    assert result["device"] == "cuda" and row["excess"] <= 0, row
    by_harness = {record["harness"]: record for record in result["records"]}
    assert by_harness["flashdist"]["cuda_syncs_per_step"] <= by_harness["lightning"]["cuda_syncs_per_step"], by_harness
    ours = [where for where in by_harness["flashdist"]["cuda_sync_sources"] if where.startswith("flashdist/")]
    assert not ours, ours
