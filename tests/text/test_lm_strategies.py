"""CausalLM on 2 CPU processes under ddp, ZeRO-2, ZeRO-3 and FSDP2, LoRA on in two: one fit each, checked at once.

Sizes: a save_pretrained tiny Llama and a WordLevel tokenizer trained here; prompt/completion
pairs packed into blocks of 32 tokens; batch 2 per rank × 2 ranks → 128 tokens per optimizer
step; max_tokens=1000 → ceil(1000 / 128) = 8 steps; warmup "300tok" → ceil(300 / 128) = 3 steps.
The ddp case runs under torchrun, where every rank starts at once: rank 0 tokenizes in
prepare_data while rank 1 waits at Lightning's barrier; under Lightning's own launcher the
launching process (rank 0) tokenizes before the other rank exists.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashdist.data.lm_tokenize import read_tokenize_log
from tests.fitting import _free_port, read_lr_csv
from tests.text.lm_fixtures import local_backbone

pytestmark = [pytest.mark.usefixtures("deepspeed_ops_built"), pytest.mark.multiprocess]

SCRIPT = Path(__file__).parents[1] / "scripts" / "fit_lm.py"
TOKENS_PER_STEP = 2 * 2 * 32
MAX_TOKENS, WARMUP_TOKENS = 1000, 300
STEPS, WARMUP_STEPS = math.ceil(MAX_TOKENS / TOKENS_PER_STEP), math.ceil(WARMUP_TOKENS / TOKENS_PER_STEP)

CASES = {
    "ddp": dict(lora=None, launcher="torchrun"),
    "deepspeed_stage_2": dict(lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, launcher="lightning"),
    "deepspeed_stage_3": dict(lora=None, launcher="lightning", checkpoint=True),
    "fsdp": dict(lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "merge_on_export": True}, launcher="lightning",
                 checkpoint=True),
}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return local_backbone(tmp_path_factory.mktemp("lm"), count=120)


def _fit(root: Path, launcher: str, **config) -> None:
    config = {"root": str(root), "max_tokens": MAX_TOKENS, "warmup": f"{WARMUP_TOKENS}tok", **config}
    port = str(_free_port())
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port, str(SCRIPT)]
    else:
        command = [sys.executable, str(SCRIPT)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MASTER_PORT": port}
    proc = subprocess.run([*command, json.dumps(config)], capture_output=True, text=True, timeout=420, env=env)
    assert proc.returncode == 0, f"fit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.mark.parametrize("strategy", list(CASES))
def test_causal_lm_fit_under_each_strategy_ledger_tokens_warmup_export_and_one_tokenization(tmp_path, backbone, strategy):
    model_dir, data_file = backbone
    case = CASES[strategy]
    _fit(tmp_path, case["launcher"], model_dir=str(model_dir), data_file=str(data_file), strategy=strategy, lora=case["lora"],
         checkpoint=case.get("checkpoint", False))
    summary = json.loads((tmp_path / "summary.json").read_text())

    # The ledger, in steps and in tokens.
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == STEPS
    assert summary["global_batch_size"] == 4
    assert summary["tokens_seen"] == summary["optimizer_steps"] * summary["global_batch_size"] * 32
    assert summary["tokens_per_second"] > 0 and summary["mfu"] is None  # no known peak on CPU

    # The token-given warmup lands where the arithmetic says: the LR rises for WARMUP_STEPS updates, then decays.
    assert summary["planned_warmup_steps"] == WARMUP_STEPS
    lrs = [row[0] for row in read_lr_csv(tmp_path)]
    assert lrs.index(max(lrs)) == WARMUP_STEPS and lrs[0] == 0.0

    # Tokenized once, by rank 0.
    log = read_tokenize_log(tmp_path / "data_cache")
    assert [record["rank"] for record in log] == [0]

    # The export reloads with the trained model's logits.
    from transformers import AutoModelForCausalLM

    exported = tmp_path / "hf_model"
    kind = json.loads((exported / "flashdist_export.json").read_text())["kind"]
    if strategy == "deepspeed_stage_2":
        from peft import PeftModel

        assert kind == "lora-adapter" and (exported / "adapter_model.safetensors").exists()
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), exported)
    else:
        assert kind == ("merged-lora-model" if strategy == "fsdp" else "model")
        reloaded = AutoModelForCausalLM.from_pretrained(exported)
    from tests.scripts.fit_lm import PROBE_IDS

    with torch.no_grad():
        got = reloaded.eval()(input_ids=torch.tensor(PROBE_IDS)).logits
    torch.testing.assert_close(got, torch.load(tmp_path / "logits.pt"), atol=1e-5, rtol=0)

    if case.get("checkpoint"):  # `flashdist export` from the sharded checkpoint (a ZeRO-3 directory, an FSDP2 DCP directory)
        from flashdist.cli.export import run as export_run

        assert export_run(["--ckpt", str(tmp_path / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "from_ckpt")]) == 0
        with torch.no_grad():
            again = AutoModelForCausalLM.from_pretrained(tmp_path / "from_ckpt").eval()(input_ids=torch.tensor(PROBE_IDS)).logits
        torch.testing.assert_close(again, got, atol=1e-5, rtol=0)

    extra = json.loads((tmp_path / "lm_extra.json").read_text())
    if strategy == "fsdp":  # decoder blocks first, then the root
        assert {"model.base_model.model.model.layers.0", "model.base_model.model.model.layers.1", "model"} <= set(extra["sharded_modules"])
