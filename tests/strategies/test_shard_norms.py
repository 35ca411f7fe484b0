"""FSDP2's grad norm between real gloo ranks: batched all-reduces give each update's true total norm.

The route records each update's local norm² and reduces a batch of them in one all-reduce
(strategies/grad_norm.py). Each rank here trains a sharded MLP on its own data for five updates,
reducing every two, and checks every value against DTensor's own reduction of that update's
gradients (``get_total_norm(...).full_tensor()``, an all-reduce per update).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flashdist.strategies.grad_norm import ShardNorms, local_shard_norm_squared

UPDATES = 5


def _rank(rank: int, store: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    mesh = init_device_mesh("cpu", (2,))
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    norms, batched, reference, unknown_before_reduce = ShardNorms(every_updates=2), [], [], []
    reductions = 0
    original = dist.all_reduce

    def counting_all_reduce(*args, **kwargs):
        nonlocal reductions
        reductions += 1
        return original(*args, **kwargs)

    for update in range(1, UPDATES + 1):
        loss = model(torch.randn(4, 6, generator=data)).square().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        reference.append(float(torch.nn.utils.get_total_norm(grads).full_tensor()))  # DTensor's own all-reduce
        dist.all_reduce = counting_all_reduce
        batched.append(norms.add(*local_shard_norm_squared(grads)))
        dist.all_reduce = original
        unknown_before_reduce.append(batched[-1].value is None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    dist.all_reduce = counting_all_reduce
    norms.reduce()  # the end of the fit: the last, odd update
    norms.reduce()  # nothing pending: no collective
    dist.all_reduce = original
    result = {"batched": [n.value for n in batched], "reference": reference, "reductions": reductions,
              "unknown_before_reduce": unknown_before_reduce}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    # Drop every holder of the process group first, so destroy_process_group really destroys it:
    # its destructor waits for gloo's worker threads. Left alive, a worker thread can still be
    # freeing FSDP2's last all-gather (a tensor Python released) when the interpreter finalizes;
    # it then takes the GIL and the process aborts ("terminate called without an active
    # exception", pytorch/pytorch#190489; a quarter of the runs on 2 cores).
    del model, optimizer, grads, mesh
    gc.collect()
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_batched_shard_norms_equal_dtensors_own_reduction_with_one_all_reduce_per_batch(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["batched"] == pytest.approx(rank["reference"], rel=1e-6)
        assert rank["reductions"] == 3, "updates 1-2, 3-4 and 5: three all-reduces for five updates"
        assert rank["unknown_before_reduce"] == [True, False, True, False, True]
    assert ranks[0]["batched"] == ranks[1]["batched"], "every rank knows the same total norms"
    assert len(set(ranks[0]["batched"])) == UPDATES, "a different norm at every update (the data differ)"
