#!/usr/bin/env bash
# Build the folder of wheels the lent GPU machine needs to run interp (issue #26).
#
#   bash benchmarks/gpu_wheels.sh [DEST]          (DEST defaults to .gpu-wheels, relative to
#                                                  the repository root; it is git-ignored)
#
# The GPU machine has its own Python 3.12 with a CUDA torch 2.11 and transformers 5.17 (which
# bring huggingface-hub, tokenizers, safetensors, numpy, pyyaml, regex, requests, tqdm, filelock,
# packaging, httpx; sympy, networkx, jinja2, fsspec, typing-extensions) and no network. This
# script downloads, with `pip download --no-deps` for CPython 3.12 on manylinux x86_64, the other
# packages interp imports at run time, pinned to the versions of the dev venv, into DEST/*.whl.
# DEST is carried with the working tree (64 MiB in all), so the script fails (exit 1) when the
# wheels exceed LIMIT_MIB (default 50). On the GPU machine benchmarks/gpu_check.sh installs them
# itself; by hand:
#
#   python -m pip install --no-index --no-deps --target "$T" .gpu-wheels/*.whl
#   PYTHONPATH="$T" python ...
#
# The list: the transitive runtime requirements of transformer-lens 4.3, plotly, circuitsvis,
# pandas, gguf, fla-core 0.6 and einops, less what torch + transformers provide, less what is
# never imported on interp's paths (wandb and its OpenTelemetry/pydantic tree: only
# transformer_lens.tools.training imports it; beartype, typeguard, fancy-einsum,
# transformers-stream-generator: not imported by transformer_lens at all).
#
# `datasets` (imported by `transformer_lens.utilities` at import time) needs pyarrow, whose
# cp312 wheel alone is 52 MiB. By default (DATASETS=stub) the script therefore writes a small
# stand-in wheel, interp_datasets_stub, providing `datasets.{arrow_dataset.Dataset,
# iterable_dataset.IterableDataset, load.load_dataset}` so that `import transformer_lens` works;
# any use of it raises. DATASETS=real downloads the real datasets + pyarrow + dill +
# multiprocess + xxhash instead (over the limit as of datasets 5.2 / pyarrow 26).
# TESTS=1 (default) adds pytest + hypothesis for benchmarks/gpu_check.sh's test stage; TESTS=0
# leaves them out.
#
# Last, a local check installs the wheels with `pip install --no-index --no-deps --target` into a
# scratch folder: with CHECK_PYTHON (default: python3.12 if it runs) every wheel; otherwise, with
# this Python (the venv's 3.11), only the pure py3-none-any ones, since the cp312 wheels cannot
# install on 3.11. PYTHON picks the interpreter that runs pip download (default: python).
set -euo pipefail

cd "$(dirname "$0")/.."
DEST="${1:-.gpu-wheels}"
PY="${PYTHON:-python}"
LIMIT_MIB="${LIMIT_MIB:-50}"
DATASETS="${DATASETS:-stub}"
TESTS="${TESTS:-1}"

# Pinned to the dev venv (pip show); keep in step with pyproject.toml.
PKGS=(
    transformer-lens==4.3.0
    accelerate==1.16.0 psutil==7.2.2                          # transformer_lens.model_bridge
    jaxtyping==0.3.11 wadler-lindig==0.1.8
    rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0
    sentencepiece==0.2.3 protobuf==7.36.2
    pandas==3.1.1 python-dateutil==4.0.0 tzdata==2026.6
    plotly==7.1.0 narwhals==2.29.0
    circuitsvis==1.43.3 importlib-metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0
    gguf==0.19.0
    fla-core==0.6.0 einops==0.8.2                             # pyproject's [gpu] extra
)
case "$DATASETS" in
    stub) ;;
    real) PKGS+=(datasets==5.2.0 pyarrow==26.0.1 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0) ;;
    *) echo "gpu_wheels: DATASETS must be stub or real, not '$DATASETS'" >&2; exit 2 ;;
esac
if [ "$TESTS" = 1 ]; then
    PKGS+=(pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 hypothesis==6.170.27 sortedcontainers==2.4.0)
fi

