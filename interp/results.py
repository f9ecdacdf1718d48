"""Run directories: atomic writes, run metadata, and resumable sweeps.

A run writes ``results/<run>/`` (or a directory the user names) holding:

- tables as CSV (``write_table``), written to a temporary file then renamed, so an
  interrupted run never leaves a half-written table;
- ``run.json``: the config, the seed, package versions and the git commit (``write_meta``);
- ``points.jsonl``: one JSON line per finished sweep point (``Sweep``). A rerun of the same
  sweep skips every point already there, so long sweeps resume after an interruption.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

_PACKAGES = ("interp", "torch", "transformer-lens", "transformers", "numpy", "pandas", "plotly",
             "circuitsvis")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
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
    """Resumable sweep over points; finished points are appended to ``points.jsonl``.

    Example::

        sweep = Sweep(out_dir)
        for point in sweep.pending(points):
            row = run_point(**point)
            sweep.record(point, row)
        df = sweep.table()   # one row per finished point: point fields + result fields

    Each line is flushed and fsynced as it is written, so an interrupted sweep keeps all
    finished points and a torn last line (killed mid-write) is ignored on reload.
    """

    def __init__(self, out_dir: str | Path, name: str = "points"):
        self.path = Path(out_dir) / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from an interrupted write
        return records

    def done_keys(self) -> set[str]:
        """Keys of the points already finished."""
        return {r["key"] for r in self._records()}

    def pending(self, points: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yield the points not finished yet (in order)."""
        done = self.done_keys()
        for p in points:
            if point_key(p) not in done:
                yield p

    def record(self, point: dict[str, Any], result: dict[str, Any]) -> None:
        """Append one finished point with its result fields."""
        line = json.dumps({"key": point_key(point), "point": point, "result": result},
                          default=str)
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
        with open(self.path, "a") as fh:
            fh.write(("\n" if torn else "") + line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def table(self) -> pd.DataFrame:
        """All finished points as a DataFrame (point fields then result fields)."""
        rows = [{**r["point"], **r["result"]} for r in self._records()]
        return pd.DataFrame(rows)
