"""One builder per cached copy: an exclusive lock file held while a copy is fetched,
converted or cast, so that two processes asking for the same model at once (two notebooks,
two test workers) build it once; the second waits, then finds the finished copy.

The lock is ``fcntl.flock`` on ``<cache>/models/.<leaf>.lock``: released by the kernel when
the holder exits or dies, so a killed build never leaves the cache locked. Where ``fcntl``
does not exist (Windows) there is no lock, as before: the builds still never leave a
half-written copy (temporary folder, one rename), they may only run twice.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:                                  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["build_lock"]


@contextmanager
def build_lock(target: Path, what: str) -> Iterator[None]:
    """Hold the exclusive build lock of the cached copy ``target`` (a folder path).

    Args:
        target: the copy's folder; the lock file is ``.<target.name>.lock`` beside it.
        what: the copy's name, for the waiting message.

    The caller looks again for the copy once inside: the process it waited for may have
    built it.
    """
    if fcntl is None:                                # pragma: no cover - not POSIX
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"interp: another process is building {what}; waiting for it ({path})",
                  file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
