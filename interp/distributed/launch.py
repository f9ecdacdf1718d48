"""Start a function on several local processes inside an initialised process group.

Architecture
------------
:func:`run_distributed` is the one way tests, benchmarks and ``interp run --nproc N`` start
multi-process work on one machine:

1. (:func:`_start`) The parent asks the OS for a free TCP port (bind to port 0) and starts
   ``nprocs`` processes with the ``spawn`` start method (safe with threads and CUDA), passing
   ``MASTER_ADDR=127.0.0.1`` and ``MASTER_PORT`` in each child's environment.
2. (:func:`_worker`) Each child initialises a process group (``backend``: default gloo, i.e.
   CPU tensors; pass ``"nccl"`` for CUDA tensors), calls ``fn(rank, world_size, *args)``,
   pickles the return value *itself* (plain bytes, so tensors do not depend on shared memory
   of a process that exits) and puts ``(rank, ok, payload)`` on a result queue -- the
   formatted traceback when ``fn`` raised. The process group is destroyed in a ``finally``
   block either way.
3. (:func:`_collect`, :func:`_stop`) The parent drains the queue while watching the deadline
   and the children's exit codes. The first failure (an exception in a rank, a rank that died
   without reporting, or the timeout) terminates the remaining children -- which would
   otherwise hang in a collective waiting for the failed rank -- and raises
   :class:`DistributedError` naming the rank, with its traceback.

``fn`` and ``args`` must be picklable (a module-level function); results must be picklable.
"""
from __future__ import annotations

import os
import pickle
import queue as queue_mod
import socket
import time
import traceback
from datetime import timedelta
from typing import Any, Callable

import torch.multiprocessing as mp

from interp.distributed.shard import RUN_TIMEOUT
from interp.errors import InputError

__all__ = ["run_distributed", "DistributedError", "free_port"]


_GRACE_S = 2.0


