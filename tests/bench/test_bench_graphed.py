"""``bench schedulers`` on tensor LRs (flashdist/bench/graphed.py): on the CPU everything but the CUDA graph
capture (the LR tensor is written in place; its values are the float schedule's); on a GPU the capture."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from flashdist.bench import schedulers
from flashdist.bench.graphed import lr_tensor_problem, make_tensor_lr_optimizer, optimizer_step_replay
from flashdist.cli.main import main
from flashdist.optim.build import build_lr_scheduler
from flashdist.optim.fast import FAST_SCHEDULES

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _built(name: str, device: str, lr_as_tensor: bool, groups: int = 3, total_steps: int = 40):
    optimizer = make_tensor_lr_optimizer(groups, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler, _ = build_lr_scheduler(optimizer, (name, schedulers.bench_kwargs(name)), total_steps, lr_as_tensor=lr_as_tensor)
    return optimizer, scheduler


@pytest.mark.parametrize("name", sorted(FAST_SCHEDULES))
def test_a_fast_schedule_fills_the_same_lr_tensors_with_transformers_float_schedule(name):
    optimizer, scheduler = _built(name, "cpu", lr_as_tensor=True)
    held = [group["lr"] for group in optimizer.param_groups]
    # the reference: transformers' own implementation (hf:<name>) on float LRs
    reference_optimizer, reference = _built(f"hf:{name}", "cpu", lr_as_tensor=False)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
        reference_optimizer.step()
        reference.step()
        assert all(group["lr"] is lr for group, lr in zip(optimizer.param_groups, held))  # written in place
        expected = [torch.tensor(group["lr"], dtype=torch.float32).item() for group in reference_optimizer.param_groups]
        assert [lr.item() for lr in held] == expected


class SwapsTheLr(torch.optim.lr_scheduler.LRScheduler):
    """A scheduler that puts a new LR object into the group: a captured graph would never see it."""

    def __init__(self, optimizer, new_tensor: bool):
        self.new_tensor = new_tensor
        super().__init__(optimizer)

    def get_lr(self):
        return [0.5 * float(base) for base in self.base_lrs]

    def step(self, epoch=None):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 1:
            return  # the constructor's initial step: the LRs the test set stay as they are
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = torch.tensor(lr) if self.new_tensor else lr


@pytest.mark.parametrize("new_tensor", [False, True])
def test_a_scheduler_that_replaces_the_lr_object_is_not_graph_safe(new_tensor):
    optimizer, reference_optimizer = make_tensor_lr_optimizer(2, "cpu"), make_tensor_lr_optimizer(2, "cpu")
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(group["lr"])
    problem = lr_tensor_problem(optimizer, SwapsTheLr(optimizer, new_tensor), SwapsTheLr(reference_optimizer, False))
    assert problem is not None and "puts a new LR object in the param group at step 1" in problem


def test_a_scheduler_on_float_lrs_is_not_graph_safe_and_a_drifting_one_is_named():
    optimizer, scheduler = _built("linear_schedule_with_warmup", "cpu", lr_as_tensor=False)
    reference = _built("linear_schedule_with_warmup", "cpu", lr_as_tensor=False)[1]
    assert "keeps its LRs as floats" in lr_tensor_problem(optimizer, scheduler, reference)
    optimizer, scheduler = _built("linear_schedule_with_warmup", "cpu", lr_as_tensor=True)
    other = _built("cosine_schedule_with_warmup", "cpu", lr_as_tensor=False)[1]
    assert "the float schedule" in lr_tensor_problem(optimizer, scheduler, other)  # a wrong value is caught too


def test_the_cpu_tensor_lr_mode_runs_the_cuda_modes_code_without_the_capture(tmp_path, capsys):
    out = tmp_path / "sched.json"
    code = main(["bench", "schedulers", "--lr-as-tensor", "--groups", "2", "--steps", "5", "--repeats", "2", "--warmup-steps", "2",
                 "--only", "linear_schedule_with_warmup,steplr", "--json", str(out), "--plot", "none"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["lr"] == "tensor, eager step" and result["environment"]["device"] == "cpu"
    assert sorted(row["scheduler"] for row in result["results"]) == ["linear_schedule_with_warmup", "steplr"]
    assert "LRs as tensors" in capsys.readouterr().out
    optimizer = make_tensor_lr_optimizer(1, "cpu")
    assert optimizer_step_replay(optimizer, "cpu") == optimizer.step  # on the CPU: the eager step, uncaptured


def test_cuda_without_a_gpu_is_refused_before_anything_is_timed(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: nothing to refuse")
    assert main(["bench", "schedulers", "--device", "cuda", "--only", "steplr"]) == 2
    captured = capsys.readouterr()
    assert "--device cuda with 1 process(es), one GPU each, but this machine has 0 CUDA device(s)" in captured.err
    assert "HINT:" in captured.err and captured.out == ""


@pytest.mark.gpu
@needs_cuda
def test_the_captured_step_follows_the_schedule_as_the_eager_float_lr_step_does():
    graphed_optimizer, graphed = _built("linear_schedule_with_warmup", "cuda", lr_as_tensor=True, total_steps=20)
    eager_optimizer, eager = _built("linear_schedule_with_warmup", "cuda", lr_as_tensor=False, total_steps=20)
    assert graphed_optimizer.param_groups[0]["lr"].device.type == "cuda"
    replay = optimizer_step_replay(graphed_optimizer, "cuda")  # 3 warm-up steps run, then one captured (not run)
    for _ in range(3):
        eager_optimizer.step()  # the same 3 steps at the build-time LR
    for _ in range(12):
        graphed.step()
        replay()
        eager.step()
        eager_optimizer.step()
    torch.cuda.synchronize()
    graphed_params = [p for g in graphed_optimizer.param_groups for p in g["params"]]
    eager_params = [p for g in eager_optimizer.param_groups for p in g["params"]]
    for a, b in zip(graphed_params, eager_params):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
@needs_cuda
def test_bench_schedulers_under_a_cuda_graph(tmp_path):
    out = tmp_path / "sched.json"
    assert main(["bench", "schedulers", "--device", "cuda", "--groups", "1,4", "--steps", "20", "--repeats", "2",
                 "--warmup-steps", "5", "--only", "linear_schedule_with_warmup,hf:linear_schedule_with_warmup",
                 "--json", str(out), "--plot", "none"]) == 0
    result = json.loads(out.read_text())
    assert result["lr"] == "tensor, CUDA graph" and result["environment"]["device"].startswith("cuda")
    assert len(result["results"]) == 4 and all(row["us_per_step"] > 0 for row in result["results"])
