"""Every config in configs/ trains under ``flashdist fit``, shortened with command-line overrides.

Each is a real launch (Lightning re-executes the command for rank 1), so these are few and
short: 4 optimizer steps, 2 validation batches. The step ledger's summary.json proves the plan.
"""

from __future__ import annotations

import os

import pytest

from tests.cli.cli_runs import CONFIGS, SHORT, config_copy, finish, flashdist_fit, read_summary, warning_lines
from tests.strategies.conftest import deepspeed_ops_built  # noqa: F401 - builds DeepSpeed's JIT ops once, before the ranks race

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(300)]


def test_every_config_has_a_test():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(
        ["quickstart.yaml", "text_finetune_deepspeed.yaml", "fsdp.yaml", "multinode_slurm.yaml", "llm_finetune.yaml",
         "chat_finetune.yaml"]
    )


def test_quickstart_shows_plan_progress_and_end_table_and_writes_lr_png(tmp_path):
    config = config_copy("quickstart.yaml", tmp_path, {"num_samples: 2048": "num_samples: 512"})
    # An `srun` on PATH, as on any machine with SLURM installed, but no SLURM job.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": ""}
    proc = flashdist_fit(config, "--trainer.max_epochs=1", "--trainer.limit_val_batches=2", env=env)
    stdout, stderr = finish(proc)
    assert warning_lines(stdout, stderr) == [], stdout + stderr
    # The console carries flashdist's lines, the progress bar and real warnings; not these
    # (flashdist/compat/console.py lists each filter and why).
    for noise in ("The `srun` command is available", "💡 Tip", "isinstance(treespec, LeafSpec)"):
        assert noise not in stdout + stderr, f"{noise!r} printed:\n{stdout}\n{stderr}"
    summary = read_summary(tmp_path)
    # 512 samples, 1/8 held out: 448 / 2 ranks / 32 = 7 steps; warmup ceil(0.1 * 7) = 1.
    assert summary["world_size"] == 2 and summary["data_parallel_size"] == 2
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 7
    assert summary["planned_warmup_steps"] == 1
    assert summary["optimizer"] == "AdamW" and summary["lr"]["after_last_scheduler_step"] == pytest.approx(0.0, abs=1e-12)
    for line in ("flashdist plan", "data-parallel size", "total optimizer steps", "warmup steps",
                 "cosine_schedule_with_warmup(num_warmup_steps=1, num_training_steps=7)",
                 "flashdist run", "7 taken / 7 planned", "val_accuracy", "lr.png", "TensorBoardLogger logs", "CSVLogger logs"):
        assert line in stdout, f"{line!r} missing from:\n{stdout}"
    assert stdout.index("flashdist plan") < stdout.index("flashdist run")
    run = tmp_path / "run"
    assert (run / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "lr.csv").read_text().count("\n") == 1 + 7
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert any((run / "csv").rglob("metrics.csv"))
    assert any((run / "tensorboard").rglob("config.yaml"))  # LightningCLI saved the merged config


@pytest.mark.usefixtures("deepspeed_ops_built")
def test_text_finetune_deepspeed_zero2_plans_what_the_engine_takes(tmp_path):
    config = config_copy("text_finetune_deepspeed.yaml", tmp_path, {"num_samples: 1024": "num_samples: 160"})
    assert warning_lines(*finish(flashdist_fit(config, *SHORT))) == []
    summary = read_summary(tmp_path)
    assert summary["strategy"] == "deepspeed_stage_2"
    assert summary["accumulate_grad_batches"] == 2
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 4
    assert summary["lr_scheduler_spec"].startswith("linear_schedule_with_warmup(num_warmup_steps=1")


def test_fsdp_config_trains_with_warmup_in_epochs(tmp_path):
    config = config_copy("fsdp.yaml", tmp_path, {"num_samples: 768": "num_samples: 160"})
    # 140 train samples / 2 ranks / 16 = 5 batches; max_steps=4 ends inside epoch 1: warmup "1ep" would
    # be longer than the run, so shorten by epochs instead and keep the config's 1ep warmup.
    output = finish(flashdist_fit(config, "--trainer.max_epochs=2", "--trainer.limit_val_batches=2", "--trainer.num_sanity_val_steps=0"))
    assert warning_lines(*output) == [], "the tiny GPT-2's own config must not warn (its bos/eos once did)"
    summary = read_summary(tmp_path)
    assert summary["strategy"] == "fsdp"
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 10
    assert summary["planned_warmup_steps"] == 5


def test_multinode_slurm_config_runs_as_two_nodes_of_one_process(tmp_path):
    # Two "nodes" on one host: Lightning's own NODE_RANK/MASTER_* contract, as a launcher would set it.
    config = config_copy("multinode_slurm.yaml", tmp_path)
    from tests.cli.cli_runs import free_port

    port = str(free_port())
    nodes = [flashdist_fit(config, *SHORT, env={"NODE_RANK": str(rank), "MASTER_PORT": port}) for rank in (0, 1)]
    for proc in nodes:
        assert warning_lines(*finish(proc)) == []
    summary = read_summary(tmp_path)
    assert summary["num_nodes"] == 2 and summary["world_size"] == 2 and summary["devices"] == 1
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 4


@pytest.mark.usefixtures("deepspeed_ops_built")
def test_llm_finetune_config_trains_zero2_with_a_token_warmup_and_exports(tmp_path):
    config = config_copy("llm_finetune.yaml", tmp_path)
    # 16 sequences of 128 tokens per step (2 ranks × 8): max_tokens 10000 → ceil(10000 / 2048) = 5 steps, warmup 16384 tokens = 8
    # steps would not fit, so the warmup is shortened too; the rest is the config as shipped.
    stdout, stderr = finish(flashdist_fit(config, "--trainer.max_tokens=10000", "--trainer.num_sanity_val_steps=0",
                                          "--model.init_args.lr_scheduler=[linear_schedule_with_warmup, {num_warmup_steps: 4096tok}]"))
    assert warning_lines(stdout, stderr) == []
    summary = read_summary(tmp_path)
    assert summary["strategy"] == "deepspeed_stage_2" and summary["global_batch_size"] == 16
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 5
    assert summary["planned_warmup_steps"] == 2 and summary["tokens_seen"] == 5 * 16 * 128
    for line in ("tokens / optimizer step", "2,048 = 16 × 128", "total tokens", "10,240 (max_tokens 10,000", "tokens seen"):
        assert line in stdout, f"{line!r} missing from:\n{stdout}"
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "hf_model").config.model_type == "llama"


def test_chat_finetune_config_learns_assistant_turns_of_packed_conversations_with_lora(tmp_path):
    import re

    config = config_copy("chat_finetune.yaml", tmp_path)
    stdout, stderr = finish(flashdist_fit(config, *SHORT))
    assert warning_lines(stdout, stderr) == []
    summary = read_summary(tmp_path)
    assert summary["strategy"] == "ddp" and summary["global_batch_size"] == 8
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 4 and summary["tokens_seen"] == 4 * 8 * 256
    # configs/data/chats.jsonl: 240 conversations, val_fraction 0.1; every one has an assistant turn, none is dropped.
    assert re.search(r"train data\s+216 documents → \d+ rows, [\d,]+ learned tokens\s*\n", stdout), stdout
    trainable, total = (int(n.replace(",", "")) for n in re.search(r"parameters\s+([\d,]+) trainable / ([\d,]+) total", stdout).groups())
    assert 0 < trainable < total  # LoRA: the adapters train, the base is frozen
    assert (tmp_path / "run" / "hf_model" / "adapter_model.safetensors").exists()  # LoRA: the adapter is exported