mkdir -p "$DEST"
rm -f "$DEST"/*.whl   # stale versions would count in the total and install twice

# One package per call, so that one that cannot be fetched is named and the others still come.
# --implementation cp with abi cp312/abi3/none matches both the cp312 binary wheels (pandas,
# sentencepiece, psutil, protobuf) and the pure py3-none-any ones.
FAILED=()
for spec in "${PKGS[@]}"; do
    if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
        --dest "$DEST" "$spec"; then
        FAILED+=("$spec")
    fi
done

if [ "$DATASETS" = stub ]; then
    "$PY" - "$DEST" <<'PYEOF'
# Write interp_datasets_stub-0.1.0-py3-none-any.whl: a `datasets` that imports, never works.
import base64, hashlib, sys, zipfile
from pathlib import Path

name, version = "interp_datasets_stub", "0.1.0"
doc = ('"""Stand-in for Hugging Face datasets on interp\'s GPU machine (benchmarks/gpu_wheels.sh):\n'
       'transformer_lens imports these names at import time; the real package needs pyarrow."""\n')
err = ("class _Missing:\n"
       "    def __init__(self, *a, **k):\n"
       "        raise ImportError('datasets is a stub here (benchmarks/gpu_wheels.sh); '\n"
       "                          'install the real datasets + pyarrow to use it')\n")
files = {
    "datasets/__init__.py": doc + "from .arrow_dataset import Dataset\n"
        "from .iterable_dataset import IterableDataset\nfrom .load import load_dataset\n"
        "__version__ = '0.0.0+interp.stub'\n",
    "datasets/_missing.py": doc + err,
    "datasets/arrow_dataset.py": doc + "from ._missing import _Missing\n\n\nclass Dataset(_Missing):\n    pass\n",
    "datasets/iterable_dataset.py": doc + "from ._missing import _Missing\n\n\nclass IterableDataset(_Missing):\n    pass\n",
    "datasets/load.py": doc + "from ._missing import _Missing\n\n\ndef load_dataset(*a, **k):\n    _Missing()\n",
    f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: gpu_wheels.sh\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = f"{name}-{version}.dist-info/RECORD"
lines = []
for path, text in files.items():
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    lines.append(f"{path},sha256={digest},{len(data)}")
lines.append(f"{record},,")
files[record] = "\n".join(lines) + "\n"
out = Path(sys.argv[1]) / f"{name}-{version}-py3-none-any.whl"
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for path, text in files.items():
        z.writestr(path, text)
PYEOF
fi

# Requirements of the fetched wheels that neither DEST nor the GPU machine's torch/transformers
# provide: printed so that a new version's new dependency is noticed, not fatal.
"$PY" - "$DEST" "$DATASETS" <<'PYEOF' || true
import re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

dest, datasets_mode = Path(sys.argv[1]), sys.argv[2]
provided = {canon(n) for n in (
    "torch triton transformers huggingface-hub hf-xet tokenizers safetensors numpy pyyaml regex "
    "requests tqdm filelock packaging httpx httpcore h11 anyio idna certifi sniffio typer "
    "shellingham click sympy mpmath networkx jinja2 markupsafe fsspec typing-extensions").split()}
# declared but never imported on interp's paths (see the header)
skipped = {canon(n) for n in "wandb beartype typeguard fancy-einsum transformers-stream-generator".split()}
if datasets_mode == "stub":
    skipped.add("datasets")
have, reqs = set(), []
env = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
for whl in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        text = z.read(meta).decode()
    have.add(canon(re.search(r"^Name: (.+)$", text, re.M).group(1).strip()))
    for line in re.findall(r"^Requires-Dist: (.+)$", text, re.M):
        r = Requirement(line)
        if r.marker is None or r.marker.evaluate(env):
            reqs.append((whl.name, r))
missing = [(w, r) for w, r in reqs if canon(r.name) not in have | provided | skipped]
for w, r in missing:
    print(f"gpu_wheels: note: {w} requires {r}, which is neither here nor assumed on the GPU machine")
PYEOF

echo
echo "gpu_wheels: wheels in $DEST:"
total=0
while IFS= read -r f; do
    size=$(stat -c %s "$f")
    total=$((total + size))
    printf '  %10d  %s\n' "$size" "$(basename "$f")"
done < <(find "$DEST" -maxdepth 1 -name '*.whl' | sort)
limit=$((LIMIT_MIB * 1024 * 1024))
printf 'gpu_wheels: total %d bytes (%s MiB), limit %d MiB\n' "$total" \
    "$(awk -v t="$total" 'BEGIN { printf "%.1f", t / 1048576 }')" "$LIMIT_MIB"

status=0
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "gpu_wheels: could not fetch (no wheel for CPython 3.12 manylinux x86_64?): ${FAILED[*]}" >&2
    status=1
fi
if [ "$total" -gt "$limit" ]; then
    echo "gpu_wheels: the wheels exceed ${LIMIT_MIB} MiB; the largest:" >&2
    find "$DEST" -maxdepth 1 -name '*.whl' -printf '%s %f\n' | sort -rn | head -5 |
        awk '{ printf "  %6.1f MiB  %s\n", $1 / 1048576, $2 }' >&2
    exit 1
fi

# Local check: the wheels install offline into a scratch folder.
CHECK_PY="${CHECK_PYTHON:-}"
if [ -z "$CHECK_PY" ] && python3.12 -c 'import sys' >/dev/null 2>&1; then
    CHECK_PY=python3.12
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpuw_target.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
if [ -n "$CHECK_PY" ] && "$CHECK_PY" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    echo "gpu_wheels: local check with $("$CHECK_PY" -V 2>&1): installing every wheel"
    wheels=("$DEST"/*.whl)
else
    # cp312 wheels cannot install on this Python; the GPU machine (3.12) installs them all.
    CHECK_PY="$PY"
    echo "gpu_wheels: local check with $("$CHECK_PY" -V 2>&1): no Python 3.12 here, so only" \
        "the py3-none-any wheels (the cp312 ones are checked on the GPU machine)"
    wheels=("$DEST"/*-none-any.whl)
fi
"$CHECK_PY" -m pip install --quiet --no-index --no-deps --target "$scratch" "${wheels[@]}"
echo "gpu_wheels: local check ok: ${#wheels[@]} wheels installed offline into a scratch folder"
exit "$status"
