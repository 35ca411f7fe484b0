"""CausalLM on 2 CPU processes under ddp, ZeRO-2, ZeRO-3 and FSDP2, LoRA on in two, plus an interrupted
and resumed ZeRO-2 fit on node-local caches: one torchrun runs every fit, each checked apart.

Sizes: a save_pretrained tiny Llama and a WordLevel tokenizer trained here; prompt/completion
pairs packed into blocks of 32 tokens; batch 2 per rank × 2 ranks → 128 tokens per optimizer
step; max_tokens=1000 → ceil(1000 / 128) = 8 steps; warmup "300tok" → ceil(300 / 128) = 3 steps.

All fits run one after the other in the same two processes (tests/scripts/fit_lm.py with a list
of configs under torchrun), so the imports, the process start and the process group are paid
once. Under torchrun every rank starts at once: rank 0 tokenizes in prepare_data while rank 1
waits at Lightning's barrier. (Under Lightning's own launcher the launching process tokenizes
before the other rank exists: ``before_launch``, tested in one process in test_causal_lm_fit.py.)

The resumed pair: a full ZeRO-2 fine-tune whose rank 0 sends itself SIGUSR1 after step 1 (a real
preemption: the ranks agree on a step, write one checkpoint and exit 75), then the same fit with
``ckpt_path="auto"``. Each rank's data cache is on its own "disk" (``<root>/local-disk-rank<R>``),
so rank 1 cannot see the cache rank 0 built and must tokenize for itself, with a warning.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch

from flashdist.data.lm_tokenize import read_tokenize_log
from tests.fitting import read_lr_csv, run_in_one_torchrun
from tests.scripts.fit_lm import PROBE_IDS
from tests.data.chat_fixtures import chat_backbone
from tests.text.lm_fixtures import local_backbone
from tests.text.token_weighting_fixtures import STEPS as TOKEN_WEIGHTED_STEPS
from tests.text.token_weighting_fixtures import assert_same_fit, make_parts, reference_fit, split_config

pytestmark = [pytest.mark.usefixtures("deepspeed_ops_built"), pytest.mark.multiprocess]

TOKENS_PER_STEP = 2 * 2 * 32
MAX_TOKENS, WARMUP_TOKENS = 1000, 300
STEPS, WARMUP_STEPS = math.ceil(MAX_TOKENS / TOKENS_PER_STEP), math.ceil(WARMUP_TOKENS / TOKENS_PER_STEP)
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}

CASES = {
    "ddp": dict(strategy="ddp", lora=None),
    "deepspeed_stage_2": dict(strategy="deepspeed_stage_2", lora=LORA),
    "deepspeed_stage_3": dict(strategy="deepspeed_stage_3", lora=None, checkpoint=True),
    "fsdp": dict(strategy="fsdp", lora={**LORA, "merge_on_export": True}, checkpoint=True),
}
# Full ZeRO-2 fine-tuning (the shipped config's strategy), preempted after step 1, then resumed.
RESUMED = dict(strategy="deepspeed_stage_2", lora=None, checkpoint=True, cache_dir_per_rank=True)
SIGNAL_AT_STEP = 1
# Conversations (configs/data/make_chats.py) through the tokenizer's ChatML template, assistant turns
# learned, packed with per-conversation position_ids, under ZeRO-2 + LoRA.
# The fsdp case again with activation checkpointing (FSDP2 shards the decoder blocks that
# transformers checkpoints): the trained model must be the same.
CHECKPOINTED = dict(CASES["fsdp"], checkpoint=False, activation_checkpointing=True)
CHAT = dict(strategy="deepspeed_stage_2", lora=LORA, data_fields={"messages_field": "messages"})
# The token-weighted loss (test_token_weighting.py): (2 processes, batch 2, accumulation 2) on padded pairs of uneven
# completion lengths, plain SGD, one epoch (per rank windows of 2, 2 and a short 1), under each strategy.
TOKEN_WEIGHTED = ("ddp", "deepspeed_stage_2", "fsdp")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lm")
    model_dir, data_file = local_backbone(root, count=120)
    chat_model_dir, chat_file = chat_backbone(root / "chat-parts")
    common = {"model_dir": str(model_dir), "data_file": str(data_file), "max_tokens": MAX_TOKENS, "warmup": f"{WARMUP_TOKENS}tok"}
    configs = [{**common, **case, "root": str(root / name)} for name, case in CASES.items()]
    configs += [{**common, **RESUMED, "root": str(root / "resumed"), "signal_at_step": SIGNAL_AT_STEP},
                {**common, **RESUMED, "root": str(root / "resumed"), "ckpt_path": "auto"},
                {**common, **CHECKPOINTED, "root": str(root / "fsdp_checkpointed"),  # validated too: no sync_dist hint
                 "data_fields": {"prompt_field": "prompt", "completion_field": "completion", "val_files": str(data_file)}, "val_check_interval": 4},
                {**common, **CHAT, "root": str(root / "chat"), "model_dir": str(chat_model_dir), "data_file": str(chat_file)}]
    token_parts = make_parts(root / "token-weighting")
    configs += [split_config(token_parts, "2rx_b2xk2", root / f"token-weighted-{strategy}", strategy) for strategy in TOKEN_WEIGHTED]
    proc = run_in_one_torchrun("fit_lm.py", configs, timeout_s=600)
    return {"root": root, "model_dir": model_dir, "output": proc.stdout + proc.stderr, "token_parts": token_parts}


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor(PROBE_IDS)).logits


def _export_from_checkpoint(ckpt: Path, out: Path) -> torch.Tensor:
    """`flashdist export --ckpt` (a DeepSpeed directory, an FSDP2 DCP directory), reloaded by from_pretrained."""
    from transformers import AutoModelForCausalLM

    from flashdist.cli.export import run as export_run

    assert export_run(["--ckpt", str(ckpt), "--out", str(out)]) == 0
    return _logits(AutoModelForCausalLM.from_pretrained(out))


def test_a_chat_fit_on_two_ranks_learns_the_assistant_turns_of_packed_conversations(runs):
    import datasets

    root = runs["root"] / "chat"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == STEPS and summary["world_size"] == 2
    cache = root / "data_cache" / read_tokenize_log(root / "data_cache")[0]["cache"]
    rows = datasets.load_from_disk(str(cache))["train"]
    stats = json.loads((cache / "stats.json").read_text())["train"]
    assert stats["documents"] == 80 and stats["dropped_nothing_learned"] == 0
    learned = sum(label != -100 for row in rows["labels"] for label in row)
    assert 0 < learned == stats["learned_tokens"] < sum(len(row) for row in rows["labels"]) // 2  # assistant turns only
    assert all(row[0] == 0 for row in rows["position_ids"]) and sum(p == 0 for row in rows["position_ids"] for p in row) > len(rows)


@pytest.mark.parametrize("strategy", list(CASES))
def test_causal_lm_fit_under_each_strategy_ledger_tokens_warmup_export_and_one_tokenization(runs, strategy):
    root, model_dir = runs["root"] / strategy, runs["model_dir"]
    summary = json.loads((root / "summary.json").read_text())

    # The ledger, in steps and in tokens.
    assert summary["world_size"] == 2
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == STEPS
    assert summary["global_batch_size"] == 4
    assert summary["tokens_seen"] == summary["optimizer_steps"] * summary["global_batch_size"] * 32
    assert summary["tokens_per_second"] > 0 and summary["mfu"] is None  # no known peak on CPU

    # The token-given warmup lands where the arithmetic says: the LR rises for WARMUP_STEPS updates, then decays.
    assert summary["planned_warmup_steps"] == WARMUP_STEPS
    lrs = [row[0] for row in read_lr_csv(root)]
    assert lrs.index(max(lrs)) == WARMUP_STEPS and lrs[0] == 0.0

    # Tokenized once, by rank 0.
    assert [record["rank"] for record in read_tokenize_log(root / "data_cache")] == [0]

    # The export reloads with the trained model's logits.
    from transformers import AutoModelForCausalLM

    exported = root / "hf_model"
    kind = json.loads((exported / "flashdist_export.json").read_text())["kind"]
    if strategy == "deepspeed_stage_2":
        from peft import PeftModel

        assert kind == "lora-adapter" and (exported / "adapter_model.safetensors").exists()
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), exported)
    else:
        assert kind == ("merged-lora-model" if strategy == "fsdp" else "model")
        reloaded = AutoModelForCausalLM.from_pretrained(exported)
    got = _logits(reloaded)
    torch.testing.assert_close(got, torch.load(root / "logits.pt"), atol=1e-5, rtol=0)

    if CASES[strategy].get("checkpoint"):  # `flashdist export` from the sharded checkpoint (a ZeRO-3 directory, an FSDP2 DCP directory)
        torch.testing.assert_close(_export_from_checkpoint(root / "checkpoints" / "last.ckpt", root / "from_ckpt"), got, atol=1e-5, rtol=0)

    extra = json.loads((root / "lm_extra.json").read_text())
    if strategy == "fsdp":  # decoder blocks first, then the root
        assert {"model.base_model.model.model.layers.0", "model.base_model.model.model.layers.1", "model"} <= set(extra["sharded_modules"])


def test_activation_checkpointing_under_fsdp2_with_lora_trains_the_same_model(runs):
    root = runs["root"] / "fsdp_checkpointed"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["optimizer_steps"] == STEPS
    assert 0 < json.loads((root / "lm_extra.json").read_text())["val_loss"] < 20  # it was validated (every 4 steps)
    torch.testing.assert_close(torch.load(root / "logits.pt"), torch.load(runs["root"] / "fsdp" / "logits.pt"), atol=1e-6, rtol=0)
    # val_loss is reduced over the ranks by CausalLM itself: Lightning's sync_dist hint stays off the console.
    assert "sync_dist=True" not in runs["output"]


def test_an_interrupted_and_resumed_zero2_fit_counts_the_tokens_of_an_uninterrupted_one(runs):
    root = runs["root"] / "resumed"
    # The first attempt: preempted mid-run, both ranks exited 75, one checkpoint.
    assert [json.loads((root / f"exit-rank{r}.json").read_text())["code"] for r in (0, 1)] == [75, 75]
    marker = f"flashdist: rank 0: preempted (signal {int(signal.SIGUSR1)}); saved "
    line = next(line for line in runs["output"].splitlines() if marker in line)
    stopped_at = int(line.rsplit("at step ", 1)[1])
    assert SIGNAL_AT_STEP <= stopped_at < STEPS, line  # a real interruption, before the end

    # The resumed attempt (ckpt_path="auto" found the preemption checkpoint): the ledger of one
    # whole run, and exactly the tokens of the uninterrupted runs.
    summary = json.loads((root / "summary.json").read_text())
    assert Path(summary["resumed_from"]).name == f"preempted-step={stopped_at}.ckpt", summary["resumed_from"]
    assert summary["completed"] and not summary["preempted"]
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == summary["scheduler_steps"] == STEPS
    uninterrupted = [json.loads((runs["root"] / name / "summary.json").read_text())["tokens_seen"] for name in CASES]
    assert summary["tokens_seen"] == STEPS * TOKENS_PER_STEP == uninterrupted[0] and len(set(uninterrupted)) == 1
    assert not list((root / "checkpoints").glob("preempted-*"))  # removed once the run completed

    # hf_model/ of the resumed fit, and `flashdist export` from its ZeRO-2 checkpoint directory, give its logits.
    from transformers import AutoModelForCausalLM

    trained = torch.load(root / "logits.pt")
    assert json.loads((root / "hf_model" / "flashdist_export.json").read_text())["kind"] == "model"
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(root / "hf_model")), trained, atol=1e-5, rtol=0)
    ckpt = root / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir() and (ckpt / "checkpoint").is_dir()  # DeepSpeed's sharded layout, not a file
    torch.testing.assert_close(_export_from_checkpoint(ckpt, root / "from_ckpt"), trained, atol=1e-5, rtol=0)


def test_a_rank_that_cannot_see_the_cache_tokenizes_for_itself_with_a_warning(runs):
    root = runs["root"] / "resumed"
    # Each rank's own disk: rank 0 tokenized into its cache in prepare_data; rank 1 found nothing
    # at the path and tokenized into its own, saying so. The resumed attempt reused both caches.
    logs = {r: read_tokenize_log(root / f"local-disk-rank{r}" / "cache") for r in (0, 1)}
    assert [record["rank"] for record in logs[0]] == [0] and [record["rank"] for record in logs[1]] == [1]
    assert logs[0][0]["cache"] == logs[1][0]["cache"] and logs[0][0]["train_sequences"] == logs[1][0]["train_sequences"]
    warning = f"flashdist: rank 1: {root / 'local-disk-rank1' / 'cache' / logs[1][0]['cache']} is not visible here; tokenizing on this rank too"
    assert runs["output"].count(warning) == 1, runs["output"][-4000:]
    assert "flashdist: rank 0: " + str(root / "local-disk-rank0") not in runs["output"]  # rank 0 sees its own cache
    assert not (root / "data_cache").exists()


@pytest.fixture(scope="module")
def token_reference(runs) -> tuple[list[float], dict]:
    parts = runs["token_parts"]
    return reference_fit(parts["model_dir"], Path(parts["cache_dir"]), TOKEN_WEIGHTED_STEPS["2rx_b2xk2"])


@pytest.mark.parametrize("strategy", TOKEN_WEIGHTED)
def test_two_ranks_accumulating_uneven_micro_batches_make_the_one_batch_update_and_train_loss(runs, token_reference, strategy):
    # The mean over every learned token of the step's 8 rows, whatever the split: the same weights and per-step
    # train_loss (summed over the ranks) as one batch of 8 on one process, to 1e-6.
    losses, weights = token_reference
    assert_same_fit(runs["root"] / f"token-weighted-{strategy}", losses, weights)
