"""FSDP2Strategy(reshard_after_forward=...): what stays gathered between a block's forward and backward.

FSDP2 swaps a module's registered parameters between the sharded DTensors and plain unsharded
tensors: after a block's forward, ``True`` (the default, ZeRO-3) has swapped them back to
DTensor shards, ``False`` (FSDP1's SHARD_GRAD_OP) keeps the gathered tensors until the backward.
One gloo rank, in this process.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from flashdist.errors import ConfigError
from flashdist.strategies.fsdp import FSDP2Strategy, shard


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(x)


class Root(nn.Module):  # the LightningModule's place: its children are the top-level units
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()


@pytest.fixture
def one_rank_mesh(tmp_path):
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("reshard_after_forward", "block_is_sharded_before_backward"), [(True, True), (False, False)])
def test_blocks_hold_their_gathered_parameters_until_backward_only_when_not_resharded(one_rank_mesh, reshard_after_forward,
                                                                                     block_is_sharded_before_backward):
    root = Root()
    names = shard(root, one_rank_mesh, None, reshard_after_forward)
    assert names == ["net.blocks.0", "net.blocks.1", "net"]
    loss = root.net(torch.ones(2, 4)).sum()
    assert isinstance(root.net.blocks[0].weight, DTensor) is block_is_sharded_before_backward
    loss.backward()
    assert isinstance(root.net.blocks[0].weight, DTensor)  # resharded once its gradient is reduced
    assert root.net.blocks[0].weight.grad is not None


@pytest.mark.parametrize("value", ["false", 0, None])
def test_reshard_after_forward_takes_a_boolean_only(value):
    with pytest.raises(ConfigError, match="reshard_after_forward"):
        FSDP2Strategy(reshard_after_forward=value)
