"""The closed-form fast path against transformers' LambdaLR: equal LRs, exact resume, early refusals."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

from flashdist.errors import ConfigError
from flashdist.optim import LR_SCHEDULERS, build_lr_scheduler
from flashdist.optim.fast import FAST_SCHEDULES, ClosedFormLR

TOLERANCE = 1e-12
GROUP_LRS = (0.1, 3e-4, 1.0, 7.25e-3)  # several groups, base LRs decades apart

# (registry name, kwargs, num_training_steps): awkward warmup/total combinations per family.
CASES = [
    ("constant_schedule", {}, 50),
    ("constant_schedule_with_warmup", {"num_warmup_steps": 0}, 50),
    ("constant_schedule_with_warmup", {"num_warmup_steps": 7}, 50),
    ("linear_schedule_with_warmup", {"num_warmup_steps": 0}, 97),
    ("linear_schedule_with_warmup", {"num_warmup_steps": 13}, 97),
    ("linear_schedule_with_warmup", {"num_warmup_steps": 1}, 2),
    ("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}, 101),  # a fraction, resolved by the plan
    ("cosine_schedule_with_warmup", {"num_warmup_steps": 13}, 97),
    ("cosine_schedule_with_warmup", {"num_warmup_steps": 0, "num_cycles": 1.5}, 61),
    ("cosine_schedule_with_warmup", {"num_warmup_steps": 96}, 97),
    ("cosine_with_hard_restarts_schedule_with_warmup", {"num_warmup_steps": 5}, 97),
    ("cosine_with_hard_restarts_schedule_with_warmup", {"num_warmup_steps": 11, "num_cycles": 3}, 100),
    ("cosine_with_hard_restarts_schedule_with_warmup", {"num_warmup_steps": 0, "num_cycles": 2.5}, 64),
    ("polynomial_decay_schedule_with_warmup", {"num_warmup_steps": 9}, 83),
    ("polynomial_decay_schedule_with_warmup", {"num_warmup_steps": 0, "power": 2.5, "lr_end": 1e-4}, 83),
    ("inverse_sqrt_schedule", {"num_warmup_steps": 17}, 120),
    ("inverse_sqrt_schedule", {"num_warmup_steps": 0}, 120),
    ("inverse_sqrt_schedule", {"num_warmup_steps": 5, "timescale": 33}, 120),
    ("cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 13, "min_lr_rate": 0.1}, 97),
    ("cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 3, "min_lr": 1e-3, "num_cycles": 0.75}, 71),
    ("cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 2, "min_lr_rate": 1.0}, 30),  # the floor is the LR
    ("cosine_with_min_lr_schedule_with_warmup_lr_rate", {"num_warmup_steps": 13, "min_lr_rate": 0.05}, 97),
    ("cosine_with_min_lr_schedule_with_warmup_lr_rate", {"num_warmup_steps": 1, "min_lr": 2e-3, "warmup_lr_rate": 0.2}, 40),
    ("cosine_with_min_lr_schedule_with_warmup_lr_rate", {"num_warmup_steps": 0, "min_lr_rate": 0.0}, 40),
    ("cosine_with_min_lr_schedule_with_warmup_lr_rate", {"num_warmup_steps": 6, "min_lr_rate": 0.3, "num_cycles": 1.5,
                                                         "warmup_lr_rate": 0.0}, 48),
    ("wsd_schedule", {"num_warmup_steps": 10, "num_decay_steps": 20}, 97),
    ("wsd_schedule", {"num_warmup_steps": 7, "num_decay_steps": 31, "warmup_type": "cosine", "decay_type": "linear",
                      "min_lr_ratio": 0.1}, 90),
    ("wsd_schedule", {"num_warmup_steps": 9, "num_decay_steps": 9, "warmup_type": "1-sqrt", "decay_type": "1-sqrt"}, 50),
    ("wsd_schedule", {"num_warmup_steps": 4, "num_decay_steps": 12, "num_stable_steps": 5, "num_cycles": 1.0}, None),
]


def _optimizer(group_lrs=GROUP_LRS) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in group_lrs]
    return torch.optim.SGD(groups, lr=group_lrs[0])


def _build(name: str, kwargs: dict, total: int | None, optimizer: torch.optim.Optimizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if total is None:
            return build_lr_scheduler(optimizer, (name, kwargs))[0]
        return build_lr_scheduler(optimizer, (name, kwargs), total)[0]


def _lrs_over(scheduler, optimizer, steps: int) -> list[list[float]]:
    rows = []
    for _ in range(steps):
        rows.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return rows


def test_every_warmup_family_is_covered_and_resolves_to_the_fast_path():
    assert {name for name, _, _ in CASES} == set(FAST_SCHEDULES)
    for name in FAST_SCHEDULES:
        assert LR_SCHEDULERS.get(name).provider == "flashdist"
        assert LR_SCHEDULERS.get("hf:" + name).provider == "transformers"
        fast, hf = LR_SCHEDULERS.get(name), LR_SCHEDULERS.get("hf:" + name)
        # the step semantics the plan relies on are unchanged
        assert (fast.total_steps_arg, fast.duration_args, fast.default_interval, fast.total_steps_alternatives) == (
            hf.total_steps_arg,
            hf.duration_args,
            hf.default_interval,
            hf.total_steps_alternatives,
        )


@pytest.mark.parametrize(("name", "kwargs", "total"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fast_path_equals_transformers_at_every_step(name, kwargs, total):
    fast_opt, hf_opt = _optimizer(), _optimizer()
    fast, hf = _build(name, kwargs, total, fast_opt), _build("hf:" + name, kwargs, total, hf_opt)
    assert isinstance(fast, ClosedFormLR) and type(hf).__name__ == "LambdaLR"
    steps = (total or 50) + 15  # past the end too: the tails must agree as well
    fast_rows, hf_rows = _lrs_over(fast, fast_opt, steps), _lrs_over(hf, hf_opt, steps)
    worst = max(abs(a - b) for fr, hr in zip(fast_rows, hf_rows) for a, b in zip(fr, hr))
    assert worst <= TOLERANCE
    # stronger than the 1e-12: the same operations in the same order give the same floats
    assert fast_rows == hf_rows
    assert fast.last_epoch == hf.last_epoch == steps
    assert fast.get_last_lr() == pytest.approx(hf.get_last_lr(), abs=TOLERANCE)
    assert [g["initial_lr"] for g in fast_opt.param_groups] == list(GROUP_LRS)


@pytest.mark.parametrize("name", ["cosine_schedule_with_warmup", "wsd_schedule", "polynomial_decay_schedule_with_warmup"])
def test_state_dict_resumes_exactly(name):
    kwargs = {"num_warmup_steps": 8} | ({"num_decay_steps": 20} if name == "wsd_schedule" else {})
    reference_opt = _optimizer()
    reference = _build(name, kwargs, 60, reference_opt)
    expected = _lrs_over(reference, reference_opt, 60)

    first_opt = _optimizer()
    first = _build(name, kwargs, 60, first_opt)
    before = _lrs_over(first, first_opt, 23)
    saved_sched, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(first_opt.state_dict())

    resumed_opt = _optimizer()
    resumed = _build(name, kwargs, 60, resumed_opt)
    resumed_opt.load_state_dict(saved_opt)  # new group dicts: the scheduler must follow them
    resumed.load_state_dict(saved_sched)
    after = _lrs_over(resumed, resumed_opt, 60 - 23)
    assert before + after == expected
    assert resumed.last_epoch == 60


def test_checkpoints_cross_between_fast_and_transformers():
    """A checkpoint written by hf:<name> (the plain names' old target) resumes on the fast path, and back."""
    kwargs = {"num_warmup_steps": 5}
    hf_opt = _optimizer()
    hf = _build("hf:linear_schedule_with_warmup", kwargs, 40, hf_opt)
    _lrs_over(hf, hf_opt, 17)
    fast_opt = _optimizer()
    fast = _build("linear_schedule_with_warmup", kwargs, 40, fast_opt)
    fast_opt.load_state_dict(hf_opt.state_dict())
    fast.load_state_dict(hf.state_dict())
    assert _lrs_over(fast, fast_opt, 23) == _lrs_over(hf, hf_opt, 23)

    back_opt = _optimizer()
    back = _build("hf:linear_schedule_with_warmup", kwargs, 40, back_opt)
    back.load_state_dict(fast.state_dict())
    back_opt.load_state_dict(fast_opt.state_dict())
    assert back.last_epoch == fast.last_epoch == 40


def test_pickles_and_steps_after_unpickling():
    optimizer = _optimizer()
    scheduler = _build("cosine_schedule_with_warmup", {"num_warmup_steps": 3}, 30, optimizer)
    _lrs_over(scheduler, optimizer, 5)
    clone = pickle.loads(pickle.dumps(scheduler))
    clone.step()
    scheduler.step()
    assert clone.get_last_lr() == scheduler.get_last_lr()


def test_deprecated_step_with_epoch_jumps_like_torch():
    fast_opt, hf_opt = _optimizer(), _optimizer()
    fast = _build("linear_schedule_with_warmup", {"num_warmup_steps": 4}, 20, fast_opt)
    hf = _build("hf:linear_schedule_with_warmup", {"num_warmup_steps": 4}, 20, hf_opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast.step(11)
        hf.step(11)
    assert fast.last_epoch == hf.last_epoch == 11
    assert [g["lr"] for g in fast_opt.param_groups] == [g["lr"] for g in hf_opt.param_groups]


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("linear_schedule_with_warmup", {"num_warmup_steps": -1}, "num_warmup_steps=-1 is negative"),
        ("linear_schedule_with_warmup", {"num_warmup_steps": 200}, "num_warmup_steps=200 is not less than"),
        ("cosine_schedule_with_warmup", {"num_warmup_steps": 5, "num_cycles": "half"}, "num_cycles='half' is not a finite"),
        ("cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 5}, "needs min_lr or min_lr_rate"),
        ("cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 5, "min_lr": 1e-3, "min_lr_rate": 0.1}, "both min_lr"),
        ("cosine_with_min_lr_schedule_with_warmup", {"num_warmup_steps": 5, "min_lr": 0.5}, r"min_lr_rate=5\.0 is outside \[0, 1\]"),
        ("cosine_with_min_lr_schedule_with_warmup_lr_rate", {"num_warmup_steps": 5, "min_lr_rate": -0.1}, "outside"),
        ("polynomial_decay_schedule_with_warmup", {"num_warmup_steps": 5, "lr_end": 0.5}, "lr_end=0.5 must be smaller"),
        ("inverse_sqrt_schedule", {"num_warmup_steps": 5, "timescale": 0}, "timescale=0 is below 1"),
        ("wsd_schedule", {"num_warmup_steps": 5, "num_decay_steps": 10, "warmup_type": "exp"}, "warmup_type='exp' is not known"),
        ("wsd_schedule", {"num_warmup_steps": 50, "num_decay_steps": 60}, "exceed the training steps"),
        ("linear_schedule_with_warmup", {"num_warmup_steps": 5, "lr_as_tensor": "yes"}, "lr_as_tensor='yes' must be True"),
        ("linear_schedule_with_warmup", {"num_warmup_step": 5}, "unknown argument 'num_warmup_step'"),
    ],
)
def test_bad_kwargs_are_config_errors_at_build_time(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _build(name, kwargs, 100, _optimizer())


def test_direct_construction_refuses_unresolved_durations():
    from flashdist.optim.fast import linear_schedule_with_warmup

    with pytest.raises(ConfigError, match="is not a step count"):
        linear_schedule_with_warmup(_optimizer(), num_warmup_steps=0.1, num_training_steps=100)


def test_param_group_added_after_build_is_refused_not_ignored():
    optimizer = _optimizer()
    scheduler = _build("linear_schedule_with_warmup", {"num_warmup_steps": 2}, 10, optimizer)
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.5})
    with pytest.raises(ConfigError, match="5 param groups but the scheduler was built for 4"):
        scheduler.step()


def test_lr_as_tensor_updates_the_same_tensor_in_place():
    fast_opt, hf_opt = _optimizer(), _optimizer()
    fast = _build("cosine_schedule_with_warmup", {"num_warmup_steps": 3, "lr_as_tensor": True}, 20, fast_opt)
    hf = _build("hf:cosine_schedule_with_warmup", {"num_warmup_steps": 3}, 20, hf_opt)
    tensors = [group["lr"] for group in fast_opt.param_groups]
    pointers = [t.data_ptr() for t in tensors]
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() == 0 for t in tensors)
    for _ in range(25):
        fast_opt.step()
        hf_opt.step()
        fast.step()
        hf.step()
        assert all(g["lr"] is t for g, t in zip(fast_opt.param_groups, tensors))
        expected = torch.tensor([g["lr"] for g in hf_opt.param_groups], dtype=torch.float32)
        assert torch.equal(torch.stack(tensors), expected)  # float32 rounding of the same values
    assert [t.data_ptr() for t in tensors] == pointers


