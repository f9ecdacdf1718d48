"""Wall time of the CLI's light answers, against importing torch + transformer-lens.

Each case runs in a fresh interpreter (``python -m interp ...``), one untimed warm-up run
first, then the median of ``--repeats`` runs. The reference, timed the same way in the same
run, is ``python -c "import torch, transformer_lens"``: what every start cost before these
answers stopped importing it. Target (issue #17): each case under 1 s.

    python benchmarks/cli_start.py
    python benchmarks/cli_start.py --repeats 9
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

REFERENCE = ("import torch, transformer_lens",
             [sys.executable, "-c", "import torch, transformer_lens"], 0)
#: (label, command, expected exit status)
CASES = [
    ("interp --help", [sys.executable, "-m", "interp", "--help"], 0),
    ("interp models", [sys.executable, "-m", "interp", "models"], 0),
    ("interp probe nosuchprobe", [sys.executable, "-m", "interp", "probe", "nosuchprobe"], 2),
    ("interp probe induction --model", [sys.executable, "-m", "interp", "probe", "induction",
                                        "--model"], 2),
]
TARGET_S = 1.0


def run_once(cmd: list[str], expect: int) -> float:
    """Seconds of one run of ``cmd`` in a fresh process; it must exit with ``expect``."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect}:\n"
                         f"{proc.stderr}")
    return seconds


def median_time(cmd: list[str], expect: int, repeats: int) -> float:
    """Median seconds of ``repeats`` runs after one warm-up run (pyc files, disk cache)."""
    run_once(cmd, expect)
    return statistics.median(run_once(cmd, expect) for _ in range(repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    args = p.parse_args()
    label, cmd, expect = REFERENCE
    ref = median_time(cmd, expect, args.repeats)
    print(f"median of {args.repeats} fresh-process runs; target: each case < {TARGET_S:.0f} s")
    print(f"{'case':34s} {'seconds':>8s} {'x reference':>12s}")
    print(f"{label:34s} {ref:8.3f} {1.0:12.2f}  (reference)")
    for label, cmd, expect in CASES:
        t = median_time(cmd, expect, args.repeats)
        ok = "ok" if t < TARGET_S else "MISS"
        print(f"{label:34s} {t:8.3f} {t / ref:12.2f}  {ok}")


if __name__ == "__main__":
    main()
