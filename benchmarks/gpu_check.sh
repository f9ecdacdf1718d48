#!/usr/bin/env bash
# One GPU check for issue #15, at most 8 minutes on one GPU (sized for an H200):
#   1. the cuda-marked tests (GPU fast paths == naive references, models/probes on CUDA)
#   2. the attention benchmark on CUDA: every implementation vs SDPA (and vs fla when
#      installed) at 4k, 16k and 64k tokens, ms and peak memory
#   3. smollm2-135m probe throughput: induction + sink over all 270 heads, tokens/s
#   4. smollm2-135m swap memory at 32k tokens: dense vs linear swapped into every layer
#
#   bash benchmarks/gpu_check.sh            (from anywhere; PYTHON=... to pick the interpreter)
#
# Needs a CUDA torch and the smollm2-135m weights in the interp cache ($INTERP_CACHE, default
# ~/.cache/interp; filled once with network by `interp.load_model("smollm2-135m")`). Optional:
# `pip install -e '.[gpu]'` (fla-core, ops only) for the fla kernels and the fla row.
# Every stage runs under `timeout` (limits + kill grace + preflight: 475 s) and prints a time
# stamp; a failed stage is reported and the next one still runs; the exit status is non-zero
# if any stage failed (2: no CUDA device at all).
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONUNBUFFERED=1
START=$SECONDS
FAILED=()

stamp() { printf '\n=== [%s, +%ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }

# stage NAME SECONDS CMD...: run CMD under timeout; record a failure without stopping
stage() {
    local name=$1 limit=$2
    shift 2
    stamp "$name (limit ${limit}s): $*"
    local rc=0
    timeout -k 5 "$limit" "$@" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "!!! $name: timed out after ${limit}s"
        FAILED+=("$name (timeout)")
    elif [ "$rc" -ne 0 ]; then
        echo "!!! $name: failed with exit status $rc"
        FAILED+=("$name (exit $rc)")
    fi
    stamp "$name done"
}

stamp "preflight"
if ! timeout 20 "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    about=$(timeout 20 "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA build:", torch.version.cuda)' 2>&1 | tail -1 || true)
    echo "gpu_check: torch sees no CUDA device ($about); nothing to check" >&2
    exit 2
fi
timeout 20 "$PY" - <<'PYEOF' || echo "!!! preflight: could not report the GPU paths (does interp import?)"
import torch
from interp.attention import gpu
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.get_device_name()}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
print(f"flex_attention: {'yes' if gpu.flex_module() else 'NO (sparse impls use the torch path)'}; "
      f"fla: {'yes' if gpu.fla_linear_attn() else 'no (linear uses the torch chunked form): ' + str(gpu.fla_unavailable_reason())}")
PYEOF

# limits: 185 + 135 + 45 + 50 s, + 5 s kill grace each, + 40 s preflight = 475 s
stage "cuda tests" 185 "$PY" -m pytest -q -m cuda -rs --device cuda -p no:cacheprovider \
    --durations=15 tests
stage "attention benchmark" 135 "$PY" benchmarks/attention.py --device cuda --dtype bfloat16 \
    --lengths 4096 16384 65536 --repeats 5
stage "smollm2 probe throughput" 45 "$PY" benchmarks/probe_throughput.py --device cuda \
    --batch 16 --seg-len 256 --repeats 3
stage "swap memory at 32k" 50 "$PY" benchmarks/swap_memory.py --device cuda --seq 32768 \
    --impl linear

stamp "total"
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'gpu_check: FAILED stages: %s\n' "${FAILED[*]}"
    exit 1
fi
echo "gpu_check: all stages passed"
