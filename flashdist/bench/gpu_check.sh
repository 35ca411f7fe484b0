#!/usr/bin/env bash
# Prepared for a session lent an H200 (issue 17, item 5). It has NOT run yet: nothing in the
# README comes from it. One short pass (~10 min of device time): the gpu-marked tests, then the
# compiled-vs-eager optimizer step on CUDA. Writes everything under $OUT (the device tool's folder).
#   bash flashdist/bench/gpu_check.sh
set -u
OUT=${OUT:-/tmp/flashdist-gpu}
mkdir -p "$OUT"
PY=${PY:-python}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 300 "$PY" -m pytest -p no:cacheprovider -q -m gpu tests > "$OUT/gpu-tests.txt" 2>&1
echo "gpu tests rc=$?" >> "$OUT/summary.txt"
timeout 240 "$PY" -m flashdist.cli.main bench compile --device cuda --repeats 15 \
    --json "$OUT/compile-cuda.json" > "$OUT/compile-cuda.txt" 2>&1
echo "bench compile cuda rc=$?" >> "$OUT/summary.txt"
