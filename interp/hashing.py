"""The one definition of "the hash of some content" in interp.

- :func:`canonical_json` -- equal inputs give equal text, whatever the dict order
  (dataclasses as dicts, tuples as lists, paths and anything else by ``str``).
- :func:`content_hash` -- sha256 (hex) of that text: resume keys of sweep points and runs
  (:func:`interp.results.point_key`), toy checkpoint recipes (``recipe.json``), the setup hash
  of a retrieval sweep point (its first 12 characters).
- :func:`file_hash` -- sha256 (hex) of a small file's bytes (toy weights in a resume key).

Imports only the standard library.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """Canonical JSON of ``obj`` (sorted keys, no spaces; dataclasses as dicts, anything else
    by ``str``): equal inputs give equal text, whatever the dict order."""

    def plain(o):
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {f.name: plain(getattr(o, f.name)) for f in dataclasses.fields(o)}
        if isinstance(o, dict):
            return {str(k): plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        return o

    return json.dumps(plain(obj), sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj: Any) -> str:
    """sha256 (hex, 64 characters) of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def file_hash(path: str | Path) -> str | None:
    """sha256 (hex) of a (small) file's bytes, None when it is missing."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
