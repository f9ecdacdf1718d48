"""Runs shared by several test modules (made once per test session)."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def quickstart_quick_run() -> Path:
    """``interp run experiments/quickstart.toml --quick`` into a temporary directory; the
    run directory (removed at exit)."""
    from interp.experiments import run_experiment

    tmp = Path(tempfile.mkdtemp(prefix="interp-quickstart-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return run_experiment(ROOT / "experiments" / "quickstart.toml", out_dir=tmp / "quickstart",
                          quick=True, progress=False)
