#!/usr/bin/env bash
# The GPU check (issue #26): at most 8 minutes on a bare GPU machine (one H100/H200, its own
# python3 with a CUDA torch and transformers, no network), output to a folder.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--no-wheels]     (from anywhere)
#
#   --out DIR     where the logs and tables go (default gpu_check_out/ in the repository,
#                 git-ignored; on the lent machine pass $OUT so they come back)
#   --no-wheels   use this Python's own packages, install nothing
#   PYTHON=...    the interpreter (default python3: on the GPU machine, the one with torch)
#
# Set-up: the packages that machine lacks (transformer-lens, plotly, circuitsvis, fla-core,
# pandas, pytest, ...) travel as wheels in the git-ignored .gpu-wheels/, built here by
# `bash benchmarks/gpu_wheels.sh` (~32 MiB; name .gpu-wheels in the device call's carry). This
# script installs them offline (`pip install --no-index --no-deps --target` a temporary folder)
# and puts that folder and the repository on PYTHONPATH: nothing is installed into the
# machine's Python, and interp itself runs from the working tree. Models: only what can be
# built there -- a random toy and tiny random checkpoints of each family, saved with
# save_pretrained at run time; random tensors for the kernels. The SmolLM2 weights cannot
# travel: the tests that need them skip, naming the missing cache.
#
# Stages, each under `timeout` (limits below + 5 s kill grace; in all at most 480 s):
#   0. preflight: Python, torch/CUDA/device, triton, fla, transformers, transformer-lens (and
#      where each was imported from), and why any fast path is off (flex_attention, fla)
#   1. the cuda-marked tests (benchmarks/gpu_check_tests.py): each compares CUDA with a CPU
#      reference computed in the same test
#   2. the attention benchmark (benchmarks/gpu_check_attention.py): every registered
#      implementation vs SDPA and vs fla, 4k/16k/64k tokens, bf16 and fp32, time and peak memory
#   3. probe and patching throughput on the toy and tiny families, CUDA vs CPU, results
#      compared (benchmarks/gpu_check_throughput.py)
# Without CUDA every stage still runs up to its line "gpu_check stage N (...): no CUDA,
# skipped: ..." (imports, collection, a CPU smoke run), so a missing package shows here too.
#
# Output in DIR: gpu_check.log (everything printed), one log per stage (0_preflight.log ...),
# cuda_tests.xml (junit), attention.csv, throughput.csv.
# Exit status: 0 every stage ran on CUDA and passed; 2 no CUDA, every stage reached its skip
# line; 1 a stage failed or timed out (named in the last lines); 64 bad arguments.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
OUT_DIR="gpu_check_out"
USE_WHEELS=1
WHEELS="${GPU_WHEELS:-.gpu-wheels}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT_DIR="${2:?--out needs a folder}"; shift 2 ;;
        --out=*) OUT_DIR="${1#--out=}"; shift ;;
        --no-wheels) USE_WHEELS=0; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 64 ;;
    esac
done
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1

# limits (seconds): install 35 + preflight 40 + tests 200 + attention 120 + throughput 60,
# + 5 s kill grace each = 480
L_INSTALL=35 L_PREFLIGHT=40 L_TESTS=200 L_ATTENTION=120 L_THROUGHPUT=60

export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1  # nothing is fetched
export TOKENIZERS_PARALLELISM=false
START=$SECONDS
FAILED=() SKIPPED=() PASSED=()

stamp() { printf '\n=== [%s, +%ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }

# stage N NAME LIMIT CMD...: CMD under timeout, its output also in DIR/N_<name>.log; exit 3 is
# the stage's "no CUDA" skip, 124/137 a timeout, anything else but 0 a failure
stage() {
    local num=$1 name=$2 limit=$3
    shift 3
    stamp "stage $num: $name (limit ${limit}s): $*"
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT_DIR/${num}_${name// /_}.log"
    local rc=${PIPESTATUS[0]}
    case "$rc" in
        0) PASSED+=("$num $name") ;;
        3) SKIPPED+=("$num $name") ;;
        124|137) echo "!!! stage $num ($name): timed out after ${limit}s"
                 FAILED+=("$num $name (timeout ${limit}s)") ;;
        *) echo "!!! stage $num ($name): failed with exit status $rc"
           FAILED+=("$num $name (exit $rc)") ;;
    esac
    stamp "stage $num: $name done (exit $rc)"
}

stamp "gpu_check in $ROOT, output in $OUT_DIR, python: $(command -v "$PY" || echo "$PY")"
SITE=""
if [ "$USE_WHEELS" = 1 ]; then
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if [ "${#wheels[@]}" -eq 0 ]; then
        echo "gpu_check: no wheels in $WHEELS/ (build them with bash benchmarks/gpu_wheels.sh" \
            "and carry $WHEELS); using this Python's own packages"
    else
        SITE="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")"
        trap 'rm -rf "$SITE"' EXIT
        stamp "installing ${#wheels[@]} wheels from $WHEELS/ into $SITE (offline, --target)"
        rc=0
        PIP_CONFIG_FILE=/dev/null timeout -k 5 "$L_INSTALL" "$PY" -m pip install --quiet \
            --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --target "$SITE" "${wheels[@]}" || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "!!! wheel install failed (exit $rc); the stages run with this Python's packages"
            FAILED+=("wheel install (exit $rc)")
        else
            echo "installed: $(ls "$SITE" | grep -c '\.dist-info$') distributions"
        fi
    fi
fi
export PYTHONPATH="$ROOT${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"

stage 0 preflight "$L_PREFLIGHT" "$PY" benchmarks/gpu_check_preflight.py
stage 1 "cuda tests" "$L_TESTS" "$PY" benchmarks/gpu_check_tests.py --out "$OUT_DIR"
stage 2 attention "$L_ATTENTION" "$PY" benchmarks/gpu_check_attention.py --out "$OUT_DIR"
stage 3 throughput "$L_THROUGHPUT" "$PY" benchmarks/gpu_check_throughput.py --out "$OUT_DIR"

stamp "total $((SECONDS - START)) s"
[ "${#PASSED[@]}" -gt 0 ] && printf 'gpu_check: passed: %s\n' "$(IFS=';'; echo "${PASSED[*]}")"
[ "${#SKIPPED[@]}" -gt 0 ] && printf 'gpu_check: skipped (no CUDA): %s\n' "$(IFS=';'; echo "${SKIPPED[*]}")"
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'gpu_check: FAILED: %s\n' "$(IFS=';'; echo "${FAILED[*]}")"
    exit 1
fi
if [ "${#PASSED[@]}" -eq 0 ]; then
    echo "gpu_check: no CUDA device: every stage stopped at its skip line (exit 2)"
    exit 2
fi
if [ "${#SKIPPED[@]}" -gt 0 ]; then
    echo "gpu_check: some stages saw no CUDA while others did"
    exit 1
fi
echo "gpu_check: all stages passed"