class DistributedError(RuntimeError):
    """A rank failed, died, or the run timed out; the message names the rank(s).

    Not an :class:`~interp.errors.InterpError`: it reports another process's failure (with its
    traceback), which is as likely a bug as bad input, so the CLI does not reduce it to one
    ``error:`` line; ``interp run`` prints it whole and exits with status 1 (finished sweep
    points are kept for a rerun).

    ``failures`` lists ``(rank, message)`` with the likely root cause first (rank -1: the
    timeout); ``summary`` is one line: the first failing rank and its exception."""

    def __init__(self, message: str, failures: list[tuple[int, str]] | None = None):
        super().__init__(message)
        self.failures = failures or []

    @property
    def summary(self) -> str:
        if not self.failures:
            return str(self).splitlines()[0]
        rank, text = self.failures[0]
        lines = [line for line in text.splitlines() if line.strip()]
        head = lines[0].rstrip(":")
        return head if len(lines) < 2 else f"{head}: {lines[-1].strip()}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, backend, timeout, num_threads, fn, args, results):
    import torch
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if backend == "nccl":  # one GPU per rank (as torchrun's LOCAL_RANK)
        torch.cuda.set_device(rank % torch.cuda.device_count())
    try:
        dist.init_process_group(
            backend, rank=rank, world_size=world_size,
            timeout=timedelta(seconds=timeout) if timeout is not None else RUN_TIMEOUT,
        )
        payload = pickle.dumps(fn(rank, world_size, *args))
        results.put((rank, True, payload))
    except BaseException:  # report everything, including KeyboardInterrupt / SystemExit
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(
    fn: Callable[..., Any],
    nprocs: int,
    *args: Any,
    backend: str | None = None,
    timeout: float | None = 300.0,
    num_threads: int | None = None,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``nprocs`` local processes; per-rank results.

    Args:
        fn: picklable (module-level) function; its return value must be picklable.
        nprocs: number of processes (the world size).
        backend: torch.distributed backend, default ``"gloo"`` (CPU tensors). Use
            ``interp.distributed.comm.default_backend(device)`` to pick one for a device.
        timeout: seconds for the whole run (also the process group's collective timeout);
            None: no deadline (collective timeout :data:`~interp.distributed.shard.RUN_TIMEOUT`),
            for experiment runs whose length is unknown.
        num_threads: ``torch.set_num_threads`` in each child (None: torch's default).

    Returns:
        ``[result of rank 0, ..., result of rank nprocs - 1]``.

    Raises:
        DistributedError: a rank raised (message has its traceback), died without reporting,
            or the run exceeded ``timeout``. The other processes are terminated first.
    """
    if nprocs < 1:
        raise InputError(f"nprocs must be >= 1, got {nprocs}")
    procs, results = _start(fn, nprocs, args, backend or "gloo", timeout, num_threads)
    out: dict[int, Any] = {}
    try:
        failures = _collect(procs, results, out, timeout)
        if failures:
            # Ranks that died or raised first are usually the cause; the others often only
            # report a broken connection to them.
            ordered = sorted(failures.items(), key=lambda item: ("Connection" in item[1], item[0]))
            raise DistributedError("\n".join(msg for _, msg in ordered), ordered)
    finally:
        _stop(procs, results, failed=len(out) < nprocs)
    return [out[r] for r in range(nprocs)]


def _start(fn, nprocs: int, args: tuple, backend: str, timeout: float | None,
           num_threads: int | None):
    """Step 1: ``nprocs`` spawned children running :func:`_worker` on a fresh free port;
    returns ``(processes, result queue)``."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, nprocs, port, backend, timeout, num_threads, fn, args, results),
            daemon=True,
        )
        for rank in range(nprocs)
    ]
    for p in procs:
        p.start()
    return procs, results


def _collect(procs: list, results, out: dict[int, Any], timeout: float | None) -> dict[int, str]:
    """Step 3: drain the result queue into ``out`` (rank -> result) until every rank reported,
    watching the deadline and the children's exit codes; after a first failure, collect the
    others for :data:`_GRACE_S` seconds (root cause first). Returns rank -> what went wrong
    (rank -1: the timeout)."""
    nprocs = len(procs)
    failures: dict[int, str] = {}  # rank -> what went wrong
    deadline = time.monotonic() + timeout if timeout is not None else float("inf")
    grace_end = None  # after a first failure, collect the others briefly (root cause first)
    while len(out) + len(failures) < nprocs:
        now = time.monotonic()
        if grace_end is not None and now > grace_end:
            break
        try:
            rank, ok, payload = results.get(timeout=0.05)
        except queue_mod.Empty:
            silent = [
                r for r, p in enumerate(procs)
                if r not in out and r not in failures and p.exitcode is not None
            ]
            if silent:
                try:  # a rank may have reported just before exiting: drain it first
                    rank, ok, payload = results.get(timeout=1.0)
                except queue_mod.Empty:
                    for r in silent:
                        failures[r] = (
                            f"rank {r} (exit code {procs[r].exitcode}) exited without "
                            "reporting a result"
                        )
                    grace_end = grace_end or time.monotonic() + _GRACE_S
                    continue
            elif now > deadline:
                missing = [r for r in range(nprocs) if r not in out and r not in failures]
                failures[-1] = f"timed out after {timeout:.0f}s waiting for rank(s) {missing}"
                break
            else:
                continue
        if ok:
            out[rank] = pickle.loads(payload)
        else:
            failures[rank] = f"rank {rank} of {nprocs} failed:\n{payload}"
            grace_end = grace_end or time.monotonic() + _GRACE_S
    return failures


def _stop(procs: list, results, failed: bool) -> None:
    """Terminate the children that are still running after a failed run (they would hang in a
    collective waiting for the failed rank), then join every child and close the queue."""
    for p in procs:
        if p.is_alive() and failed:
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()
    results.close()
