"""The torch internals flashdist/compat/torch.py relies on, one test per assumption."""

from __future__ import annotations

import torch

from flashdist.compat.torch import dynamo_frame_compiles


def test_dynamo_counts_one_frame_compile_per_recompile():
    torch.compiler.reset()

    @torch.compile(backend="eager", dynamic=False)
    def scaled(x: torch.Tensor, factor: int) -> torch.Tensor:
        return x * factor

    x = torch.ones(2)
    before = dynamo_frame_compiles()
    scaled(x, 2)
    assert dynamo_frame_compiles() - before == 1, "the first call compiles the frame once"
    scaled(x, 2)
    assert dynamo_frame_compiles() - before == 1, "a call the guards accept compiles nothing"
    scaled(x, 3)  # dynamic=False: a new int fails the guard on its value
    assert dynamo_frame_compiles() - before == 2, "a recompile counts one more"
    torch.compiler.reset()


def test_dynamo_recompile_limit_is_a_positive_int():
    from flashdist.compat.torch import dynamo_recompile_limit

    assert isinstance(dynamo_recompile_limit(), int) and dynamo_recompile_limit() >= 1
