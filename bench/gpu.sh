#!/usr/bin/env bash
# The GPU benchmarks as one prepared run for a lent GPU machine (one CUDA device). Steps, all by default:
#   classify         bench/classify.py: our batched bf16 inference against detoxify's predict() (bert-base
#                    shape, random weights built locally: no internet there)
#   profile          bench/classify.py --profile: top kernels of one batch-256 predict
#   guard            bench/guard_latency.py over HTTP: micro-batched POST /v1/guard (classifier in its own
#                    process, the collector's default) against detoxify once per request
#   guard-inprocess  the same with the classifier in the server process (classifier_process=false)
#   stages           (not run by default) bench/classify.py --stages: tokenizing, forward passes, both
#   compile          (not run by default) bench/classify.py --compile: the torch.compile experiment
#
# The GPU machine's python3 has torch and transformers but neither detoxify nor the web stack. Before the run:
#   cp .venv/lib/python3.11/site-packages/detoxify/*.py bench/vendor/detoxify/   (ignored by git)
#   wheels of pytest, pluggy, iniconfig (the test step), fastapi, uvicorn, httptools (else uvicorn parses HTTP
#   in pure Python, which bounded the guard route on the H200), pydantic(-settings), clickhouse-connect,
#   opentelemetry-* and their needs in .whl/
#   (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl NAME==VERSION)
# and carry both folders. Usage:  OUT=/path/to/results bash bench/gpu.sh [STEP...]
# Writes each step's table and log into $OUT (default bench/results); guard-inprocess into $OUT/inprocess/.
# classify takes about 3 minutes, each other step about 1.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -f bench/vendor/detoxify/detoxify.py ]; then
    echo "bench/vendor/detoxify/detoxify.py is missing: copy detoxify's package files there first" >&2
    exit 2
fi
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(test classify profile guard guard-inprocess)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true

site=/tmp/veil-site
wheels() {  # the web stack for the guard steps, once
    [ -d "$site" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl
}
failed=0
for step in "${steps[@]}"; do
    echo "=== $step"
    case "$step" in
    test)
        wheels
        PYTHONPATH="sdk:collector:bench/vendor:tests/collector/classify:$site" timeout 120 python3 -m pytest \
            -q -p no:cacheprovider tests/collector/classify/test_classify_varlen_attention.py 2>&1 \
            | tee "$OUT/gpu_tests.log" ;;
    classify)  # needs only the image's torch and transformers plus detoxify
        PYTHONPATH=sdk:collector:bench/vendor timeout 240 python3 bench/classify.py --device cuda --out "$OUT" \
            2>&1 | tee "$OUT/classify_cuda.log" ;;
    profile)
        PYTHONPATH=sdk:collector:bench/vendor timeout 120 python3 bench/classify.py --device cuda --profile \
            --out "$OUT" 2>&1 | tail -40 ;;
    stages)
        PYTHONPATH=sdk:collector:bench/vendor timeout 150 python3 bench/classify.py --device cuda --stages \
            --out "$OUT" 2>&1 | tail -20 ;;
    compile)
        PYTHONPATH=sdk:collector:bench/vendor timeout 200 python3 bench/classify.py --device cuda --compile \
            --out "$OUT" 2>&1 | tail -15 ;;
    guard)
        wheels
        PYTHONPATH="sdk:collector:bench/vendor:$site" timeout 150 python3 bench/guard_latency.py --device cuda \
            --seconds 3 --out "$OUT" 2>&1 | tee "$OUT/guard_latency_cuda.log" ;;
    guard-inprocess)
        wheels
        PYTHONPATH="sdk:collector:bench/vendor:$site" timeout 150 python3 bench/guard_latency.py --device cuda \
            --seconds 3 --in-process-model --out "$OUT/inprocess" 2>&1 | tail -15 ;;
    *)
        echo "unknown step $step" >&2; exit 2 ;;
    esac
    code=${PIPESTATUS[0]}
    echo "=== $step: exit $code"
    [ "$code" -eq 0 ] || failed=1
done
exit $failed
