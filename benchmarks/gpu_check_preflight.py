"""Preflight of ``benchmarks/gpu_check.sh``: what this Python has, and why any fast path is off.

Prints the Python, torch (CUDA build, device, memory), triton, fla, transformers,
transformer-lens and the other packages interp imports, each with its version and the folder
it was imported from (so a carried wheel is told from the machine's own copy), whether
``flex_attention`` is usable, why fla is not (:func:`interp.attention.gpu.fla_unavailable_reason`),
and the SDPA backends torch has enabled.

Exit status (see ``gpu_check_common``): 0 with CUDA, 3 without (the skip line), 1 when a package
the stages need does not import (named, with the error).

    python benchmarks/gpu_check_preflight.py
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import sys
import time
from pathlib import Path

import gpu_check_common as common

#: (import name, distribution name): what the stages import; a failure here fails the preflight
REQUIRED = [("torch", "torch"), ("numpy", "numpy"), ("transformers", "transformers"),
            ("transformer_lens", "transformer-lens"), ("pandas", "pandas"), ("plotly", "plotly"),
            ("circuitsvis", "circuitsvis"), ("pytest", "pytest")]
#: optional: their absence turns a fast path off, which is reported, not failed
OPTIONAL = [("triton", "triton"), ("fla", "fla-core"), ("einops", "einops")]
#: interp modules the stages import
INTERP = ["interp", "interp.attention", "interp.attention.gpu", "interp.models.toy",
          "interp.probes.induction", "interp.probes.sink", "interp.circuits"]


def _where(module) -> str:
    path = getattr(module, "__file__", None)
    return str(Path(path).parent.parent) if path else "?"


def _version(dist: str, module) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return str(getattr(module, "__version__", "?"))


def report_imports(names, required: bool) -> list[str]:
    """Import each, print ``name version (folder, seconds)``; return the failures."""
    failed = []
    for mod_name, dist in names:
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(mod_name)
        except Exception as exc:  # noqa: BLE001 -- any import failure is the report
            print(f"  {mod_name:<17} {'MISSING' if required else 'not available'}: "
                  f"{type(exc).__name__}: {exc}")
            if required:
                failed.append(mod_name)
            continue
        print(f"  {mod_name:<17} {_version(dist, mod):<14} from {_where(mod)} "
              f"({time.perf_counter() - t0:.1f} s)")
    return failed


def fast_paths(cuda: bool) -> None:
    """Print whether flex_attention, fla and the SDPA kernels are used, and why not."""
    import torch

    from interp.attention import gpu

    flex = gpu.flex_module() is not None
    print(f"  flex_attention (sliding_window, sink_window, block_sparse): "
          + ("usable" if flex else f"NOT usable: torch {torch.__version__} lacks a complete "
             "torch.nn.attention.flex_attention; the sparse implementations use the torch path")
          + ("" if cuda or not flex else " (off here: no CUDA)"))
    reason = gpu.fla_unavailable_reason()
    print("  fla chunk_linear_attn (causal chunked linear, float32): "
          + ("imports" + ("" if cuda else " (off here: no CUDA)") if reason is None
             else f"OFF: {reason}"))
    if cuda:
        b = torch.backends.cuda
        flags = {"flash": b.flash_sdp_enabled(), "mem_efficient": b.mem_efficient_sdp_enabled(),
                 "cudnn": getattr(b, "cudnn_sdp_enabled", lambda: None)(),
                 "math": b.math_sdp_enabled()}
        print("  SDPA backends enabled: " + ", ".join(f"{k} {v}" for k, v in flags.items()))
    else:
        print("  every GPU fast path is off here: torch sees no CUDA device")


def main() -> int:
    print(f"python {platform.python_version()} ({sys.executable}), {platform.machine()}, "
          f"{platform.system()} {platform.release()}")
    print("packages (version, imported from):")
    failed = report_imports(REQUIRED, required=True)
    report_imports(OPTIONAL, required=False)
    print("interp modules:")
    for name in INTERP:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            print(f"  {name}: FAILED: {type(exc).__name__}: {exc}")
            failed.append(name)
    if "interp" not in failed:
        print(f"  interp from {_where(sys.modules['interp'])}: ok")
    if "torch" in failed:
        print("gpu_check preflight: torch does not import", flush=True)
        return 1
    import torch

    cuda, about = common.cuda_status()
    print(f"CUDA: {about}")
    if cuda:
        p = torch.cuda.get_device_properties(0)
        print(f"  {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
              f"{p.multi_processor_count} SMs; {torch.cuda.device_count()} device(s)")
    if "interp.attention.gpu" not in failed:
        print("fast paths:")
        fast_paths(cuda)
    if failed:
        print(f"gpu_check preflight: FAILED imports: {', '.join(failed)}", flush=True)
        return 1
    if not cuda:
        return common.skip(0, about)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
