"""The token-weighted loss (flashdist/text/token_weighting.py): its arithmetic as tables, and real 1-process fits.

The fits: prompt/completion pairs of three kinds whose completions learn 3 to 7 tokens, padded (one
document per row, so micro-batches learn different numbers of tokens), 20 rows, shuffled with the
run's seed, plain SGD (the update is the gradient itself: a misweighted token shows at once). The
reference is computed here without flashdist: the tiny Llama's own loss (transformers' mean over every
learned token) on all the rows of a step at once, then ``p -= lr · grad``. (1 process, batch 8)
takes 2 steps (16 rows; the loader drops the last 4); (1 process, batch 2, accumulation 4) takes 3,
the third a short window of 2 micro-batches at the epoch's end. Each must give the reference's
weights and its per-step ``train_loss`` to 1e-6. (2 processes, batch 2, accumulation 2) under ddp,
deepspeed_stage_2 and fsdp run in the LM torchrun launch (test_lm_strategies.py) against the same
reference (:func:`reference_fit`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from flashdist.text.token_weighting import gradient_scale, learned_tokens, micro_batches_left_in_window, token_loss_sum
from tests.text.token_weighting_fixtures import SGD_LR, STEPS, assert_same_fit, make_parts, reference_fit, split_config, training_rows


@pytest.mark.parametrize("batch_idx, accumulate, batches, left", [
    (0, 1, 5, 1), (0, 4, 10, 4), (1, 4, 10, 3), (3, 4, 10, 1), (8, 4, 10, 2), (9, 4, 10, 1),  # 4 + 4 + a short 2
    (2, 2, 5, 2), (4, 2, 5, 1),  # 2 + 2 + a short 1
    (6, 4, math.inf, 2),  # a loader without a length: the look-ahead finds the end
])
def test_micro_batches_left_in_window(batch_idx, accumulate, batches, left):
    assert micro_batches_left_in_window(batch_idx, accumulate, batches) == left


@pytest.mark.parametrize("accumulate, world_size, scale", [(1, 1, 1), (4, 1, 4), (2, 2, 4), (1, 8, 8)])
def test_gradient_scale_undoes_lightnings_division_and_the_rank_average(accumulate, world_size, scale):
    assert gradient_scale(accumulate, world_size) == scale


@pytest.mark.parametrize("labels, learned", [
    ([[1, 2, 3, 4]], 3),  # the first position is never a target
    ([[-100, -100, 5, 6]], 2),  # prompt masked
    ([[7, 8, -100, -100], [-100, 9, 9, -100]], 3),  # padding masked, two rows
    ([[-100, -100, -100, 4]], 1),
    ([[5, -100, -100, -100]], 0),
])
def test_learned_tokens_counts_the_shifted_targets(labels, learned):
    assert int(learned_tokens(torch.tensor(labels))) == learned


def test_token_loss_sum_is_transformers_mean_loss_times_the_learned_tokens():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    ids = torch.randint(4, 50, (3, 9))
    labels = ids.clone()
    labels[0, :4] = labels[1, :2] = labels[2, 6:] = -100
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        expected = out.loss * learned_tokens(labels)
        torch.testing.assert_close(token_loss_sum(out.logits, labels), expected, atol=1e-5, rtol=1e-6)


# ---- real fits ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_process_fits(tmp_path_factory) -> dict:
    from tests.scripts.fit_lm import main

    root = tmp_path_factory.mktemp("token-weighting")
    parts = make_parts(root)
    for name in ("b8", "b2xk4"):
        main(split_config(parts, name, root / name))
    # b2xk4 again, preempted (a real SIGUSR1: the checkpoint is written at an optimizer step, mid-epoch) and resumed:
    # the resumed fit's look-ahead starts from the sample the checkpoint recorded.
    resumed = {**split_config(parts, "b2xk4", root / "resumed"), "checkpoint": True}
    main({**resumed, "signal_at_step": 1})
    main({**resumed, "ckpt_path": "auto"})
    return {"root": root, **parts}


@pytest.mark.parametrize("name", ["b8", "b2xk4"])
def test_one_process_splits_give_the_reference_update_and_train_loss(one_process_fits, name):
    root = Path(one_process_fits["root"])
    losses, weights = reference_fit(one_process_fits["model_dir"], Path(one_process_fits["cache_dir"]), STEPS[name])
    assert_same_fit(root / name, losses, weights)


def test_a_fit_preempted_mid_epoch_and_resumed_makes_the_reference_update(one_process_fits):
    import json

    root = Path(one_process_fits["root"]) / "resumed"
    assert json.loads((root / "exit-rank0.json").read_text())["code"] == 75
    summary = json.loads((root / "summary.json").read_text())
    stopped_at = int(Path(summary["resumed_from"]).name.split("step=")[1].split(".")[0])
    assert 0 < stopped_at < STEPS["b2xk4"] and summary["optimizer_steps"] == STEPS["b2xk4"]
    losses, weights = reference_fit(one_process_fits["model_dir"], Path(one_process_fits["cache_dir"]), STEPS["b2xk4"])
    assert_same_fit(root, losses[stopped_at:], weights)  # the resumed run's metrics.csv holds the steps it ran


def test_the_splits_hold_uneven_learned_tokens_so_a_mean_per_micro_batch_would_differ(one_process_fits):
    """What the 1e-6 comparisons would catch: step 1 as 4 micro-batch means, averaged, moves the weights by more than 1e-4 elsewhere."""
    from transformers import AutoModelForCausalLM

    rows = training_rows(Path(one_process_fits["cache_dir"]))[:8]
    counts = [int(learned_tokens(torch.stack([r["labels"] for r in rows[i: i + 2]]))) for i in range(0, 8, 2)]
    assert len(set(counts)) > 1, counts

    def step_one(per_micro_batch: bool) -> dict[str, torch.Tensor]:
        model = AutoModelForCausalLM.from_pretrained(one_process_fits["model_dir"])
        model.train()
        groups = [rows[i: i + 2] for i in range(0, 8, 2)] if per_micro_batch else [rows]
        for group in groups:
            batch = {key: torch.stack([row[key] for row in group]) for key in ("input_ids", "attention_mask", "labels")}
            (model(**batch).loss / len(groups)).backward()
        return {name: SGD_LR * p.grad for name, p in model.named_parameters()}

    weighted, averaged = step_one(per_micro_batch=False), step_one(per_micro_batch=True)
    assert max(float((weighted[n] - averaged[n]).abs().max()) for n in weighted) > 1e-4
