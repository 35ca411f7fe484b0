"""Which optimizer each route builds (pure decisions, plus real builds where the CPU allows)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flashdist.optim.build import build_optimizer
from flashdist.optim.specs import normalize_optimizer
from flashdist.strategies.deepspeed import choose_deepspeed_optimizer
from flashdist.strategies.fsdp import _blocks, choose_kernel

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize(
    ("spec", "offloaded", "on_cuda", "kernel"),
    [
        pytest.param("adamw", True, False, "DeepSpeedCPUAdam", id="adamw-offload"),
        pytest.param("adam", True, True, "DeepSpeedCPUAdam", id="adam-offload-cuda"),
        pytest.param("adamw", False, True, "FusedAdam", id="adamw-cuda"),
        pytest.param("adamw", False, False, None, id="adamw-cpu"),
        pytest.param("sgd", True, True, None, id="sgd"),
        pytest.param(("adamw", {"foreach": True}), True, False, None, id="kwargs-deepspeed-lacks"),
    ],
)
def test_deepspeed_routing_table(spec, offloaded, on_cuda, kernel):
    target, reason = choose_deepspeed_optimizer(normalize_optimizer(spec), offloaded=offloaded, on_cuda=on_cuda)
    if kernel is None:
        assert target is None
    else:
        assert target.keywords["kernel"] == kernel and kernel in reason
    if spec == ("adamw", {"foreach": True}):
        assert "does not take ['foreach']" in reason


@pytest.mark.parametrize(("name", "adamw_mode", "weight_decay"), [("adamw", True, 0.01), ("adam", False, 0.0)])
def test_offloaded_adam_is_deepspeed_cpu_adam_with_torchs_defaults(name, adamw_mode, weight_decay, deepspeed_ops_built):
    # Builds DeepSpeed's CPU Adam for real (JIT-compiled once, then cached in ~/.cache/torch_extensions).
    spec = normalize_optimizer(name)
    target, _ = choose_deepspeed_optimizer(spec, offloaded=True, on_cuda=False)
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(model.parameters(), spec, 1e-3, target=target)
    assert type(optimizer).__name__ == "DeepSpeedCPUAdam"
    assert optimizer.adam_w_mode is adamw_mode
    assert optimizer.defaults["weight_decay"] == weight_decay  # torch's default, not DeepSpeed's 0
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    model(torch.randn(4, 3)).sum().backward()
    before = model.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.weight)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="FusedAdam needs a CUDA device; this machine has none")
def test_fused_adam_on_cuda():
    spec = normalize_optimizer("adamw")
    target, _ = choose_deepspeed_optimizer(spec, offloaded=False, on_cuda=True)
    model = nn.Linear(3, 2).cuda()
    optimizer = build_optimizer(model.parameters(), spec, 1e-3, target=target)
    assert type(optimizer).__name__ == "FusedAdam" and optimizer.defaults["weight_decay"] == 0.01
    model(torch.randn(4, 3, device="cuda")).sum().backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("spec", "device", "flag"),
    [
        pytest.param("adamw", "cpu", {"fused": True}, id="adamw-cpu-fused"),
        # DTensor has no sharding rule for aten._fused_sgd_: a fused SGD under FSDP2 stops at its first step.
        pytest.param("sgd", "cpu", {"foreach": True}, id="sgd-cpu-foreach-no-fused-sgd-on-dtensors"),
        pytest.param("rmsprop", "cpu", {"foreach": True}, id="rmsprop-foreach"),
        pytest.param(("adamw", {"fused": False}), "cpu", None, id="user-fused-wins"),
        pytest.param(("adamw", {"foreach": False}), "cpu", None, id="user-foreach-wins"),
        pytest.param("lbfgs", "cpu", None, id="no-kernels"),
    ],
)
def test_fsdp_kernel_choice(spec, device, flag):
    target, reason = choose_kernel(normalize_optimizer(spec), device)
    if flag is None:
        assert target is None
        return
    (key, value), = flag.items()
    assert f"{key}=True" in reason
    optimizer = build_optimizer(nn.Linear(2, 2).parameters(), normalize_optimizer(spec), 0.1, target=target)
    assert optimizer.defaults[key] is value


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.norm = nn.Linear(4, 4), nn.LayerNorm(4)


def _net() -> nn.Module:
    net = nn.Module()
    net.embed = nn.Linear(4, 4)
    net.layers = nn.ModuleList([Block(), Block(), nn.Identity()])
    return net


def test_fsdp_blocks_default_to_module_list_children_with_parameters():
    assert [name for name, _ in _blocks(_net(), None)] == ["layers.0", "layers.1"]


def test_fsdp_blocks_by_class_or_class_name():
    assert [name for name, _ in _blocks(_net(), ["Block"])] == ["layers.0", "layers.1"]
    assert [name for name, _ in _blocks(_net(), [nn.LayerNorm])] == ["layers.0.norm", "layers.1.norm"]


def test_a_task_without_optimizer_lets_a_deepspeed_config_optimizer_win_and_any_typed_one_is_given():
    from flashdist import Task
    from flashdist.strategies.deepspeed_config import task_optimizer_if_given

    assert task_optimizer_if_given(Task(nn.Linear(2, 2), learning_rate=0.1)) is None
    assert Task(nn.Linear(2, 2), learning_rate=0.1).optimizer_spec.name == "Adam"  # the default still builds
    assert task_optimizer_if_given(Task(nn.Linear(2, 2), learning_rate=0.1, optimizer="sgd")).name == "SGD"
    # The default's own name, typed: the user asked for it, so a config optimizer would contradict it.
    assert task_optimizer_if_given(Task(nn.Linear(2, 2), learning_rate=0.1, optimizer="Adam")).name == "Adam"
    assert task_optimizer_if_given(Task(nn.Linear(2, 2), learning_rate=0.1, optimizer=("adam", {"amsgrad": True}))) is not None


@pytest.mark.parametrize("name", ["FusedLamb", "FusedLion"])
def test_cuda_only_deepspeed_kernels_are_refused_on_cpu(name):
    from flashdist import ConfigError

    with pytest.raises(ConfigError, match=rf"'{name}' is a CUDA kernel.*HINT"):
        choose_deepspeed_optimizer(normalize_optimizer(name), offloaded=False, on_cuda=False)


def test_fsdp1_refuses_flat_parameters_when_groups_need_names():
    from lightning.pytorch.strategies import FSDPStrategy

    from flashdist import ConfigError
    from flashdist.strategies import route_for

    route = route_for(FSDPStrategy(use_orig_params=False))
    with pytest.raises(ConfigError, match="use_orig_params=False"):
        route.param_groups(nn.Linear(2, 2), 0.01)
    assert len(route_for(FSDPStrategy()).param_groups(nn.Linear(2, 2), 0.01)) == 2


def test_a_task_subclass_passing_kwargs_still_has_the_default_optimizer():
    from flashdist.tasks.classification import ClassificationTask
    from flashdist.strategies.deepspeed_config import task_optimizer_if_given

    assert task_optimizer_if_given(ClassificationTask(nn.Linear(2, 2), num_classes=2, learning_rate=0.1)) is None
    assert task_optimizer_if_given(ClassificationTask(nn.Linear(2, 2), num_classes=2, learning_rate=0.1, optimizer="adam")) is not None

