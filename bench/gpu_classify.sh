#!/usr/bin/env bash
# GPU run of the toxicity classifier benchmark (bench/classify.py): our batched bf16 inference against
# detoxify's predict() on one CUDA device, bert-base-shaped random model built locally (no internet).
#
# The GPU machine has python3 with torch and transformers but not detoxify: copy detoxify's package files
# (e.g. .venv/lib/python3.11/site-packages/detoxify/*.py) into bench/vendor/detoxify/ first (ignored by git).
# Usage, from anywhere:  OUT=/path/to/results bash bench/gpu_classify.sh
# Writes $OUT/classify_cuda.md (default OUT: bench/results). Takes about 2 minutes; capped at 290 s.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f bench/vendor/detoxify/detoxify.py ]; then
    echo "bench/vendor/detoxify/detoxify.py is missing: copy detoxify's package files there first" >&2
    exit 2
fi
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
PYTHONPATH=sdk:collector:bench/vendor timeout 290 python3 bench/classify.py --device cuda --out "$OUT"
