#!/usr/bin/env bash
# The GPU benchmarks as one prepared run for a lent GPU machine (one CUDA device):
#   1. bench/classify.py: our batched bf16 inference against detoxify's predict() (bert-base shape, random
#      weights built locally: no internet there);
#   2. bench/guard_latency.py over HTTP: micro-batched POST /v1/guard against detoxify once per request.
#
# The GPU machine's python3 has torch and transformers but neither detoxify nor the web stack. Before the run:
#   cp .venv/lib/python3.11/site-packages/detoxify/*.py bench/vendor/detoxify/   (ignored by git)
#   wheels of fastapi, uvicorn, pydantic(-settings), clickhouse-connect, opentelemetry-* and their needs in .whl/
#   (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl NAME==VERSION)
# and carry both folders. Usage:  OUT=/path/to/results bash bench/gpu.sh
# Writes classify_cuda.md, guard_latency.cuda.http.md and both logs into $OUT (default bench/results).
# About 4 minutes; each step is capped so that the whole run ends within 7.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -f bench/vendor/detoxify/detoxify.py ]; then
    echo "bench/vendor/detoxify/detoxify.py is missing: copy detoxify's package files there first" >&2
    exit 2
fi
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true

# The classifier benchmark needs only the image's torch and transformers plus detoxify.
PYTHONPATH=sdk:collector:bench/vendor timeout 240 python3 bench/classify.py --device cuda --out "$OUT" \
    2>&1 | tee "$OUT/classify_cuda.log"
classify=${PIPESTATUS[0]}

# The guard benchmark serves the real route: the web stack comes from the carried wheels.
site=/tmp/veil-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
PYTHONPATH="sdk:collector:bench/vendor:$site" timeout 180 python3 bench/guard_latency.py --device cuda \
    --seconds 3 --out "$OUT" 2>&1 | tee "$OUT/guard_latency_cuda.log"
guard=${PIPESTATUS[0]}
echo "exit codes: classify $classify, guard $guard"
[ "$classify" -eq 0 ] && [ "$guard" -eq 0 ]
