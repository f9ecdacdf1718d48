"""Run directories: atomic writes, run metadata, and resumable sweeps.

A run writes ``results/<run>/`` (or a directory the user names) holding:

- tables as CSV (``write_table``), written to a temporary file then renamed, so an
  interrupted run never leaves a half-written table;
- ``run.json``: the config, the seed, package versions and the git commit (``write_meta``);
- ``points.jsonl``: one JSON line per finished sweep point (``Sweep``). A rerun of the same
  sweep skips every point already there, so long sweeps resume after an interruption.

Sharded runs (``interp run --nproc N``, see :mod:`interp.distributed.shard`): only rank 0
writes. The write helpers here (and everything built on them: reports, figures, views) return
the path without writing on other ranks. :class:`Sweep` splits its pending points over the
ranks and gathers the finished ones back to rank 0 in :meth:`Sweep.table`.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

_PACKAGES = ("interp", "torch", "transformer-lens", "transformers", "numpy", "pandas", "plotly",
             "circuitsvis")


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of a sharded run; ``(0, 1)`` otherwise (torch never imported)."""
    if "torch.distributed" not in sys.modules:
        return 0, 1
    from interp.distributed import shard

    return shard.rank(), shard.world_size()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    In a sharded run only rank 0 writes; other ranks return ``path`` without writing."""
    path = Path(path)
    if _world()[0] != 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp makes 0600; give a normal file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame atomically as CSV (``.csv``) or JSON lines (``.jsonl``)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        text = df.to_json(orient="records", lines=True)
    else:
        text = df.to_csv(index=False)
    return atomic_write_text(path, text)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on (missing ones omitted)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (default: this package), or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def write_meta(out_dir: str | Path, config: Any, seed: int | None = None,
               extra: dict | None = None) -> Path:
    """Write ``run.json`` with the config, seed, package versions and git commit."""
    meta = {"config": config, "seed": seed, "versions": package_versions(),
            "git_commit": git_commit()}
    if extra:
        meta.update(extra)
    return atomic_write_text(Path(out_dir) / "run.json", json.dumps(meta, indent=2, default=str))


def point_key(point: dict[str, Any]) -> str:
    """Canonical string key of a sweep point (sorted JSON)."""
    return json.dumps(point, sort_keys=True, default=str)


class Sweep:
    """Resumable sweep over points; finished points are appended to ``<name>.jsonl``.

    Example::

        sweep = Sweep(out_dir)
        for point in sweep.pending(points):
            row = run_point(**point)
            sweep.record(point, row)
        df = sweep.table()   # one row per finished point: point fields + result fields

    Each line is flushed and fsynced as it is written, so an interrupted sweep keeps all
    finished points and a torn last line (killed mid-write) is ignored on reload.

    Sharding (a process group of N > 1 ranks, :mod:`interp.distributed.shard`):

    - :meth:`pending` is a collective: rank 0 reads the finished points and broadcasts them,
      every rank gets the same list of unfinished points and keeps every N-th one (pending
      point ``i`` runs on rank ``i % N``).
    - :meth:`record` appends to this rank's own file ``<name>.rank<r>.jsonl`` (fsynced, so an
      interrupted sharded sweep resumes too, with any number of ranks).
    - :meth:`table` after :meth:`pending` is a collective: every rank sends the points it
      recorded; rank 0 rewrites ``<name>.jsonl`` atomically with all of them and removes the
      rank files; every rank returns the same table.

    Same results for any N: :meth:`pending` seeds ``random``/numpy/torch before yielding each
    point (from ``seed``, the sweep's name and the point's key), and :meth:`table` reseeds
    after a sharded phase, so a point's result and the RNG state after the sweep do not depend
    on which rank ran it. (Code that takes all pending points first, ``list(pending(...))``,
    must seed each point itself.) Table rows follow the order of the points given to
    :meth:`pending`, then any other finished points in file order.
    """

    def __init__(self, out_dir: str | Path, name: str = "points", seed: int = 0):
        self.name = name
        self.seed = seed
        self.path = Path(out_dir) / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._order: dict[str, int] = {}        # key -> position in the last pending() list
        self._phase = False                     # pending() ran; table() reseeds
        self._sharded = False                   # pending() ran in a group; table() gathers
        self._old: list[dict[str, Any]] = []    # records finished before pending() (sharded)
        self._new: list[dict[str, Any]] = []    # records this rank made since pending()

    def _rank_path(self, rank: int) -> Path:
        return self.path.with_name(f"{self.name}.rank{rank}.jsonl")

    def _rank_paths(self) -> list[Path]:
        found = self.path.parent.glob(f"{self.name}.rank*.jsonl")
        return sorted((p for p in found if p.stem[len(self.name) + 5:].isdigit()),
                      key=lambda p: int(p.stem[len(self.name) + 5:]))

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from an interrupted write
        return records

    def _records(self) -> list[dict[str, Any]]:
        """The main file's records, then those of rank files left by an interrupted sharded
        run whose keys are not in it."""
        records = self._read(self.path)
        seen = {r["key"] for r in records}
        for path in self._rank_paths():
            for r in self._read(path):
                if r["key"] not in seen:
                    seen.add(r["key"])
                    records.append(r)
        return records

    def done_keys(self) -> set[str]:
        """Keys of the points already finished."""
        return {r["key"] for r in self._records()}

    def pending(self, points: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The points not finished yet (in order) -- in a group of N ranks, this rank's share
        of them. Seeds the global RNGs before yielding each point (see the class docs)."""
        from interp.distributed import shard

        points = list(points)
        rank, world = _world()
        if world > 1:
            self._old = shard.broadcast(self._records() if rank == 0 else None)
            self._new, self._sharded = [], True
            done = {r["key"] for r in self._old}
        else:
            done = self.done_keys()
        self._order = {point_key(p): i for i, p in enumerate(points)}
        self._phase = True
        todo = [p for p in points if point_key(p) not in done]
        mine = shard.shard(todo, rank, world)

        def seeded():
            for p in mine:
                shard.seed_all(self.seed, self.name, point_key(p))
                yield p

        return seeded()

    def record(self, point: dict[str, Any], result: dict[str, Any]) -> None:
        """Append one finished point with its result fields (in a group: to this rank's file;
        outside :meth:`pending`'s sharding only rank 0 writes)."""
        rank, world = _world()
        rec = {"key": point_key(point), "point": point, "result": result}
        if self._sharded:
            self._new.append(json.loads(json.dumps(rec, default=str)))
            self._append(self._rank_path(rank), rec)
        elif rank == 0:
            self._append(self.path, rec)

    @staticmethod
    def _append(path: Path, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, default=str)
        torn = False
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
        with open(path, "a") as fh:
            fh.write(("\n" if torn else "") + line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _ordered(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        last = len(self._order)
        pos = {id(r): (self._order.get(r["key"], last), i) for i, r in enumerate(records)}
        return sorted(records, key=lambda r: pos[id(r)])

    def _write_all(self, records: list[dict[str, Any]]) -> None:
        """Rewrite the main file with ``records`` (atomically), then drop the rank files."""
        atomic_write_text(self.path, "".join(json.dumps(r, default=str) + "\n"
                                             for r in records))
        for path in self._rank_paths():
            path.unlink(missing_ok=True)

    def table(self) -> pd.DataFrame:
        """All finished points as a DataFrame (point fields then result fields).

        After a sharded :meth:`pending` this gathers every rank's points (a collective) and
        rank 0 writes them all to ``<name>.jsonl``; every rank gets the same table."""
        from interp.distributed import shard

        rank, _ = _world()
        if self._sharded:
            seen = {r["key"] for r in self._old}
            records = list(self._old)
            for part in shard.gather(self._new):
                for r in part:
                    if r["key"] not in seen:
                        seen.add(r["key"])
                        records.append(r)
            records = self._ordered(records)
            if rank == 0:
                self._write_all(records)
            shard.barrier()              # the file is complete before any rank goes on
            self._sharded, self._old, self._new = False, [], []
        else:
            records = self._ordered(self._records())
            if rank == 0 and self._rank_paths():   # left by an interrupted sharded run
                self._write_all(records)
        if self._phase:
            self._phase = False
            shard.seed_all(self.seed, self.name, "table")
        rows = [{**r["point"], **r["result"]} for r in records]
        return pd.DataFrame(rows)
