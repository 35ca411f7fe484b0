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
