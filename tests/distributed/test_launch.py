"""run_distributed: results in rank order, failures raise naming the rank, never a hang."""
from __future__ import annotations

import time

import pytest

from interp.distributed import DistributedError, run_distributed
from tests.distributed import workers

pytestmark = pytest.mark.distributed


def test_results_in_rank_order():
    out = run_distributed(workers.echo_rank, 3, "hi", timeout=120)
    assert out == [{"rank": r, "world_size": 3, "payload": "hi"} for r in range(3)]


def test_failing_rank_raises_with_traceback():
    start = time.monotonic()
    with pytest.raises(DistributedError, match="rank 1 of 2 failed") as info:
        run_distributed(workers.fail_on_rank, 2, 1, timeout=120)
    assert "deliberate failure on rank 1" in str(info.value)
    assert "Traceback" in str(info.value)
    assert time.monotonic() - start < 60  # did not wait for the barrier timeout


def test_rank_that_dies_is_reported():
    with pytest.raises(DistributedError, match=r"rank 0 \(exit code 3\)"):
        run_distributed(workers.die_on_rank, 2, 0, timeout=120)


def test_timeout_raises():
    start = time.monotonic()
    with pytest.raises(DistributedError, match="timed out"):
        run_distributed(workers.sleep_forever, 2, timeout=8)
    assert time.monotonic() - start < 30


def test_bad_nprocs():
    with pytest.raises(ValueError):
        run_distributed(workers.echo_rank, 0)
