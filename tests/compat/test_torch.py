"""Each torch internal or copied rule flashdist relies on (flashdist/compat/torch.py), tested by name."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DistributedSampler

from flashdist.compat import torch as compat
from flashdist.compat.torch import dynamo_frame_compiles


def test_fused_kernel_devices_is_torchs_list_and_cpu_has_fused_adamw():
    devices = compat.fused_kernel_devices()
    assert "cuda" in devices and "cpu" in devices
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)  # what the list promises on cpu


@pytest.mark.parametrize("size", [1, 7, 16, 33])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_sampler_global_order_is_what_its_ranks_are_dealt(size, replicas, shuffle, drop_last):
    if drop_last and size < replicas:
        pytest.skip("no sample for some rank")
    ranks = [DistributedSampler(range(size), num_replicas=replicas, rank=r, shuffle=shuffle, seed=3, drop_last=drop_last)
             for r in range(replicas)]
    for sampler in ranks:
        sampler.set_epoch(2)
    order = compat.distributed_sampler_global_order(ranks[0])
    for rank, sampler in enumerate(ranks):
        assert order[rank::replicas] == list(sampler)


def test_lambda_lr_state_has_lambda_lrs_keys_and_loads_into_one():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    lambda_lr = LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    ours = compat.lambda_lr_state(4, [0.1], [0.02])
    assert set(ours) <= set(lambda_lr.state_dict())
    lambda_lr.load_state_dict(ours)
    assert (lambda_lr.last_epoch, lambda_lr.base_lrs, lambda_lr.get_last_lr()) == (4, [0.1], [0.02])

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


def test_foreach_norm_returns_each_tensors_2_norm():
    import torch

    from flashdist.compat.torch import foreach_norms

    tensors = [torch.randn(3, 5), torch.randn(7), torch.zeros(2)]
    assert [float(n) for n in foreach_norms(tensors)] == [float(torch.linalg.vector_norm(t)) for t in tensors]
