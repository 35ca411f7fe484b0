#!/usr/bin/env bash
# The GPU pass of issue 24 (item 5), prepared for a session lent one H100/H200. One run, at most
# 9 minutes (the timeouts below add up to 510 s, tests/bench/test_gpu_check.py holds them there),
# everything written under $OUT (the device tool's folder). Nothing in the docs comes from it until
# it has run:
#   OUT=/tmp/gpu bash flashdist/bench/gpu_check.sh
# Each step runs under its own timeout and records its exit status in $OUT/summary.txt; a failing
# step does not stop the next.
set -u
OUT=${OUT:-/tmp/flashdist-gpu}
PY=${PY:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
: > "$OUT/summary.txt"

# run NAME TIMEOUT_S COMMAND...: COMMAND's output to $OUT/NAME.txt, its status and seconds to summary.txt
run() {
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local status=$?
    echo "$name rc=$status ${limit}s-limit took=$((SECONDS - started))s" >> "$OUT/summary.txt"
}

run machine 10 bash -c "nvidia-smi; $PY -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), transformers.__version__)'; $PY -c 'import flash_attn; print(\"flash_attn\", flash_attn.__version__)'; uptime"
# gpu-marked tests (-v: each result is in the file as it comes, a timeout keeps those before it): CUDA graphs
# with tensor LRs, fused AdamW on CUDA, flash-attention varlen packing, the CUDA RNG round trip, bench fit /
# schedulers / syncs on cuda; then the strategies' (DeepSpeed's FusedAdam, JIT-built on first use, FSDP2 on CUDA)
run gpu-tests 60 "$PY" -m pytest -p no:cacheprovider -v -m gpu -rs tests --ignore=tests/strategies
run gpu-tests-strategies 70 "$PY" -m pytest -p no:cacheprovider -v -m gpu -rs tests/strategies
# host syncs per step on the GPU, with torch.cuda.set_sync_debug_mode("warn") counting every synchronizing call
run bench-syncs 70 "$PY" -m flashdist.cli.main bench syncs --device cuda --devices 1 --steps 10 --warmup-steps 5 \
    --json "$OUT/syncs-cuda.json"
# whole fits on the GPU, both workloads, flashdist against the hand loop, plain Lightning and the HF Trainer
run bench-fit 130 "$PY" -m flashdist.cli.main bench fit --device cuda --devices 1 --workloads mlp,gpt2 --repeats 3 \
    --warmup-rounds 1 --json "$OUT/fit-cuda.json" --table "$OUT/fit-cuda-table.txt" --plot "$OUT/fit-cuda.png"
# scheduler steps on tensor LRs read by a CUDA graph of the optimizer step (captured once)
run bench-schedulers 50 "$PY" -m flashdist.cli.main bench schedulers --device cuda --groups 1,4,64 --steps 200 --repeats 7 \
    --warmup-steps 50 --json "$OUT/schedulers-cuda.json" --plot "$OUT/schedulers-cuda.png" \
    --only linear_schedule_with_warmup,hf:linear_schedule_with_warmup,cosine_schedule_with_warmup,hf:cosine_schedule_with_warmup,linearlr,cosineannealinglr,warmupcosinelr
# asynchronous checkpoints on one GPU: the snapshot is a device-to-host copy into pinned memory
run bench-ckpt 80 "$PY" -m flashdist.cli.main bench ckpt --device cuda --processes 1 --model-mb 256 --steps 7 --save-every 2 \
    --rounds 2 --json "$OUT/ckpt-cuda.json"
# the packed LM path: SDPA (position_ids mask) against flash-attention varlen, tokens/s (SDPA alone without flash-attn)
if "$PY" -c 'import flash_attn' > /dev/null 2>&1; then ATTENTIONS=sdpa,flash_attention_2; else ATTENTIONS=sdpa; fi
run packed-attention 40 "$PY" -m flashdist.bench.packed_attention --device cuda --attentions "$ATTENTIONS" --rounds 5 \
    --json "$OUT/packed-attention.json"
cat "$OUT/summary.txt"
