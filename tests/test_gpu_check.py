"""The GPU check (``benchmarks/gpu_check.sh``) without CUDA: every stage runs to its skip line.

The script runs once here with this Python (``--no-wheels``: this environment has every
package) and CUDA hidden (``CUDA_VISIBLE_DEVICES=''``), the way a machine without a GPU sees
it: the preflight reports, the cuda tests are collected and skipped, the attention
implementations and the toy / tiny-family probes run once on the CPU. A stage that breaks --
an import error, a collection error, an exception in the smoke run -- loses its skip line and
makes the script exit 1 instead of 2. The driver's bookkeeping (skips, failures, exit status)
is checked separately with a stand-in interpreter.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check_common  # noqa: E402
import gpu_check_tests  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_check(out: Path, python: str, *args: str, timeout: float = 300):
    env = dict(os.environ, PYTHON=python, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(SCRIPT), "--out", str(out), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    proc = run_check(out, sys.executable, "--no-wheels")
    return proc, proc.stdout + proc.stderr, out


def test_every_stage_reaches_its_skip_line(dry_run):
    proc, text, _ = dry_run
    for num, name in gpu_check_common.STAGES.items():
        assert f"gpu_check stage {num} ({name}): no CUDA, skipped: " in text, (num, text[-3000:])
    for bad in ("Traceback", "!!! stage", "FAILED", "MISSING"):
        assert bad not in text, (bad, text[-3000:])
    for line in text.splitlines():   # only optional packages (triton, fla) may fail to import
        if "ImportError" in line or "ModuleNotFoundError" in line:
            assert "not available: " in line or "OFF: " in line, line
    assert proc.returncode == 2, text[-3000:]
    assert "every stage stopped at its skip line (exit 2)" in text


def test_stage_output_and_logs(dry_run):
    _, text, out = dry_run
    assert (out / "gpu_check.log").read_text() == text
    for num, name in gpu_check_common.STAGES.items():
        log = next(out.glob(f"{num}_*.log"))
        assert f"gpu_check stage {num} ({name}): no CUDA" in log.read_text()
    m = re.search(r"stage 1: pytest exit (\d+); (\d+) cuda tests collected; 0 passed, 0 failed, "
                  r"0 errors, (\d+) skipped; 0 collection errors", text)
    assert m and m.group(1) == "0" and int(m.group(2)) >= 50 and m.group(2) == m.group(3)
    # the smoke runs did their work before the skip lines
    assert re.search(r"cpu smoke block_sparse +max \|fast - naive\| \d", text)
    assert re.search(r"^llama +12 +2x17 +[\d,]+", text, re.M)
    assert "CUDA: torch " in text                       # the preflight said what torch sees
    assert "fla chunk_linear_attn" in text and "flex_attention" in text


def test_cuda_test_files_are_every_file_with_a_cuda_test():
    uses = re.compile(r"^(pytestmark = pytest\.mark\.cuda|\s*@pytest\.mark\.cuda)\b", re.M)
    marked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
              if uses.search(p.read_text())}
    assert marked == set(gpu_check_tests.CUDA_TEST_FILES)


@pytest.mark.parametrize("status,want_rc,want", [
    (3, 2, "every stage stopped at its skip line"),
    (1, 1, "gpu_check: FAILED: 0 preflight (exit 1);1 cuda tests (exit 1);2 attention (exit 1)"),
    (0, 0, "gpu_check: all stages passed"),
])
def test_driver_counts_skips_and_failures(tmp_path, status, want_rc, want):
    """A stand-in interpreter that prints its arguments and exits with ``status``."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/usr/bin/env bash\necho \"fake python $*\"\nexit {status}\n")
    fake.chmod(0o755)
    proc = run_check(tmp_path / "out", str(fake), "--no-wheels", timeout=60)
    text = proc.stdout + proc.stderr
    assert proc.returncode == want_rc, text
    assert want in text
    for script in ("gpu_check_preflight.py", "gpu_check_tests.py", "gpu_check_attention.py",
                   "gpu_check_throughput.py"):
        assert f"fake python benchmarks/{script}" in text      # every stage ran


def test_unknown_argument_is_refused(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 64 and "unknown argument '--bogus'" in proc.stderr
