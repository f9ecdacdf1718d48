"""Run directories: atomic writes, run metadata, and resumable sweeps.

A run writes ``results/<run>/`` (or a directory the user names) holding:

- tables as CSV (``write_table``), written to a temporary file then renamed, so an
  interrupted run never leaves a half-written table;
- ``run.json``: the config, the seed, package versions and the git commit (``write_meta``);
- ``points.jsonl``: one JSON line per finished sweep point (``Sweep``). A rerun of the same
  sweep skips every point already there, so long sweeps resume after an interruption.

Resume keys: every saved point carries ``hash`` = :func:`point_key` of everything that
determines its result -- the sweep's ``key`` (for an experiment run: the kind, its config
without ``device``, ``quick``, the seed, the interp version, and whatever the kind adds: the
model's name and weights fingerprint, the effective batch...) and the point's own parameters --
and ``parts`` (a short hash per top-level field of the key). On resume a point is done only
when a record with the same parameters AND the same hash exists; a record whose hash differs
is stale: the point is computed again (:attr:`Sweep.stale` names the fields that changed) and
the stale record never reaches :meth:`Sweep.table`.

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

from interp.hashing import canonical_json, content_hash

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


def point_key(**what: Any) -> str:
    """:func:`~interp.hashing.content_hash` (sha256 hex of the canonical JSON) of ``what``:
    the resume key of a result determined by exactly these inputs (config, quick, batch,
    prompts, model id + weights hash, package version, the point's parameters, ...)."""
    return content_hash(what)


def key_parts(what: dict[str, Any]) -> dict[str, str]:
    """A short hash per top-level field of ``what`` (to name the fields that differ)."""
    return {k: point_key(v=v)[:12] for k, v in what.items()}


def interp_version() -> str:
    """The installed interp version (part of every resume key)."""
    try:
        return metadata.version("interp")
    except metadata.PackageNotFoundError:
        return "unknown"


def _point_id(point: dict[str, Any]) -> str:
    """Identity of a sweep point within one sweep: its parameters as sorted JSON (also what
    seeds it, so a point's seed does not change when its resume key does)."""
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

    Resume keys (see the module docs): ``key`` is a dict of everything besides the point's own
    parameters that determines its result; each record stores ``hash = point_key(key=key,
    point=point)``. A finished record with another hash is stale: :meth:`pending` yields the
    point again, :meth:`table` leaves the stale record out, and :attr:`stale` maps the
    top-level fields of ``key`` that differ to the number of points they made stale (e.g.
    ``{"model": 12}``). Records without a hash (written before resume keys) count as done
    only for a sweep made without ``key``. ``only_current``: :meth:`table` holds only the
    points of the last :meth:`pending` call (an experiment's sweeps), not every valid record
    in the file. ``on_stale(message)`` is called by :meth:`pending` when it found stale points.

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

    def __init__(self, out_dir: str | Path, name: str = "points", seed: int = 0,
                 key: dict[str, Any] | None = None, only_current: bool = False,
                 on_stale=None):
        self.name = name
        self.seed = seed
        self.key = None if key is None else json.loads(canonical_json(key))
        self.only_current = only_current
        self.on_stale = on_stale                # called with stale_message() by pending()
        self._parts = key_parts(self.key or {})
        self.stale: dict[str, int] = {}
        self._stale_fields: dict[str, list[str]] = {}
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

    def point_hash(self, point: dict[str, Any]) -> str:
        """The resume key of ``point`` in this sweep (:func:`point_key` of the sweep's key and
        the point's parameters)."""
        return point_key(key=self.key or {}, point=point)

    def _valid(self, rec: dict[str, Any]) -> bool:
        if "hash" not in rec:
            return self.key is None          # written before resume keys
        return rec["hash"] == self.point_hash(rec["point"])

    @staticmethod
    def _rid(rec: dict[str, Any]) -> tuple[str, str | None]:
        return rec["key"], rec.get("hash")

    def _records(self) -> list[dict[str, Any]]:
        """The main file's records, then those of rank files left by an interrupted sharded
        run that are not in it."""
        records = self._read(self.path)
        seen = {self._rid(r) for r in records}
        for path in self._rank_paths():
            for r in self._read(path):
                if self._rid(r) not in seen:
                    seen.add(self._rid(r))
                    records.append(r)
        return records

    def _current(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The valid records (one per point: the last), and count the stale ones' fields."""
        out: dict[str, dict[str, Any]] = {}
        stale: dict[str, dict[str, Any]] = {}
        for r in records:
            if self._valid(r):
                out.pop(r["key"], None)
                out[r["key"]] = r
            else:
                stale[r["key"]] = r
        self._stale_fields = {}
        for k, r in stale.items():
            if k in out:
                continue
            old = r.get("parts") or {}
            self._stale_fields[k] = sorted({f for f in set(old) | set(self._parts)
                                            if old.get(f) != self._parts.get(f)}) or ["?"]
        self.stale = self._count_stale()
        return list(out.values())

    def _count_stale(self, among=None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for k, fields in self._stale_fields.items():
            if among is None or k in among:
                for f in fields:
                    counts[f] = counts.get(f, 0) + 1
        return counts

    def stale_message(self) -> str | None:
        """``"<name>: N stale point(s) recomputed (changed: model, versions)"`` after
        :meth:`pending` found stale points, else None."""
        if not self.stale:
            return None
        n = sum(1 for k in self._stale_fields if k in self._order)
        return (f"{self.name}: {n} stale point(s) recomputed (changed: "
                f"{', '.join(sorted(self.stale))})")

    def done_keys(self) -> set[str]:
        """Identities of the points already finished with this sweep's resume key."""
        return {r["key"] for r in self._current(self._records())}

    def pending(self, points: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The points not finished yet (in order) -- in a group of N ranks, this rank's share
        of them. Seeds the global RNGs before yielding each point (see the class docs)."""
        from interp.distributed import shard

        points = list(points)
        rank, world = _world()
        if world > 1:
            self._old = shard.broadcast(self._records() if rank == 0 else None)
            self._new, self._sharded = [], True
            done = {r["key"] for r in self._current(self._old)}
        else:
            done = self.done_keys()
        self._order = {_point_id(p): i for i, p in enumerate(points)}
        self._phase = True
        todo = [p for p in points if _point_id(p) not in done]
        self.stale = self._count_stale(self._order)
        if self.stale and self.on_stale is not None and rank == 0:
            self.on_stale(self.stale_message())
        mine = shard.shard(todo, rank, world)

        def seeded():
            for p in mine:
                shard.seed_all(self.seed, self.name, _point_id(p))
                yield p

        return seeded()

    def record(self, point: dict[str, Any], result: dict[str, Any]) -> None:
        """Append one finished point with its result fields (in a group: to this rank's file;
        outside :meth:`pending`'s sharding only rank 0 writes)."""
        rank, world = _world()
        rec = {"key": _point_id(point), "hash": self.point_hash(point), "parts": self._parts,
               "point": point, "result": result}
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
            seen = {self._rid(r) for r in self._old}
            records = list(self._old)
            for part in shard.gather(self._new):
                for r in part:
                    if self._rid(r) not in seen:
                        seen.add(self._rid(r))
                        records.append(r)
            records = self._ordered(records)       # the file in point order, as one process
            if rank == 0:
                self._write_all(records)
            shard.barrier()              # the file is complete before any rank goes on
            self._sharded, self._old, self._new = False, [], []
        else:
            records = self._ordered(self._records())
            if rank == 0 and self._rank_paths():   # left by an interrupted sharded run
                self._write_all(records)
        records = self._current(records)
        if self.only_current and self._order:
            records = [r for r in records if r["key"] in self._order]
        records = self._ordered(records)
        if self._phase:
            self._phase = False
            shard.seed_all(self.seed, self.name, "table")
        rows = [{**r["point"], **r["result"]} for r in records]
        return pd.DataFrame(rows)