def test_lr_as_tensor_drives_an_optimizer_that_reads_a_tensor_lr():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, foreach=False)
    scheduler = _build("linear_schedule_with_warmup", {"num_warmup_steps": 2, "lr_as_tensor": True}, 10, optimizer)
    lr = optimizer.param_groups[0]["lr"]
    for _ in range(3):
        model(torch.ones(4, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.1 * (1 - 1 / 8))


@pytest.mark.gpu
def test_lr_as_tensor_under_a_cuda_graph():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = torch.nn.Linear(8, 8, device="cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, capturable=True)
    scheduler = _build("linear_schedule_with_warmup", {"num_warmup_steps": 4, "lr_as_tensor": True}, 40, optimizer)
    assert optimizer.param_groups[0]["lr"].device.type == "cuda"
    static_input = torch.randn(16, 8, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph, as CUDA graphs require
        for _ in range(3):
            optimizer.zero_grad(set_to_none=False)
            model(static_input).square().mean().backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        model(static_input).square().mean().backward()
        optimizer.step()
    lrs = []
    for _ in range(6):
        scheduler.step()  # writes the tensor the captured step reads
        graph.replay()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    assert lrs == pytest.approx([0.1 * m for m in (0.25, 0.5, 0.75, 1.0, 35 / 36, 34 / 36)], rel=1e-6)
