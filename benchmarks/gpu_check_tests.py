"""Stage 1 of ``benchmarks/gpu_check.sh``: the cuda-marked tests, each comparing CUDA with a
CPU reference computed in the same test.

Runs ``pytest -m cuda`` in this process on :data:`CUDA_TEST_FILES` only (collecting all of
``tests/`` needs packages a GPU machine lacks: playwright, nbformat, ...), with
``--device cuda`` when torch sees a device. Third-party pytest plugins are not auto-loaded
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``): the machine's own plugins were built for its own pytest,
not the carried one. Tests that need the SmolLM2 weights skip, naming the missing cache, where
the interp cache does not hold them (it cannot be carried); the tiny-family tests check the
same code on CUDA.

Without CUDA the files are still collected (every import they need is exercised), every test
is skipped by ``tests/conftest.py``, and the stage prints its skip line with the count.

    python benchmarks/gpu_check_tests.py [--out DIR] [pytest args...]
"""
from __future__ import annotations

import argparse
import os

import gpu_check_common as common

#: the test files holding cuda-marked tests (tests/test_gpu_check.py checks this list against
#: every file under tests/ that marks one)
CUDA_TEST_FILES = ("tests/test_cuda.py", "tests/test_devices.py", "tests/attention/test_cuda.py")


class Outcomes:
    """A pytest plugin counting the outcome of each test's call phase (and setup errors)."""

    def __init__(self) -> None:
        self.counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        self.collected = 0
        self.collect_errors = 0

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors += 1

    def pytest_collection_finish(self, session):
        self.collected = len(session.items)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if report.skipped:
                self.counts["skipped"] += 1
            elif report.failed:
                self.counts["error" if report.when == "setup" else "failed"] += 1
            else:
                self.counts["passed"] += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for junit.xml")
    args, extra = ap.parse_known_args(argv)
    os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    os.chdir(common.ROOT)
    import pytest

    cuda, about = common.cuda_status()
    print(f"stage 1: {about}; files: {' '.join(CUDA_TEST_FILES)}", flush=True)
    plugin = Outcomes()
    pytest_args = [*CUDA_TEST_FILES, "-m", "cuda", "--device", "cuda" if cuda else "cpu",
                   "-p", "no:cacheprovider", "-v", "-rfEs", "--durations=15", *extra]
    out = common.out_dir(args.out)
    if out is not None:
        pytest_args.append(f"--junitxml={out / 'cuda_tests.xml'}")
    rc = int(pytest.main(pytest_args, plugins=[plugin]))
    c = plugin.counts
    print(f"stage 1: pytest exit {rc}; {plugin.collected} cuda tests collected; "
          f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, "
          f"{c['skipped']} skipped; {plugin.collect_errors} collection errors", flush=True)
    if plugin.collect_errors or c["failed"] or c["error"] or rc not in (0, 5):
        return 1
    if not cuda:
        if plugin.collected == 0 or c["passed"]:
            print("stage 1: expected every collected cuda test to be skipped", flush=True)
            return 1
        return common.skip(1, f"{plugin.collected} cuda tests collected, all skipped ({about})")
    if not c["passed"]:
        print("stage 1: CUDA is there but no cuda test passed", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
