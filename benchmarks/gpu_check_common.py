"""What the stages of ``benchmarks/gpu_check.sh`` share: the repository on ``sys.path``, the
CUDA question asked one way, and the lines the driver and ``tests/test_gpu_check.py`` read.

Every stage script (``gpu_check_{preflight,tests,attention,throughput}.py``) exits with

- ``0``: it ran on CUDA and everything it checks held;
- :data:`SKIPPED` (3): torch sees no CUDA device; it got as far as it can without one (every
  import it needs, the CPU half where there is one) and printed :func:`skip_line`;
- anything else: it failed (an exception, a CUDA result off its CPU reference).
"""
from __future__ import annotations

import sys
from pathlib import Path

#: the repository root (this file is ``benchmarks/gpu_check_common.py``)
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: exit status of a stage that stopped at its "no CUDA" line (the driver counts it as skipped)
SKIPPED = 3
#: the stages, in order: number -> name (the driver prints the same names)
STAGES = {0: "preflight", 1: "cuda tests", 2: "attention benchmark", 3: "probe and patching throughput"}


def cuda_status() -> tuple[bool, str]:
    """``(available, description)``: whether torch sees a CUDA device, and in words what it
    sees (the device name, or why there is none: CPU build, no device, hidden by
    ``CUDA_VISIBLE_DEVICES``)."""
    import os

    import torch

    build = torch.version.cuda
    if torch.cuda.is_available():
        return True, f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {build})"
    if not build:
        why = "a CPU build of torch"
    elif os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        why = f"CUDA {build} build, devices hidden by CUDA_VISIBLE_DEVICES=''"
    else:
        why = f"CUDA {build} build, but no device visible"
    return False, f"torch {torch.__version__}: {why}"


def skip_line(stage: int, detail: str) -> str:
    """The one line a stage prints when it stops for lack of CUDA."""
    return f"gpu_check stage {stage} ({STAGES[stage]}): no CUDA, skipped: {detail}"


def skip(stage: int, detail: str) -> int:
    """Print :func:`skip_line` (flushed) and return :data:`SKIPPED`, for ``return skip(...)``."""
    print(skip_line(stage, detail), flush=True)
    return SKIPPED


def out_dir(argv_value: str | None) -> Path | None:
    """The ``--out`` folder as a Path (created), or None."""
    if not argv_value:
        return None
    path = Path(argv_value)
    path.mkdir(parents=True, exist_ok=True)
    return path
