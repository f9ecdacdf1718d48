"""One place that turns device and dtype names into torch objects.

Every entry point (``interp.load_model``, the CLI's ``--device/--dtype``, the ``device`` /
``dtype`` fields of experiment configs) goes through :func:`resolve_device` and
:func:`resolve_dtype`, so ``"auto"`` means the same everywhere (CUDA when available, else
CPU) and a device that is not there is refused with a message saying what is (an
:class:`~interp.errors.InputError`: the CLI prints it as one line).
"""
from __future__ import annotations

import torch

from interp.errors import InputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
#: names accepted by ``--dtype`` / config ``dtype`` (one spelling each)
DTYPE_NAMES = ("float32", "float16", "bfloat16")


def default_device() -> torch.device:
    """What ``"auto"`` means: ``$INTERP_DEVICE`` when set (e.g. ``cpu`` to keep a GPU machine's
    runs on the CPU; the test suite sets it from ``pytest --device``), else CUDA when
    available, else CPU."""
    import os

    forced = os.environ.get("INTERP_DEVICE", "").strip()
    if forced and forced != "auto":
        return resolve_device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``None``/``"auto"`` -> :func:`default_device`; ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
    ``"mps"`` -> that device, checked to exist.

    Raises:
        InputError: (a ``ValueError``) an unknown device name, or a CUDA / MPS device this
            machine does not have.
    """
    if device is None or device == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or "
                         f"'cuda:N'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but torch sees no CUDA device "
                             f"(torch {torch.__version__}, CUDA build: "
                             f"{torch.version.cuda or 'no'}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} asked for, but only "
                             f"{torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but MPS is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``None`` -> float32; a ``torch.dtype`` or one of ``float32/fp32, float16/fp16,
    bfloat16/bf16``.

    Raises:
        InputError: (a ``ValueError``) any other name (the message lists the valid ones).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}")
    return DTYPES[dtype]
